"""Errors about the fleet key. They cross the enclave boundary as error frames: messages name key
ids, generations and KMS error codes, never key material."""

from __future__ import annotations

from nitro_llm.errors import ConfigError, NitroLLMError


class FleetKeyError(NitroLLMError, code="fleet_key_error"):
    pass


# A fleet replica serves nothing until it holds the fleet key: its gateway's /healthz says 503, so a
# balancer sends requests elsewhere, and a client that got here anyway retries on another replica.
class FleetKeyUnavailableError(FleetKeyError, code="fleet_key_unavailable", retryable=True):
    """this replica has not obtained the fleet key from KMS (yet); retry, another replica will answer"""


# What the parent sent is not a fleet key this enclave may use: another KMS key than the measured
# one, an older generation than one already installed, a secret of the wrong size.
class FleetKeyRefusedError(FleetKeyError, code="fleet_key_refused"):
    """check the fleet key file ('nitro-llm fleet-key show') against the enclave's --fleet-kms-key"""


class FleetKeyFileError(ConfigError, code="fleet_key_file_invalid"):
    """create the file with 'nitro-llm fleet-key create', and edit it only with 'fleet-key rotate|retire'"""
