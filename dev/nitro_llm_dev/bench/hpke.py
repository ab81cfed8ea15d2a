"""How much the attested protocol's request sealing costs: HPKE seal + open of a 2 KB question.

Measured through the protocol's own ``seal_request`` / ``EnclaveSession.open_request`` (CBOR,
padding and schema checks included), because that is the cost a user pays per question; the raw
HPKE single-shot cost is reported beside it to show how much of that is the KEM.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from nitro_llm.protocol.attested import EnclaveSession, SessionDescriptor, seal_request
from nitro_llm.protocol.hpke_suite import SUITES, HpkeKeyPair
from nitro_llm.protocol.hpke_suite import seal as hpke_seal
from nitro_llm.protocol.messages import chat_request

_DIGEST = "0" * 64


@dataclass(frozen=True)
class HpkeTiming:
    suite: str
    iterations: int
    request_bytes: int  # the sealed envelope's size on the wire
    seal_us: float  # median, microseconds
    open_us: float
    raw_seal_us: float  # bare HPKE single-shot on the same padded size, no protocol around it
    raw_open_us: float

    @property
    def total_us(self) -> float:
        return self.seal_us + self.open_us


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def bench_suite(suite: str, *, question_bytes: int = 2048, iterations: int = 200) -> HpkeTiming:
    if not 1 <= iterations <= 100_000:
        raise ValueError("iterations must be 1 to 100000")
    session = EnclaveSession.generate(model_digest=_DIGEST, config_digest=_DIGEST, suite=suite)
    descriptor = SessionDescriptor.from_cbor(session.descriptor_bytes)
    question: list[Mapping[str, str]] = [{"role": "user", "content": "q" * question_bytes}]
    request = chat_request(question, max_tokens=64)
    seal_s: list[float] = []
    open_s: list[float] = []
    wire = 0
    for _ in range(iterations):
        t0 = time.perf_counter()
        sealed = seal_request(descriptor, request)
        body = sealed.envelope.to_cbor()
        t1 = time.perf_counter()
        session.open_request(body)
        t2 = time.perf_counter()
        seal_s.append(t1 - t0)
        open_s.append(t2 - t1)
        wire = len(body)
    keypair = HpkeKeyPair.generate(suite)
    plaintext = bytes(4096)
    raw_seal: list[float] = []
    raw_open: list[float] = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        enc, ct = hpke_seal(suite, keypair.public_key, plaintext, info=b"bench")
        t1 = time.perf_counter()
        keypair.open(enc, ct, info=b"bench")
        t2 = time.perf_counter()
        raw_seal.append(t1 - t0)
        raw_open.append(t2 - t1)
    return HpkeTiming(
        suite=suite,
        iterations=iterations,
        request_bytes=wire,
        seal_us=_median_us(seal_s),
        open_us=_median_us(open_s),
        raw_seal_us=_median_us(raw_seal),
        raw_open_us=_median_us(raw_open),
    )


def bench_hpke(*, question_bytes: int = 2048, iterations: int = 200) -> dict[str, dict[str, float]]:
    """Median microseconds per operation, per suite: ``{"x25519": {"seal_us": ..., ...}, ...}``."""
    out: dict[str, dict[str, float]] = {}
    for suite in SUITES:
        timing = bench_suite(suite, question_bytes=question_bytes, iterations=iterations)
        row = asdict(timing)
        row.pop("suite")
        row["total_us"] = timing.total_us
        out[suite] = row
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_hpke(), indent=2))
