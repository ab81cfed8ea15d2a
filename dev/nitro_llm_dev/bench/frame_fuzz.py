"""Random frames straight at the enclave's socket, from where a hostile parent host stands.

The parent can write anything to the vsock. Each input goes on its own connection (the contract:
one request per connection) and the enclave must answer it with at most one typed error frame, or
hang up; it must never answer a forged or damaged request with answer chunks, and it must go on
serving. Inputs mix raw noise, structurally valid frames with wrong fields, and real sealed
envelopes with one byte flipped (those reach the cryptography, where the interesting bugs live).
Damage to the encrypted data key is kept rare: each such input costs a KMS call, as it would
cost a real attacker, and would otherwise dominate the run time.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2

from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope
from nitro_llm.transport import connect

KINDS = (
    "noise",
    "bad_length",
    "truncated",
    "oversized",
    "not_a_map",
    "random_map",
    "wrong_fields",
    "flipped",
)


@dataclass
class FuzzResult:
    sent: int = 0
    typed_errors: int = 0
    hangups: int = 0
    other_replies: int = 0  # pong/ok for inputs that happened to be valid pings or credentials
    answered_forgeries: int = 0  # chunk frames in reply to damaged input: must stay 0
    by_kind: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)


def _random_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(8 if depth < 2 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randint(-(2**64), 2**64)
    if choice == 3:
        return rng.random() * 10 ** rng.randint(-5, 20)
    if choice == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(12)))
    if choice == 5:
        return rng.randbytes(rng.randrange(40))
    if choice == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [str(_random_value(rng, depth + 1))[:8] for _ in range(rng.randrange(4))]
    return {key: _random_value(rng, depth + 1) for key in keys}


def _flip(envelope: bytes, rng: random.Random) -> bytes:
    """One byte of a real envelope changed; the encrypted data key only rarely (it costs KMS)."""
    decoded = cbor2.loads(envelope)
    edk = decoded["edk"]
    start = envelope.find(edk)
    while True:
        pos = rng.randrange(len(envelope))
        if not start <= pos < start + len(edk) or rng.random() < 0.01:
            break
    mutated = bytearray(envelope)
    mutated[pos] ^= rng.randrange(1, 256)
    return bytes(mutated)


def make_input(kind: str, rng: random.Random, envelope: bytes, max_frame: int) -> bytes:
    if kind == "noise":
        return rng.randbytes(rng.randrange(1, 200))
    if kind == "bad_length":
        return struct.pack(">I", 0) if rng.random() < 0.3 else rng.randbytes(rng.randrange(1, 4))
    if kind == "truncated":
        body = encode_frame(frame_kinds.infer_frame(envelope))
        return body[: rng.randrange(1, len(body))]
    if kind == "oversized":
        return struct.pack(">I", rng.randrange(max_frame + 1, 2**32)) + rng.randbytes(rng.randrange(64))
    if kind == "not_a_map":
        body = cbor2.dumps([_random_value(rng) for _ in range(rng.randrange(3))])
        return struct.pack(">I", len(body)) + body
    if kind == "random_map":
        body = cbor2.dumps(
            {
                "t": rng.choice(["infer", "ping", "credentials", "attest", "seed", "x"]),
                **{str(i): _random_value(rng) for i in range(rng.randrange(4))},
            }
        )
        return struct.pack(">I", len(body)) + body
    if kind == "wrong_fields":
        frame = rng.choice(
            [
                {"t": "infer", "envelope": _random_value(rng)},
                {"t": "infer", "envelope": rng.randbytes(rng.randrange(1, 300))},
                {"t": "ping", "extra": _random_value(rng)},
                {"t": "credentials", "access_key_id": _random_value(rng)},
                {"t": "attest", "nonce": _random_value(rng), "suite": _random_value(rng)},
            ]
        )
        body = cbor2.dumps(frame)
        return struct.pack(">I", len(body)) + body
    return encode_frame(frame_kinds.infer_frame(_flip(envelope, rng)))


def send_one(address: str, data: bytes, timeout: float) -> list[dict[str, object]] | None:
    """Send ``data`` on a fresh connection; the frames that came back, or None if it hung up."""
    try:
        with connect(address, timeout) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return None  # it stopped reading (e.g. after an oversized length): a hang-up
            replies: list[dict[str, object]] = []
            while True:
                frame = read_frame(sock)
                if frame is None:
                    return replies
                replies.append(frame)
    except (OSError, NitroLLMError):
        return None


def fuzz_enclave(
    address: str,
    fresh_envelope: Callable[[], bytes],
    *,
    count: int,
    seed: int = 0,
    max_frame: int = 16 * 1024 * 1024,
    timeout: float = 30.0,
    refresh_every: int = 500,
) -> FuzzResult:
    """Send ``count`` random inputs; ``fresh_envelope`` seals a valid request (re-made regularly so
    that flipped copies are still inside the freshness window and reach the cryptography)."""
    rng = random.Random(seed)  # reproducible: a failure can be replayed with its seed
    result = FuzzResult()
    envelope = fresh_envelope()
    KmsEnvelope.from_cbor(envelope)  # the base must be valid, or the flips test nothing
    for i in range(count):
        if i and i % refresh_every == 0:
            envelope = fresh_envelope()
        kind = KINDS[i % len(KINDS)]
        replies = send_one(address, make_input(kind, rng, envelope, max_frame), timeout)
        result.sent += 1
        result.by_kind[kind] += 1
        if not replies:
            result.hangups += 1
            continue
        if any(r.get("t") == "chunk" for r in replies):
            result.answered_forgeries += 1
        elif len(replies) == 1 and replies[0].get("t") == "error":
            result.codes[frame_kinds.read_error(replies[0]).code] += 1
            result.typed_errors += 1
        else:
            result.other_replies += 1
    return result
