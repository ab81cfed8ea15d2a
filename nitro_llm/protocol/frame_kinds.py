"""The frame types between gateway and enclave: builders for senders, strict readers for receivers.

One module for both ends so that the gateway and the enclave cannot drift apart on a field name.
Readers check exact field sets and types and raise :class:`FrameError`; the enclave answers that
with an error frame and keeps serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.errors import EnclaveReportedError, FrameError

MAX_CREDENTIAL_CHARS = 4096
MAX_PROTOCOL_CHARS = 32


@dataclass(frozen=True)
class Credentials:
    """AWS credentials the gateway hands the enclave (the instance role's, as IMDS gives them)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: str | int | None = None

    def to_boto(self) -> dict[str, str]:
        """The ``credentials`` dict ``make_kms_client`` takes."""
        out = {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
        if self.session_token:
            out["session_token"] = self.session_token
        return out


def infer_frame(envelope: bytes, protocol: str | None = None) -> dict[str, Any]:
    """``protocol`` ("kms" | "attested") names the envelope's protocol in the frame (``"p"``); without
    it the enclave reads the name from the envelope's own ``protocol`` field."""
    if protocol is None:
        return {"t": "infer", "envelope": envelope}
    return {"t": "infer", "envelope": envelope, "p": protocol}


def credentials_frame(credentials: Credentials) -> dict[str, Any]:
    return {
        "t": "credentials",
        "access_key_id": credentials.access_key_id,
        "secret_access_key": credentials.secret_access_key,
        "session_token": credentials.session_token,
        "expiration": credentials.expiration,
    }


def ping_frame() -> dict[str, Any]:
    return {"t": "ping"}


def ok_frame() -> dict[str, Any]:
    return {"t": "ok"}


def pong_frame(**info: Any) -> dict[str, Any]:
    return {"t": "pong", **info}


def error_frame(error: NitroLLMError) -> dict[str, Any]:
    """Only the error's code, message, hint and retry flag cross: never its cause or traceback."""
    return {"t": "error", **error.to_wire()}


def read_infer(frame: Mapping[str, Any]) -> bytes:
    _exact(frame, "infer", {"envelope"}, optional=("p",))
    envelope = frame["envelope"]
    if not isinstance(envelope, bytes) or not envelope:
        raise FrameError("infer frame 'envelope' must be non-empty bytes")
    read_infer_protocol(frame)
    return envelope


def read_infer_protocol(frame: Mapping[str, Any]) -> str | None:
    """The protocol an ``infer`` frame names in ``"p"``, or None when it names none."""
    protocol = frame.get("p")
    if protocol is not None and (
        not isinstance(protocol, str) or not 0 < len(protocol) <= MAX_PROTOCOL_CHARS
    ):
        raise FrameError(f"infer frame 'p' must be a protocol name of 1 to {MAX_PROTOCOL_CHARS} characters")
    return protocol


def read_credentials(frame: Mapping[str, Any]) -> Credentials:
    _exact(frame, "credentials", {"access_key_id", "secret_access_key", "session_token", "expiration"})
    for name in ("access_key_id", "secret_access_key", "session_token"):
        value = frame[name]
        if name == "session_token" and value is None:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= MAX_CREDENTIAL_CHARS:
            raise FrameError(f"credentials frame '{name}' must be 1 to {MAX_CREDENTIAL_CHARS} characters")
    expiration = frame["expiration"]
    if expiration is not None and not isinstance(expiration, str | int):
        raise FrameError("credentials frame 'expiration' must be text, an integer or null")
    return Credentials(frame["access_key_id"], frame["secret_access_key"], frame["session_token"], expiration)


def read_ping(frame: Mapping[str, Any]) -> None:
    _exact(frame, "ping", set())


def read_error(frame: Mapping[str, Any]) -> EnclaveReportedError:
    """Turn an enclave's error frame back into an exception the client can raise."""
    _exact(frame, "error", {"code", "message", "hint", "retryable"})
    code, message, hint, retryable = frame["code"], frame["message"], frame["hint"], frame["retryable"]
    if not all(isinstance(v, str) for v in (code, message, hint)) or not isinstance(retryable, bool):
        raise FrameError("error frame fields have the wrong types")
    return EnclaveReportedError(code, message, hint=hint, retryable=retryable)


def _exact(frame: Mapping[str, Any], kind: str, fields: set[str], optional: tuple[str, ...] = ()) -> None:
    if frame.get("t") != kind:
        raise FrameError(f"expected a {kind!r} frame")
    if not {"t", *fields} <= set(frame) <= {"t", *fields, *optional}:
        names = ", ".join(sorted({"t", *fields}))
        extra = f" (and optionally {', '.join(sorted(optional))})" if optional else ""
        raise FrameError(f"{kind!r} frame must have exactly the fields {names}{extra}")
