"""Getting a data key out of KMS the only way the key policy allows: by attestation.

The enclave asks KMS to Decrypt the client's encrypted data key with a ``Recipient``: an NSM
attestation document that carries the public half of an RSA-2048 key made at start-up. KMS checks
the document's PCRs against the key policy and answers with the data key encrypted to that public
key (CMS EnvelopedData), which only this process can open. The plaintext data key never crosses
the gateway. The parent holds the same role credentials but cannot produce such a document.

Decrypt names the key the client's header names (``KeyId``): KMS then refuses a blob encrypted under
any other key (``IncorrectKeyException``) instead of releasing whatever key the blob points to, so a
blob swapped in from another key (one with a looser policy, say) never yields a data key here.

At most ``MAX_KMS_CONNECTIONS`` KMS calls run at once (nitro_llm/kms/connections.py: every hop to
KMS, vsock-proxy's workers included, is sized from that number, so no connection waits for a worker).
An expired session token (``ExpiredTokenException``) on the gateway's credentials is not a denial: it
becomes ``credentials_expired``, which the gateway answers by handing over fresh credentials and
resending the request once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nitro_llm.enclave.errors import (
    CredentialsExpiredError,
    KeyReleaseDeniedError,
    KmsSignatureRejectedError,
    KmsUnavailableError,
    NoCredentialsError,
)
from nitro_llm.enclave.kms_retry import RetryPolicy, with_retries
from nitro_llm.errors import NitroLLMError
from nitro_llm.kms import attempt_budget
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
from nitro_llm.protocol.frame_kinds import Credentials
from nitro_llm.protocol.kms_envelope import DATA_KEY_SIZE

log = logging.getLogger(__name__)

RECIPIENT_ALGORITHM = "RSAES_OAEP_SHA_256"
RSA_BITS = 2048
EXPIRED_TOKEN = "ExpiredTokenException"  # noqa: S105 - an AWS error code, not a secret
# KMS error codes that mean "this will not work as sent": retrying the same request cannot help.
# (ExpiredTokenException is one too, except on the gateway's role credentials: fresh ones help.)
_DENIALS = frozenset(
    {
        "AccessDeniedException",
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
        "InvalidKeyUsageException",
        "ValidationException",
    }
)
# Codes that mean KMS did not accept the call's signature or credentials, before any key policy was
# read: final as well, but a matter of credentials (or the clock), not of the PCR conditions.
_SIGNATURE_REJECTIONS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        EXPIRED_TOKEN,
    }
)


class AttestationSource(Protocol):
    """The NSM seam: a device NSM in a real enclave, the emulated one in local mode."""

    def attest(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...


KmsClientFactory = Callable[[Credentials], Any]
"""Builds a boto3-compatible KMS client (anything with ``decrypt(**kwargs)``) for the given credentials."""

EnvelopeOpener = Callable[[bytes, rsa.RSAPrivateKey], bytes]
"""Opens a CiphertextForRecipient (CMS EnvelopedData) with the recipient key: kms.cms.open_enveloped_data."""


class RecipientKey:
    """The RSA key KMS encrypts data keys to. Made once per process and never leaves its memory."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        self.public_der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class Released:
    plaintext: bytes = field(repr=False)
    key_id: str  # the key KMS used: where an answer to the same owner can be encrypted


