"""(h) The balancer hop: a local fleet through HAProxy vs the same fleet's gateways directly.

For 1, 2 and 3 replicas (echo engine, so the model's cost does not hide the hop): the same prepared
"kms"-protocol requests, at the same concurrency, sent (baseline) by clients spread evenly over the
replicas' gateways, and (ours) all to HAProxy, which spreads them. The two alternate, twice each, so
drift in the neighbours' load falls on both; every answer is opened and checked. The ratios are the
hop's cost: one more loopback TCP leg and HAProxy's HTTP parsing per request. On two shared cores
more replicas add no throughput (every replica competes for the same CPU); the rows show whether the
hop's cost grows with the number of servers behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nitro_llm.gateway.auth import ClientLimits, add_client
from nitro_llm_dev.bench.speed.machine import describe_machine
from nitro_llm_dev.bench.speed.protocol_path import _conversations, _drive, _prepare, _verify  # (b)'s path
from nitro_llm_dev.bench.speed.raw_http import RawConnection
from nitro_llm_dev.bench.speed.stacks import BENCH_CLIENT, BenchStackError, bench_dir
from nitro_llm_dev.bench.speed.stats import median, ratio
from nitro_llm_dev.local.fleet import LocalFleet
from nitro_llm_dev.local.stack import EnclaveOptions

REPLICAS = (1, 2, 3)
CONCURRENCY = 8
ROUNDS = 2
RATE_GUESS = 2000


@dataclass
class _Level:
    latencies_ms: list[float]
    requests: int
    seconds: float
    verified: int

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def running_fleet(replicas: int) -> Iterator[LocalFleet]:
    root = Path(tempfile.mkdtemp(prefix=f"fleet-{replicas}-", dir=bench_dir()))
    options = EnclaveOptions(engine="echo", max_waiting=64)
    try:
        fleet = LocalFleet(root=root, enclave=options, enclave_from="source", replicas=replicas)
        with fleet:
            yield fleet
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _unlimited_token(fleet: LocalFleet, timeout: float = 15.0) -> str:
    limits = ClientLimits(rate_per_second=1e6, burst=1_000_000, max_concurrent=10_000)
    token = add_client(fleet.api_tokens_file, BENCH_CLIENT, limits)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/cbor"}
    deadline = time.monotonic() + timeout
    pending = [r.gateway_url for r in fleet.fleet]
    while pending and time.monotonic() < deadline:  # every gateway re-reads the tokens file on its own
        pending = [
            url
            for url in pending
            if httpx.post(f"{url}/v1/infer", content=b"", headers=headers).status_code == 401
        ]
        if pending:
            time.sleep(0.2)
    if pending:
        raise BenchStackError("a gateway did not pick up the bench's API token")
    return token


def _measure(fleet: LocalFleet, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    assert fleet.balancer is not None
    balancer = ("127.0.0.1", fleet.balancer.port)
    gateways = [("127.0.0.1", r.port) for r in fleet.fleet]
    conversations = _conversations(fleet, 8)
    key_id = fleet.client_config().key_id
    conn = RawConnection(*balancer)  # only for the request bytes: Host is not checked
    n = int(RATE_GUESS * seconds) + concurrency * 4
    warm = _prepare(conn, conversations, token, key_id, len(conversations) * len(gateways))
    asyncio.run(_drive(gateways, [p.wire for p in warm], len(gateways), 30))  # each replica's KMS Decrypts
    levels: dict[str, list[_Level]] = {"direct": [], "balancer": []}
    for _ in range(ROUNDS):
        for path, targets in (("direct", gateways), ("balancer", [balancer])):
            prepared = _prepare(conn, conversations, token, key_id, n)
            asyncio.run(_drive(targets, [p.wire for p in prepared[: concurrency * 4]], concurrency, 5))
            records, elapsed = asyncio.run(
                _drive(targets, [p.wire for p in prepared[concurrency * 4 :]], concurrency, seconds)
            )
            shifted = [(i + concurrency * 4, lat, reply) for i, lat, reply in records]
            levels[path].append(
                _Level([r[1] for r in records], len(records), elapsed, _verify(prepared, shifted))
            )

    def summary(path: str) -> tuple[float, float, int, int]:
        runs = levels[path]
        latencies = [lat for run in runs for lat in run.latencies_ms]
        rate = sum(run.requests for run in runs) / sum(run.seconds for run in runs)
        requests = sum(run.requests for run in runs)
        return median(latencies), rate, requests, requests - sum(run.verified for run in runs)

    d_p50, d_rate, d_requests, d_failed = summary("direct")
    b_p50, b_rate, b_requests, b_failed = summary("balancer")
    return {
        "replicas": len(gateways),
        "concurrency": concurrency,
        "direct_p50_ms": round(d_p50, 3),
        "direct_requests_per_s": round(d_rate, 1),
        "balancer_p50_ms": round(b_p50, 3),
        "balancer_requests_per_s": round(b_rate, 1),
        "p50_ratio": round(ratio(b_p50, d_p50), 3),
        "throughput_ratio": round(ratio(b_rate, d_rate), 3),
        "requests": d_requests + b_requests,
        "failed": d_failed + b_failed,
        "load_average_1m": describe_machine()["load_average_1m"],  # other tenants' work at the end
    }


def bench_fleet_hop(
    *,
    replicas: Sequence[int] = REPLICAS,
    concurrency: int = CONCURRENCY,
    seconds: float = 3.0,
    progress: Any = lambda _m: None,
) -> list[dict[str, Any]]:
    rows = []
    for count in replicas:
        progress(f"(h) fleet of {count}: starting")
        with running_fleet(count) as fleet:
            rows.append(_measure(fleet, _unlimited_token(fleet), seconds, concurrency))
    return rows
