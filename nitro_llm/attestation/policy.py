"""What the verifier expects of a document beyond authenticity: PCRs, nonce, age, bound data.

Authenticity (signature, chain) says "some Nitro enclave produced this"; the policy says "and it is
ours, now, talking to us". ``expected_pcrs`` has no default on purpose: a caller must write down
which measurements it expects, or pass ``{}`` knowingly, which the report then flags.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from nitro_llm.attestation.document import PCR_COUNT_LIMIT, PCR_LENGTH
from nitro_llm.attestation.errors import PolicyError

_ASCII_DIGITS = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class VerificationPolicy:
    """Expected values; ``None`` means "not checked".

    ``max_clock_skew`` only applies with ``max_age``: how far in the future a document's timestamp may
    be before it is refused, allowing for clocks that disagree a little.
    """

    expected_pcrs: Mapping[int, bytes]
    allow_debug: bool = False
    nonce: bytes | None = None
    max_age: dt.timedelta | None = None
    user_data: bytes | None = None
    public_key: bytes | None = None
    max_clock_skew: dt.timedelta = field(default=dt.timedelta(seconds=60))

    def __post_init__(self) -> None:
        if not isinstance(self.expected_pcrs, Mapping):
            raise PolicyError("expected_pcrs must be a mapping of PCR index to 48-byte value")
        pcrs: dict[int, bytes] = {}
        for index, value in self.expected_pcrs.items():
            if type(index) is not int or not 0 <= index < PCR_COUNT_LIMIT:
                raise PolicyError(f"expected PCR index {index!r} is not 0-{PCR_COUNT_LIMIT - 1}")
            if not isinstance(value, bytes | bytearray) or len(value) != PCR_LENGTH:
                raise PolicyError(f"expected PCR{index} must be {PCR_LENGTH} bytes")
            pcrs[index] = bytes(value)
        object.__setattr__(self, "expected_pcrs", pcrs)
        for name in ("nonce", "user_data", "public_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes | bytearray):
                raise PolicyError(f"{name} must be bytes or None")
        if self.max_age is not None and self.max_age <= dt.timedelta(0):
            raise PolicyError("max_age must be positive")
        if self.max_clock_skew < dt.timedelta(0):
            raise PolicyError("max_clock_skew must not be negative")


def parse_pcr_expectation(text: str) -> tuple[int, bytes]:
    """Parse ``N=HEX`` (as typed on the command line) into an index and a 48-byte value."""
    index_text, sep, hex_text = text.partition("=")
    # ASCII digits only: str.isdigit() and int() also accept "٠" or "０", which nobody means as a PCR index
    if not sep or not _ASCII_DIGITS.fullmatch(index_text.strip()):
        raise PolicyError(f"expected PCR must look like N=HEX, got {text[:20]!r}")
    index = int(index_text.strip())
    value = parse_hex(hex_text, what=f"PCR{index}")
    if not 0 <= index < PCR_COUNT_LIMIT or len(value) != PCR_LENGTH:
        raise PolicyError(f"PCR{index}: index must be 0-{PCR_COUNT_LIMIT - 1} and value {PCR_LENGTH} bytes")
    return index, value


def parse_hex(text: str, *, what: str) -> bytes:
    """Hex from a person: surrounding spaces and an optional 0x prefix are fine, anything else is not."""
    cleaned = text.strip().removeprefix("0x")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise PolicyError(f"{what} is not hexadecimal") from None
