"""(b) The protocol path alone: the full stack with the echo engine instead of the model.

Each request is a real "kms"-protocol request — sealed by the client under a KMS data key, relayed
by the gateway (token check, limits, HTTP), decrypted, freshness- and replay-checked, answered and
sealed chunk by chunk in the enclave process — but the engine answers instantly, so what is timed
is everything except the model. Requests are sealed before the clock starts (a client seals while
the previous answer streams), and every answer is opened and checked afterwards (a wrong or
tampered answer fails the benchmark). Baseline: the same HTTP server stack echoing the body
(``bare_http``) at the same concurrency, so the ratio is the cost of the confidential path over a
bare Python relay. Latency is wall time per request at the client, including queueing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nitro_llm.protocol.frame_codec import FrameDecoder
from nitro_llm.protocol.kms_envelope import KmsHeader, ResponseOpener, new_id, seal_request
from nitro_llm.protocol.messages import chat_request
from nitro_llm_dev.bench.speed.raw_http import RawConnection, Reply
from nitro_llm_dev.bench.speed.stats import median, percentile, ratio
from nitro_llm_dev.local.stack import LocalStack, free_port

QUESTION = "hello from the protocol benchmark"
MAX_PREPARED = 40_000


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    verified: int = 0
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return median(self.latencies_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ProtocolResult:
    ours: list[LevelResult]
    baseline: list[LevelResult]
    engine: str = "echo"

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for mine, base in zip(self.ours, self.baseline, strict=True):
            out.append(
                {
                    "concurrency": mine.concurrency,
                    "requests": mine.requests,
                    "p50_ms": round(mine.p50_ms, 3),
                    "p99_ms": round(mine.p99_ms, 3),
                    "requests_per_s": round(mine.requests_per_second, 1),
                    "bare_p50_ms": round(base.p50_ms, 3),
                    "bare_requests_per_s": round(base.requests_per_second, 1),
                    "p50_ratio": round(ratio(mine.p50_ms, base.p50_ms), 3),
                    "throughput_ratio": round(ratio(mine.requests_per_second, base.requests_per_second), 3),
                    "failed": mine.requests - mine.verified,
                    "cpu_us_per_request": mine.cpu_us_per_request,
                    "bare_cpu_us_per_request": base.cpu_us_per_request,
                }
            )
        return out


@dataclass(frozen=True)
class _Prepared:
    wire: bytes  # the whole HTTP request
    data_key: bytes
    header: KmsHeader


def _conversations(stack: LocalStack, count: int) -> list[tuple[str, bytes, bytes]]:
    """``count`` conversations, each with its data key from KMS (one GenerateDataKey each)."""
    from nitro_llm.kms.client import make_kms_client

    config = stack.client_config()
    kms = make_kms_client(config.kms_endpoint, config.credentials, config.region)
    out = []
    for _ in range(count):
        conversation = new_id()
        context = KmsHeader.new(model="default", conversation_id=conversation, key_id=config.key_id)
        reply = kms.generate_data_key(
            KeyId=config.key_id, KeySpec="AES_256", EncryptionContext=context.encryption_context()
        )
        out.append((conversation, reply["Plaintext"], reply["CiphertextBlob"]))
    return out


def _prepare(
    conn: RawConnection, conversations: Sequence[tuple[str, bytes, bytes]], token: str, key_id: str, n: int
) -> list[_Prepared]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cbor"}
    question: list[Mapping[str, str]] = [{"role": "user", "content": QUESTION}]
    request = chat_request(question, max_tokens=16)
    out = []
    for i in range(n):
        conversation, data_key, edk = conversations[i % len(conversations)]
        header = KmsHeader.new(model="default", conversation_id=conversation, key_id=key_id)
        body = seal_request(data_key, header, request, edk=edk).to_cbor()
        out.append(_Prepared(conn.request_bytes("/v1/infer", body, headers), data_key, header))
    return out


async def _drive(
    targets: Sequence[tuple[str, int]], wires: Sequence[bytes], concurrency: int, seconds: float
) -> tuple[list[tuple[int, float, Reply]], float]:
    """Closed-loop clients, client ``i`` on ``targets[i % len(targets)]``, until time or requests run out."""
    records: list[tuple[int, float, Reply]] = []
    next_index = 0
    deadline = time.perf_counter() + seconds
    conns = [RawConnection(*targets[i % len(targets)]) for i in range(concurrency)]

    async def worker(conn: RawConnection) -> None:
        nonlocal next_index
        while next_index < len(wires) and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            t0 = time.perf_counter()
            reply = await conn.send(wires[index])
            records.append((index, (time.perf_counter() - t0) * 1000, reply))
        await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return records, time.perf_counter() - started


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_level(
    host: str,
    port: int,
    wires: Sequence[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int] | None = None,
) -> tuple[LevelResult, list[tuple[int, float, Reply]]]:
    split = max(concurrency * 4, int(len(wires) * warmup / (warmup + seconds)))
    asyncio.run(_drive([(host, port)], wires[:split], concurrency, warmup))
    pids = {**(pids or {}), "load client": os.getpid()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    records, elapsed = asyncio.run(_drive([(host, port)], wires[split:], concurrency, seconds))
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    level = LevelResult(concurrency, len(records), elapsed, [r[1] for r in records])
    for name in pids:
        start, end = before[name], after[name]
        if start is not None and end is not None and records:
            level.cpu_us_per_request[name] = round((end - start) / len(records) * 1e6)
    level.statuses = dict(Counter(r[2].status for r in records))
    return level, [(i + split, lat, reply) for i, lat, reply in records]


def _verify(prepared: Sequence[_Prepared], records: Sequence[tuple[int, float, Reply]]) -> int:
    ok = 0
    for index, _lat, reply in records:
        if reply.status != 200:
            continue
        item = prepared[index]
        opener = ResponseOpener(item.data_key, item.header)
        decoder = FrameDecoder()
        text = "".join(str(opener.open(frame).get("text", "")) for frame in decoder.feed(reply.body))
        decoder.close()
        opener.finish()
        ok += text == QUESTION
    return ok


def _start_bare(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "nitro_llm_dev.bench.speed.bare_http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def bench_protocol(
    stack: LocalStack,
    token: str,
    *,
    concurrency: Sequence[int] = (1, 8, 32),
    seconds: float = 3.0,
    warmup: float = 0.5,
    rate_guess: int = 4000,
) -> ProtocolResult:
    parts = urlsplit(stack.gateway_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conn = RawConnection(host, port)
    conversations = _conversations(stack, 8)
    config = stack.client_config()
    n = min(MAX_PREPARED, int(rate_guess * (seconds + warmup)))
    warm = _prepare(conn, conversations, token, config.key_id, len(conversations))
    asyncio.run(_drive([(host, port)], [p.wire for p in warm], 1, 30))  # one KMS Decrypt per conversation
    ours = []
    pids = {
        name: proc.pid
        for name, proc in (("gateway", stack.gateway), ("enclave", stack.enclave_proc))
        if proc is not None and getattr(proc, "pid", None)
    }
    for level in concurrency:
        prepared = _prepare(conn, conversations, token, config.key_id, n)
        result, records = _run_level(host, port, [p.wire for p in prepared], level, seconds, warmup, pids)
        result.verified = _verify(prepared, records)
        ours.append(result)
    bare_port = free_port()
    bare = _start_bare(bare_port)
    try:
        _wait_port(host, bare_port)
        sample = _prepare(RawConnection(host, bare_port), conversations, token, config.key_id, 1)[0].wire
        baseline = []
        for level in concurrency:
            result, records = _run_level(
                host, bare_port, [sample] * n, level, seconds, warmup, {"bare server": bare.pid}
            )
            result.verified = sum(1 for r in records if r[2].status == 200)
            baseline.append(result)
    finally:
        bare.terminate()
        bare.wait(10)
    return ProtocolResult(ours=ours, baseline=baseline)
