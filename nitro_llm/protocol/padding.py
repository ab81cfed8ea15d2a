"""Length-hiding padding: every sealed payload is grown to the next size bucket before encryption.

AEAD ciphertext is as long as its plaintext, so without padding the question's length, and each
streamed token's length, can be read off the wire by the gateway. After padding an observer learns
only the bucket. Layout: a 4-byte big-endian payload length, the payload, then zero bytes up to the
bucket size. The whole padded block is inside the AEAD, so the length prefix cannot be forged; the
zero check on open only catches a peer that pads wrongly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from nitro_llm.protocol.attested_errors import PaddingError

_LENGTH = struct.Struct(">I")
LENGTH_PREFIX = _LENGTH.size
MAX_PADDED_SIZE = 64 * 1024 * 1024  # above any frame we accept; keeps "multiples of the largest" finite


@dataclass(frozen=True)
class Buckets:
    """Ascending padded sizes; payloads past the largest grow to a multiple of the largest.

    Past the largest bucket the size still leaks, but only in steps of that bucket, and nothing the
    protocol carries is refused merely for being long.
    """

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = self.sizes
        if not sizes or any(not isinstance(s, int) or isinstance(s, bool) for s in sizes):
            raise ValueError("buckets must be a non-empty sequence of integers")
        if sizes[0] <= LENGTH_PREFIX or list(sizes) != sorted(set(sizes)) or sizes[-1] > MAX_PADDED_SIZE:
            raise ValueError(
                f"bucket sizes must ascend strictly, above {LENGTH_PREFIX}, at most {MAX_PADDED_SIZE}"
            )

    @classmethod
    def of(cls, sizes: Iterable[int]) -> Buckets:
        return cls(tuple(sizes))

    @classmethod
    def powers_of_two(cls, smallest: int, largest: int) -> Buckets:
        if smallest <= 0 or smallest & (smallest - 1) or largest < smallest:
            raise ValueError("smallest must be a power of two, no larger than largest")
        sizes = []
        size = smallest
        while size <= largest:
            sizes.append(size)
            size *= 2
        return cls(tuple(sizes))

    def padded_size(self, payload_size: int) -> int:
        need = payload_size + LENGTH_PREFIX
        for size in self.sizes:
            if need <= size:
                return size
        largest = self.sizes[-1]
        padded = -(-need // largest) * largest
        if padded > MAX_PADDED_SIZE:
            raise PaddingError(f"a payload of {payload_size} bytes is above the padding limit")
        return padded


# Questions: 1 KiB, 2 KiB, ... 8 MiB (the request schema's ceiling of 1 Mi characters fits in UTF-8).
REQUEST_BUCKETS = Buckets.powers_of_two(1024, 8 * 1024 * 1024)
# Answer chunks: one token, or the final chunk with its usage map, fits the smallest bucket.
CHUNK_BUCKETS = Buckets.of((256, 1024, 4096, 16384, 65536))


def pad(payload: bytes, buckets: Buckets) -> bytes:
    size = buckets.padded_size(len(payload))
    return _LENGTH.pack(len(payload)) + payload + bytes(size - LENGTH_PREFIX - len(payload))


def unpad(padded: bytes) -> bytes:
    if len(padded) < LENGTH_PREFIX:
        raise PaddingError(f"padded block of {len(padded)} bytes is shorter than its length prefix")
    (length,) = _LENGTH.unpack_from(padded)
    end = LENGTH_PREFIX + length
    if end > len(padded):
        raise PaddingError(
            f"padded block claims {length} payload bytes but holds {len(padded) - LENGTH_PREFIX}"
        )
    if any(padded[end:]):
        raise PaddingError("padding bytes after the payload are not all zero")
    return padded[LENGTH_PREFIX:end]