class KeyRelease:
    """Decrypt-with-Recipient, counted (the count is published in pong frames)."""

    def __init__(
        self,
        *,
        nsm: AttestationSource,
        kms_client_factory: KmsClientFactory,
        open_envelope: EnvelopeOpener,
        recipient: RecipientKey | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = MAX_KMS_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._nsm = nsm
        self._factory = kms_client_factory
        self._open_envelope = open_envelope
        self._recipient = recipient or RecipientKey()
        self._retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)  # KMS calls (= connections) at once
        self._credentials: Credentials | None = None
        self._client: Any = None
        self.decrypt_calls = 0
        self.kms_attempts = 0  # decrypt_calls plus retries: more means calls waited or failed on the way

    @property
    def has_credentials(self) -> bool:
        with self._lock:
            return self._credentials is not None

    def set_credentials(self, credentials: Credentials) -> None:
        """Kept in memory only; the client is rebuilt on next use (boto3 clients are not cheap).

        The replaced client is closed: its idle pooled connections would otherwise hold vsock-proxy
        workers until garbage collection. A call still running on it finishes; its connection is
        closed when it is returned to the closed pool."""
        with self._lock:
            if credentials == self._credentials:
                return
            self._credentials = credentials
            old, self._client = self._client, None
        close_client(old)

    def _kms(self) -> Any:
        with self._lock:
            if self._credentials is None:
                raise NoCredentialsError("the enclave has no KMS credentials")
            if self._client is None:
                self._client = self._factory(self._credentials)
            return self._client

    def decrypt(
        self, edk: bytes, encryption_context: dict[str, str], *, request_id: str, key_id: str | None = None
    ) -> bytes:
        """The conversation's 32-byte data key, released only against this enclave's attestation.
        ``key_id``: the key the request's header names; KMS refuses a blob under any other key."""
        data_key = self.release(edk, encryption_context, request_id=request_id, key_id=key_id).plaintext
        if len(data_key) != DATA_KEY_SIZE:
            raise KeyReleaseDeniedError(f"KMS released a {len(data_key)}-byte key for request {request_id}")
        return data_key

    def release(
        self,
        ciphertext_blob: bytes,
        encryption_context: dict[str, str] | None,
        *,
        request_id: str,
        kms: Any = None,
        key_id: str | None = None,
    ) -> Released:
        """KMS Decrypt with ``Recipient``: whatever the blob holds, opened only inside this process.
        ``kms`` overrides the client built from the gateway's credentials (the seed route brings its own).
        ``key_id`` is passed as Decrypt's ``KeyId`` (the seed's format names no key)."""
        own_credentials = kms is None
        kms = kms if kms is not None else self._kms()
        document = self._nsm.attest(public_key=self._recipient.public_der)
        with self._lock:
            self.decrypt_calls += 1
        params: dict[str, Any] = {
            "CiphertextBlob": ciphertext_blob,
            "Recipient": {"KeyEncryptionAlgorithm": RECIPIENT_ALGORITHM, "AttestationDocument": document},
        }
        if encryption_context:
            params["EncryptionContext"] = encryption_context
        if key_id:
            params["KeyId"] = key_id

        def attempt() -> Any:
            with self._lock:
                self.kms_attempts += 1
            try:
                return self.in_slot(lambda: kms.decrypt(**params), request_id)
            except NitroLLMError:
                raise
            except Exception as exc:
                raise translate_kms_error(exc, request_id, own_credentials=own_credentials) from None

        # KMS unreachable: bounded retries with backoff, then a typed retryable kms_unavailable.
        response = with_retries(attempt, self._retry, request_id=request_id)
        if response.get("Plaintext"):
            # With a Recipient, KMS must not return the key in the clear: something between us and
            # KMS is not KMS, or the request lost its Recipient. Refuse rather than use it.
            raise KeyReleaseDeniedError(
                f"KMS answered request {request_id} with a plaintext key; refusing it"
            )
        blob = response.get("CiphertextForRecipient")
        if not isinstance(blob, bytes | bytearray) or not blob:
            raise KeyReleaseDeniedError(f"KMS answered request {request_id} without CiphertextForRecipient")
        try:
            plaintext = self._open_envelope(bytes(blob), self._recipient.private_key)
        except NitroLLMError as exc:
            raise KeyReleaseDeniedError(
                f"the key KMS released for request {request_id} could not be opened ({exc.code})"
            ) from None
        log.info("request=%s kms_decrypt=ok", request_id)
        return Released(plaintext=plaintext, key_id=str(response.get("KeyId", "")))

    def in_slot(self, call: Callable[[], Any], request_id: str) -> Any:
        """Run one KMS call in one of the connection slots (every KMS call the enclave makes does).

        The wait for a slot comes out of the attempt's read budget (``attempt_budget``), so the retry
        policy's deadline still bounds the whole release; an attempt left with less than the policy's
        minimum read time gives up as ``kms_unavailable`` (retried while the deadline allows)."""
        budget = attempt_budget.current_read_timeout()
        if budget is None:
            budget = self._retry.max_read_timeout
        started = time.monotonic()
        if not self._slots.acquire(timeout=budget):
            raise self._slots_busy(request_id)
        try:
            left = budget - (time.monotonic() - started)
            if left < self._retry.min_read_timeout:
                raise self._slots_busy(request_id)
            with attempt_budget.read_timeout(left):
                return call()
        finally:
            self._slots.release()

    def _slots_busy(self, request_id: str) -> KmsUnavailableError:
        log.info("request=%s kms_decrypt=waited_for_connection", request_id)
        return KmsUnavailableError(
            f"all {self._max_connections} connections to KMS stayed busy for request {request_id}"
        )


def close_client(client: Any) -> None:
    """Close a boto3 client's connections now, rather than at garbage collection: an idle pooled
    connection holds a vsock-proxy worker (nitro_llm/kms/connections.py)."""
    close = getattr(client, "close", None)
    if callable(close):
        close()


def translate_kms_error(exc: Exception, request_id: str, *, own_credentials: bool = False) -> NitroLLMError:
    """botocore's errors -> ours. Only AWS's error code is kept: its message may quote the request.

    ``own_credentials``: the call was signed with the role credentials the gateway handed over, so an
    expired token is the gateway's to renew (``credentials_expired``), not a refusal of the request."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", "Unknown"))
        log.info("request=%s kms_decrypt=refused code=%s", request_id, code)
        if code == EXPIRED_TOKEN and own_credentials:  # the gateway renews them: retryable
            return CredentialsExpiredError(
                f"KMS refused request {request_id}: the enclave's role credentials have expired"
            )
        if code in _SIGNATURE_REJECTIONS:  # a seed client's own credentials: only it can fix them
            return KmsSignatureRejectedError(
                f"KMS did not accept the signature of the call for request {request_id}: {code}"
            )
        if code in _DENIALS:
            return KeyReleaseDeniedError(f"KMS refused to release the key for request {request_id}: {code}")
        return KmsUnavailableError(f"KMS failed for request {request_id}: {code}")
    log.info("request=%s kms_decrypt=unreachable error=%s", request_id, type(exc).__name__)
    return KmsUnavailableError(f"KMS could not be reached for request {request_id} ({type(exc).__name__})")
