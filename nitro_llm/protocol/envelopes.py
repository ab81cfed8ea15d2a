"""What every request envelope starts with, whatever its protocol: a wire version and a protocol name.

Both envelopes ("kms", "attested") are CBOR maps with ``"v"`` and ``"protocol"`` and then their own
fields; both derive from :class:`Envelope`, which writes and strictly reads that head (its
:class:`EnvelopeHead`) and does the CBOR round trip. The enclave reads the name with
:func:`envelope_protocol` when the ``infer`` frame does not carry it (docs/CONTRACTS.md, "frames").
No cryptography here: the gateway may import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from nitro_llm.protocol import cbor
from nitro_llm.protocol.errors import EnvelopeError

MAX_PROTOCOL_CHARS = 32


@dataclass(frozen=True)
class EnvelopeHead:
    """What an envelope map starts with (``"v"``, ``"protocol"``), its exact field set, and the errors
    its strict reader raises."""

    protocol: str
    version: int
    fields: frozenset[str]  # every field of the map, "v" and "protocol" included
    error: type[EnvelopeError] = EnvelopeError
    version_error: type[EnvelopeError] | None = None  # default: error

    def check(self, raw: Mapping[str, Any]) -> None:
        """Exactly ``fields``, ``v == version`` and ``protocol`` named, or ``error``.

        A version that is an integer but not ``version`` raises ``version_error`` before the fields
        are compared, so an envelope of another release gets a clear answer."""
        v = raw.get("v")
        if cbor.is_int_in(v, 0, 2**64) and v != self.version:
            raise (self.version_error or self.error)(
                f"{self.protocol} envelope version must be {self.version}"
            )
        if set(raw) != self.fields:
            raise self.error(f"envelope must have exactly {', '.join(sorted(self.fields))}")
        if v != self.version or isinstance(v, bool):
            raise self.error(f"envelope version must be {self.version}")
        if raw["protocol"] != self.protocol:
            raise self.error(f"envelope protocol must be {self.protocol!r}")


class Envelope:
    """Base of the request envelopes: subclasses (frozen dataclasses) set ``HEAD`` and give
    :meth:`body` / :meth:`from_body` for their own fields."""

    HEAD: ClassVar[EnvelopeHead]

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_body(cls, raw: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def to_map(self) -> dict[str, Any]:
        return {"v": self.HEAD.version, "protocol": self.HEAD.protocol, **self.body()}

    def to_cbor(self) -> bytes:
        return cbor.dumps(self.to_map())

    @classmethod
    def from_map(cls, raw: Mapping[str, Any]) -> Self:
        cls.HEAD.check(raw)
        return cls.from_body(raw)

    @classmethod
    def from_cbor(cls, data: bytes) -> Self:
        return cls.from_map(cbor.decode_map(data, what="envelope", error=cls.HEAD.error))


def envelope_protocol(raw: bytes) -> str:
    """The protocol an envelope names in its ``protocol`` field; :class:`EnvelopeError` when it
    is not a CBOR map or names none."""
    envelope = cbor.decode_map(raw, what="envelope", error=EnvelopeError)
    name = envelope.get("protocol")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_PROTOCOL_CHARS:
        raise EnvelopeError(
            f"an envelope names its protocol in a 'protocol' field of 1 to {MAX_PROTOCOL_CHARS} characters"
        )
    return name
