"""Typed errors shared by every party.

Each error carries a stable ``code`` (safe to put on the wire and in logs), a human message and a
``hint`` saying what to do next. Messages must never contain plaintext, keys or credentials: they
cross the enclave boundary and end up in the untrusted gateway's logs.
"""

from __future__ import annotations


class NitroLLMError(Exception):
    """Base class: every error nitro-llm raises on purpose derives from it."""

    code: str = "internal_error"
    retryable: bool = False
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_wire(self) -> dict[str, object]:
        """What may cross a trust boundary: code, message, hint, retryable. Never plaintext."""
        return {"code": self.code, "message": self.message, "hint": self.hint, "retryable": self.retryable}


class ConfigError(NitroLLMError):
    code = "config_error"


class ProtocolError(NitroLLMError):
    """Malformed or unexpected bytes from a peer."""

    code = "protocol_error"
