"""Errors the enclave reports to its peers as ``{"t": "error"}`` frames.

They cross into the untrusted gateway and its logs: messages name what failed (a request id, a
KMS error code, a count), never the content of a request, an answer, a key or a credential.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError


class EnclaveError(NitroLLMError, code="enclave_error"):
    pass


# Anything unexpected. Its cause stays inside the enclave (only its type name is logged there).
class InternalError(EnclaveError, code="internal_error", retryable=True):
    """retry; if it persists, the enclave's log has the error type"""


class StaleRequestError(EnclaveError, code="stale_request", retryable=True):
    """check the client's clock, then resend the request (a fresh timestamp and request id)"""


class ReplayedRequestError(EnclaveError, code="replayed_request"):
    """every request needs a new request id; resend as a new request"""


class ModelNotServedError(EnclaveError, code="model_not_served"):
    """ask for the model this enclave serves (see 'nitro-llm' client config 'model'), or 'default'"""


class NoCredentialsError(EnclaveError, code="no_credentials", retryable=True):
    """the gateway has not handed the enclave its role credentials yet; retry in a moment"""


# KMS said the role's session token has expired. The gateway reacts by fetching fresh credentials,
# handing them over and resending the request once (docs/CONTRACTS.md, "frames"); a client sees
# this code only if that did not help.
class CredentialsExpiredError(EnclaveError, code="credentials_expired", retryable=True):
    """the enclave's role credentials expired: the gateway fetches fresh ones (IMDS); retry in a moment,
    and if it persists check the gateway's log for IMDS errors"""


# KMS refused to release the data key: the policy does not match this enclave, or the blob is bad.
class KeyReleaseDeniedError(EnclaveError, code="kms_denied"):
    """check the key policy's PCR conditions match this enclave ('nitro-llm enclave pcrs')"""


# KMS did not accept who signed the call (InvalidSignature, UnrecognizedClient, an expired token...):
# a wrong or altered secret, an unknown key id, a stale token, or a clock far off. KMS never got as far
# as the key policy, so kms_denied's hint (the PCR conditions) would send people to the wrong place.
class KmsSignatureRejectedError(EnclaveError, code="kms_signature_rejected"):
    """KMS rejected the signature of the enclave's call: check the role credentials the gateway hands
    the enclave (IMDS, or --credentials-file) are one current set (access key id, secret access key,
    session token), and that the enclave's clock is within 5 minutes"""


class KmsUnavailableError(EnclaveError, code="kms_unavailable", retryable=True):
    """KMS could not be reached through the relay; check the gateway's KMS relay and retry"""


class BusyError(EnclaveError, code="enclave_busy", retryable=True):
    """the enclave is answering other requests; retry after a short wait"""


class ReplayCacheFullError(BusyError, code="replay_cache_full"):
    """too many requests inside the freshness window; retry after a short wait"""


# The image's entrypoint could not prepare the enclave (loopback, /etc/hosts, the NSM, dropping root, its
# measured config); it stops rather than serve half set up. Never sent to a peer.
class EnclaveInitError(EnclaveError, code="enclave_init_failed"):
    pass
