"""Many clients at once on loopback, some of them hostile, for a bounded time.

Well-formed clients each hold their own API token, stay within its limits, and check every answer
word for word (the echo engine repeats the question), with a fresh canary in every question for the
leak scan. Hostile clients run beside them: garbage bodies, missing and forged tokens, a client far
over its rate, oversized bodies, slowloris connections, replays and bit-flipped copies of the
well-formed clients' captured requests, stale timestamps, and a flood of unauthenticated health
checks. The run passes when no well-formed request failed and every hostile one was refused with
a typed answer (never answered, never a 5xx, never a hang).
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.auth import ClientLimits
from nitro_llm.protocol.frame_codec import FrameDecoder
from nitro_llm.protocol.kms_envelope import KmsEnvelope, KmsHeader, new_id, seal_request
from nitro_llm.protocol.messages import chat_request
from nitro_llm_dev.bench.hostile_stack import HostileStack
from nitro_llm_dev.bench.leaks import new_canary

WELL_FORMED_LIMITS = ClientLimits(rate_per_second=20.0, burst=40, max_concurrent=4)
WELL_FORMED_INTERVAL = 0.125  # 8 requests per second at most: inside the limits above
HOSTILE_LIMITS = ClientLimits(rate_per_second=5.0, burst=10, max_concurrent=2)
OVER_RATE_LIMITS = ClientLimits(rate_per_second=2.0, burst=2, max_concurrent=1)
TURNS_PER_CONVERSATION = 3
SLOWLORIS_CONNECTIONS = 16
CAPTURED_KEEP = 200
TYPED_STATUSES = frozenset({200, 400, 401, 408, 413, 429})


@dataclass
class LoadResult:
    seconds: float = 0.0
    well_formed_ok: int = 0
    well_formed_errors: list[str] = field(default_factory=list)
    hostile: Counter[str] = field(default_factory=Counter)
    """(kind, outcome) counts as "kind:outcome"."""
    untyped: list[str] = field(default_factory=list)
    """Hostile requests answered with anything but a typed refusal (must stay empty)."""
    answered_hostile: int = 0
    """Replayed, tampered or garbage requests that got answer chunks (must stay 0)."""
    slowloris_closed: int = 0
    slowloris_max_seconds: float = 0.0
    canaries: list[str] = field(default_factory=list)

    @property
    def hostile_total(self) -> int:
        return sum(self.hostile.values())


def _still_open(sock: socket.socket) -> bool:
    """Send one more header byte; False once the server has answered (408) or closed."""
    try:
        sock.sendall(b"x")
        sock.settimeout(0.02)
        sock.recv(4096)  # the 408, or b"" at close: either way the server is done with us
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


class _Run:
    def __init__(self, hs: HostileStack, seconds: float, seed: int) -> None:
        self.hs = hs
        self.deadline = time.monotonic() + seconds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.result = LoadResult(seconds=seconds)
        self.captured: list[bytes] = []
        self.url = hs.gateway_url

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def note(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.result.hostile[f"{kind}:{outcome}"] += 1

    def untyped(self, what: str) -> None:
        with self.lock:
            self.result.untyped.append(what)

    # -- responses -------------------------------------------------------------------------------
    def classify(self, kind: str, response: httpx.Response) -> None:
        """Record a hostile request's outcome; anything but a typed refusal is a finding."""
        if response.status_code not in TYPED_STATUSES:
            self.untyped(f"{kind}: HTTP {response.status_code}")
            return
        if response.status_code != 200:
            try:
                code = str(response.json()["code"])
            except (ValueError, KeyError, TypeError):
                self.untyped(f"{kind}: HTTP {response.status_code} without a typed body")
                return
            if response.status_code == 429 and not response.headers.get("retry-after"):
                self.untyped(f"{kind}: 429 without Retry-After")
            self.note(kind, code)
            return
        try:
            decoder = FrameDecoder()
            frames = decoder.feed(response.content)
            decoder.close()
        except NitroLLMError:
            self.untyped(f"{kind}: undecodable frames")
            return
        if any(f.get("t") == "chunk" for f in frames):
            with self.lock:
                self.result.answered_hostile += 1
            self.note(kind, "ANSWERED")
        elif frames and frames[-1].get("t") == "error":
            self.note(kind, str(frames[-1].get("code")))
        else:
            self.untyped(f"{kind}: 200 without an error frame")

    def post(self, kind: str, body: bytes, token: str | None, client: httpx.Client) -> None:
        headers = {"content-type": "application/cbor"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        try:
            self.classify(kind, client.post(f"{self.url}/v1/infer", content=body, headers=headers))
        except httpx.HTTPError as exc:
            self.untyped(f"{kind}: {type(exc).__name__}")

    def captured_envelope(self) -> bytes | None:
        with self.lock:
            return self.rng.choice(self.captured) if self.captured else None

    # -- clients ---------------------------------------------------------------------------------
    def well_formed(self, token: str) -> None:
        conv = self.hs.conversation(token)
        history: list[Mapping[str, str]] = []
        turn = 0
        while self.running():
            started = time.monotonic()
            if turn == TURNS_PER_CONVERSATION:
                conv.close()
                conv, history, turn = self.hs.conversation(token), [], 0
            canary = new_canary()
            question = f"Patient {canary} asks about dose {self.rng.randrange(1000)} of warfarin."
            history.append({"role": "user", "content": question})
            try:
                answer = conv.ask(history, max_tokens=64)
                if answer != question:
                    raise AssertionError("the answer is not the echoed question")
            except (NitroLLMError, AssertionError) as exc:
                with self.lock:
                    self.result.well_formed_errors.append(getattr(exc, "code", type(exc).__name__))
                history.pop()
            else:
                history.append({"role": "assistant", "content": answer})
                with self.lock:
                    self.result.well_formed_ok += 1
                    self.result.canaries.append(canary)
                    self.captured.append(conv.last_wire.envelope)
                    del self.captured[:-CAPTURED_KEEP]
            turn += 1
            time.sleep(max(0.0, WELL_FORMED_INTERVAL - (time.monotonic() - started)))
        conv.close()

    def garbage(self, token: str) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running():
                self.post("garbage", self.rng.randbytes(self.rng.randrange(1, 2000)), token, client)
                time.sleep(0.02)

    def unauthenticated(self) -> None:
        forged = ["", "Bearer", "Bearer nlt_forged", "Basic dXNlcjpwYXNz", "Bearer " + "A" * 4000]
        with httpx.Client(timeout=30) as client:
            while self.running():
                auth = self.rng.choice(forged)
                headers = {"authorization": auth} if auth else {}
                try:
                    r = client.post(f"{self.url}/v1/infer", content=b"\xa1", headers=headers)
                    self.classify("unauthenticated", r)
                except httpx.HTTPError as exc:
                    self.untyped(f"unauthenticated: {type(exc).__name__}")
                time.sleep(0.02)

    def over_rate(self, token: str) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running():
                self.post("over_rate", b"\xa1\x61t\x61x", token, client)
                time.sleep(0.01)

    def oversize(self, token: str) -> None:
        """Bodies past the limit, declared (Content-Length) or not (chunked): the gateway must refuse
        with 413 and stop reading long before the 32 MiB this client is willing to send."""
        host, port = self.url.removeprefix("http://").split(":")
        while self.running():
            chunked = self.rng.random() < 0.5
            head = f"POST /v1/infer HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
            head += "transfer-encoding: chunked\r\n\r\n" if chunked else "content-length: 104857600\r\n\r\n"
            piece = b"x" * (1 << 20)
            frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            sent, reply = 0, b""
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                try:
                    sock.sendall(head.encode())
                    while sent < 32 << 20:
                        sock.sendall(frame)
                        sent += len(piece)
                except OSError:
                    pass  # cut off mid-body: the refusal we want
                try:
                    reply = sock.recv(4096)
                except OSError:
                    pass
            status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/1.1 ") else "cut"
            self.note("oversize", status)
            if sent >= 32 << 20 or status not in ("413", "cut"):
                self.untyped(f"oversize: {sent >> 20} MiB accepted, answer {status}")
            time.sleep(0.2)

    def slowloris(self) -> None:
        """Connections that dribble one header byte at a time: each must be closed (408) once the
        header deadline passes, while everyone else is served."""
        host, port = self.url.removeprefix("http://").split(":")
        limit = self.hs.header_timeout * 3 + 5
        while self.running():
            opened = time.monotonic()
            socks = [
                socket.create_connection((host, int(port)), timeout=5) for _ in range(SLOWLORIS_CONNECTIONS)
            ]
            for sock in socks:
                sock.sendall(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\n")
            closed: dict[int, float] = {}
            while len(closed) < len(socks) and time.monotonic() - opened < limit:
                for i, sock in enumerate(socks):
                    if i not in closed and not _still_open(sock):
                        closed[i] = time.monotonic() - opened
                time.sleep(0.3)
            for sock in socks:
                sock.close()
            with self.lock:
                self.result.slowloris_closed += len(closed)
                self.result.slowloris_max_seconds = max([self.result.slowloris_max_seconds, *closed.values()])
            if len(closed) < len(socks):
                self.untyped(f"slowloris: {len(socks) - len(closed)} connections held past {limit:.0f} s")
            self.note("slowloris", "closed" if len(closed) == len(socks) else "held")

    def replayer(self, token: str) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running():
                envelope = self.captured_envelope()
                if envelope is not None:
                    self.post("replay", envelope, token, client)
                time.sleep(0.05)

    def tamperer(self, token: str) -> None:
        """Captured requests, changed: a ciphertext bit flipped; the header re-stamped with a new
        request id (the AAD no longer matches); the encryption context swapped to another
        conversation (KMS must refuse to release the key under it)."""
        with httpx.Client(timeout=30) as client:
            while self.running():
                captured = self.captured_envelope()
                if captured is not None:
                    kind, envelope = self._tamper(captured)
                    self.post(kind, envelope, token, client)
                time.sleep(0.05)

    def _tamper(self, captured: bytes) -> tuple[str, bytes]:
        original = KmsEnvelope.from_cbor(captured)
        roll = self.rng.random()
        if roll < 0.45:
            ct = bytearray(original.ct)
            ct[self.rng.randrange(len(ct))] ^= 1 << self.rng.randrange(8)
            return "bit_flip", dataclasses.replace(original, ct=bytes(ct)).to_cbor()
        fresh = KmsHeader.new(
            model=original.header.model,
            conversation_id=original.header.conversation_id if roll < 0.9 else new_id(),
            key_id=original.header.key_id,
        )
        kind = "restamped_header" if roll < 0.9 else "swapped_context"
        return kind, dataclasses.replace(original, header=fresh).to_cbor()

    def stale(self, token: str) -> None:
        conv = self.hs.conversation(token)
        conv.seal([{"role": "user", "content": "warm up the data key"}])
        assert conv._data_key is not None
        with httpx.Client(timeout=30) as client:
            while self.running():
                skew = self.rng.choice([-1, 1]) * self.rng.randrange(130_000, 3_600_000)
                header = KmsHeader.new(
                    model="default",
                    conversation_id=conv.conversation_id,
                    key_id=conv.config.key_id,
                    now_ms=time.time_ns() // 1_000_000 + skew,
                )
                old: list[Mapping[str, str]] = [{"role": "user", "content": "old"}]
                envelope = seal_request(conv._data_key, header, chat_request(old), edk=conv._edk)
                self.post("stale", envelope.to_cbor(), token, client)
                time.sleep(0.05)
        conv.close()

    def health_flood(self) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running():
                path = self.rng.choice(["/healthz", "/v1/enclave/stats", "/metrics"])
                try:
                    r = client.get(f"{self.url}{path}")
                    if r.status_code != 200:
                        self.untyped(f"health_flood: {path} HTTP {r.status_code}")
                    elif path != "/metrics":
                        json.loads(r.content)
                    self.note("health_flood", str(r.status_code))
                except (httpx.HTTPError, ValueError) as exc:
                    self.untyped(f"health_flood: {type(exc).__name__}")
                time.sleep(0.01)


def run_load(hs: HostileStack, *, seconds: float, well_formed: int = 6, seed: int = 0) -> LoadResult:
    tokens = hs.issue_tokens(
        {
            **{f"well-formed-{i}": WELL_FORMED_LIMITS for i in range(well_formed)},
            "hostile-garbage": HOSTILE_LIMITS,
            "hostile-replay": HOSTILE_LIMITS,
            "hostile-tamper": HOSTILE_LIMITS,
            "hostile-stale": HOSTILE_LIMITS,
            "hostile-oversize": HOSTILE_LIMITS,
            "hostile-over-rate": OVER_RATE_LIMITS,
        }
    )
    run = _Run(hs, seconds, seed)
    workers: list[tuple[Callable[..., None], tuple[str, ...]]] = [
        *((run.well_formed, (tokens[f"well-formed-{i}"],)) for i in range(well_formed)),
        (run.garbage, (tokens["hostile-garbage"],)),
        (run.unauthenticated, ()),
        (run.over_rate, (tokens["hostile-over-rate"],)),
        (run.oversize, (tokens["hostile-oversize"],)),
        (run.slowloris, ()),
        (run.replayer, (tokens["hostile-replay"],)),
        (run.tamperer, (tokens["hostile-tamper"],)),
        (run.stale, (tokens["hostile-stale"],)),
        (run.health_flood, ()),
    ]
    errors: list[str] = []

    def guarded(target: Callable[..., None], args: tuple[str, ...]) -> None:
        try:
            target(*args)
        except Exception as exc:  # a client bug must fail the run, not vanish in a thread
            errors.append(f"{target.__name__}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=w, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    run.result.untyped.extend(f"client crashed: {e}" for e in errors)
    run.result.untyped.extend(f"{t.name} did not finish" for t in threads if t.is_alive())
    return run.result
