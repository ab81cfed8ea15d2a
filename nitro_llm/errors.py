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

    def __init_subclass__(
        cls, *, code: str | None = None, retryable: bool | None = None, **attributes: object
    ) -> None:
        """Declare an error in its class line, with the hint a person can act on as its docstring.

        For example ``class BusyError(EnclaveError, code="enclave_busy", retryable=True)`` whose
        docstring reads "the enclave is answering other requests; retry after a short wait". Why: the
        parties declare some 150 error types, and three assignments each made every errors module
        repeat the others. Notes on *why* an error exists go in a comment above the class; a class
        without a docstring keeps its parent's hint, and a ``default_hint = ...`` in the body still wins.
        Other class attributes that a party's base error declares (the gateway's ``status_code``, the
        proxy's ``status`` and ``openai_type``) are given the same way; a name no base declares is a
        TypeError at import, so a misspelt one cannot pass silently.
        """
        super().__init_subclass__()
        for name, value in attributes.items():
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__}: no base of it declares the error attribute {name!r}")
            setattr(cls, name, value)
        if code is not None:
            cls.code = code
        if retryable is not None:
            cls.retryable = retryable
        doc = cls.__dict__.get("__doc__")
        if doc and "default_hint" not in cls.__dict__:
            cls.default_hint = " ".join(doc.split())

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_wire(self) -> dict[str, object]:
        """What may cross a trust boundary: code, message, hint, retryable. Never plaintext."""
        return {"code": self.code, "message": self.message, "hint": self.hint, "retryable": self.retryable}


class ConfigError(NitroLLMError, code="config_error"):
    pass


# Malformed or unexpected bytes from a peer.
class ProtocolError(NitroLLMError, code="protocol_error"):
    pass
