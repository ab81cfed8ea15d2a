"""Errors of the enclave link (Unix socket, vsock, TCP). Addresses are configuration, safe to show."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError


class TransportError(NitroLLMError, code="transport_error"):
    pass


class AddressError(TransportError, code="bad_address"):
    """write the address as unix:/path, vsock:CID:PORT (CID may be 'any') or tcp:HOST:PORT"""


class TransportUnavailableError(TransportError, code="transport_unavailable"):
    """AF_VSOCK needs Linux with the vsock modules loaded; use a unix: address in local mode"""


class AddressInUseError(TransportError, code="address_in_use"):
    """another process is listening there; stop it or choose another address"""


class ConnectFailedError(TransportError, code="connect_failed", retryable=True):
    """check that the peer is running and listening on that address"""
