"""The enclave server: one connection per request, typed error frames, never down for a bad frame.

Requests arrive as frames from the gateway (docs/CONTRACTS.md, "frames"). An ``infer`` request goes
through: envelope schema -> model -> freshness -> data key (cache, else KMS Decrypt with
attestation) -> AES-GCM open -> request schema -> replay claim -> the engine's scheduler
(continuous batching, bounded queue; inference/scheduling.py) -> sealed answer chunks. Any
failure becomes an ``{"t": "error"}`` frame carrying a code and a message without content, and
the server goes on to the next connection.

Log lines carry request ids, sizes, counts and error codes only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from nitro_llm.enclave.attested_handler import AttestedHandler
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.data_keys import DataKeyCache
from nitro_llm.enclave.errors import InternalError, ModelNotServedError
from nitro_llm.enclave.freshness import FreshnessGuard, now_ms
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.peer_watch import PeerWatch
from nitro_llm.enclave.seed_compat import SeedDisabledError, SeedHandler
from nitro_llm.errors import NitroLLMError
from nitro_llm.inference.engine import Engine
from nitro_llm.inference.scheduling import scheduled
from nitro_llm.protocol import frames
from nitro_llm.protocol.errors import FrameError
from nitro_llm.protocol.framing import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope, ResponseSealer, open_request
from nitro_llm.protocol.messages import ChatRequest, Message
from nitro_llm.transport.acceptor import ThreadedAcceptor

log = logging.getLogger(__name__)

DEFAULT_IO_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 32
GENERIC_MODEL = "default"


class _Sealer(Protocol):
    """The answer sealer of either protocol (kms_envelope.ResponseSealer, attested.ResponseSealer)."""

    def seal(self, content: str | Mapping[str, Any], final: bool = False) -> dict[str, Any]: ...


class _PeerGone(Exception):
    """The gateway stopped reading; nothing more can be sent on this connection."""


class EnclaveServer:
    def __init__(
        self,
        *,
        engine: Engine,
        key_release: KeyRelease,
        config: EnclaveConfig,
        pcrs: Mapping[int, bytes] | None = None,
        clock_ms: Callable[[], int] = now_ms,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        seed: SeedHandler | None = None,
        attested: AttestedHandler | None = None,
        hardening: Mapping[str, Any] | None = None,
    ) -> None:
        self._hardening = dict(hardening or {})  # what the OS granted (enclave.hardening), for pong
        self._seed = seed
        self._attested = attested
        self._engine = scheduled(engine, max_waiting=config.max_waiting)  # batching, or one at a time
        self._keys = key_release
        self._config = config
        self._pcrs = {str(i): v.hex() for i, v in sorted((pcrs or {}).items())}
        self._freshness = FreshnessGuard(
            window_seconds=config.freshness_window_seconds, capacity=config.replay_capacity, clock_ms=clock_ms
        )
        self._data_keys = DataKeyCache(
            capacity=config.data_key_cache_size, ttl_seconds=config.data_key_ttl_seconds
        )
        self._io_timeout = io_timeout
        self._max_connections = max_connections
        self._stop = threading.Event()
        self._peers = PeerWatch(self._stop)  # cancels a request whose gateway connection closed
        self._acceptor: ThreadedAcceptor | None = None
        self._started = time.monotonic()
        self._counters_lock = threading.Lock()
        self._counters = {"requests": 0, "answered": 0, "errors": 0, "data_key_cache_hits": 0}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, listener: socket.socket) -> None:
        self._acceptor = ThreadedAcceptor(
            listener, self.handle_connection, max_connections=self._max_connections, name="enclave"
        )
        self._acceptor.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()  # also cancels a generation in progress
        if self._acceptor is not None:
            self._acceptor.stop_accepting(timeout)
            self._acceptor.join(timeout)
        self._engine.close()

    def stats(self) -> dict[str, Any]:
        with self._counters_lock:
            counters = dict(self._counters)
        queued = self._engine.queued
        return {
            "model": self._engine.name,
            "engine": self._config.engine,
            "has_credentials": self._keys.has_credentials,
            "kms_decrypt_calls": self._keys.decrypt_calls,
            **counters,
            "queued": queued,
            "uptime_seconds": int(time.monotonic() - self._started),
            "pcrs": self._pcrs,
            "debug_mode": self._config.debug_mode,
            "hardening": self._hardening,
        }

    # -- one connection ------------------------------------------------------------------------
    def handle_connection(self, conn: socket.socket) -> None:
        conn.settimeout(self._io_timeout)
        request_id = "-"
        try:
            frame = read_frame(conn, max_size=self._config.max_frame_size)
            if frame is None:
                return
            kind = frame["t"]
            if kind == "ping":
                frames.read_ping(frame)
                self._send(conn, frames.pong_frame(**self.stats()))
            elif kind == "credentials":
                self._keys.set_credentials(frames.read_credentials(frame))
                log.info("credentials received")
                self._send(conn, frames.ok_frame())
            elif kind == "seed":
                if self._seed is None:
                    raise SeedDisabledError("this enclave does not accept the seed's wire format")
                body = frame.get("body")
                if set(frame) != {"t", "body"} or not isinstance(body, bytes):
                    raise FrameError("a seed frame has exactly 't' and 'body' (bytes)")
                self._count("requests")
                self._send(conn, self._seed.handle(body, self.complete_text))
                self._count("answered")
            elif kind == "attest" and self._attested is not None:
                self._send(conn, self._attested.attest(frame))
            elif kind == "infer" and self._attested is not None and self._attested.claims(frame):
                raw, started = frames.read_infer(frame), time.monotonic()
                self._count("requests")
                opened = self._attested.open(raw, self._freshness)
                request_id = opened.request_id
                self._answer(conn, opened.request, opened.response_sealer(), request_id, len(raw), started)
                self._count("answered")
            elif kind == "infer":
                raw = frames.read_infer(frame)
                envelope = KmsEnvelope.from_cbor(raw)
                request_id = envelope.header.request_id
                self._count("requests")
                self._infer(conn, envelope, len(raw))
                self._count("answered")
            else:
                raise FrameError("unknown frame type", hint="send one of: infer, attest, credentials, ping")
        except _PeerGone:
            log.info("request=%s peer_gone", request_id)
            self._count("errors")
        except NitroLLMError as exc:
            log.info("request=%s error=%s", request_id, exc.code)
            self._count("errors")
            self._send_quietly(conn, frames.error_frame(exc))
        except Exception as exc:  # a bug: report it without its details, keep serving
            log.warning("request=%s internal_error type=%s", request_id, type(exc).__name__)
            self._count("errors")
            self._send_quietly(
                conn, frames.error_frame(InternalError("the enclave failed to handle the request"))
            )

    def _infer(self, conn: socket.socket, envelope: KmsEnvelope, size: int) -> None:
        header = envelope.header
        started = time.monotonic()
        if header.model not in (GENERIC_MODEL, self._engine.name):
            raise ModelNotServedError(
                f"request {header.request_id} asks for a model this enclave does not serve"
            )
        self._freshness.check_fresh(header.request_id, header.timestamp)
        data_key = self._data_keys.get(envelope.edk, header.conversation_id)
        if data_key is None:
            data_key = self._keys.decrypt(
                envelope.edk, header.encryption_context(), request_id=header.request_id
            )
            self._data_keys.put(envelope.edk, header.conversation_id, data_key)
        else:
            self._count("data_key_cache_hits")
        request = ChatRequest.from_dict(open_request(data_key, envelope))
        self._freshness.claim(header.request_id, header.timestamp)
        self._answer(conn, request, ResponseSealer(data_key, header), header.request_id, size, started)

    def _answer(
        self,
        conn: socket.socket,
        request: ChatRequest,
        sealer: _Sealer,
        request_id: str,
        size: int,
        started: float,
    ) -> None:
        """Generate through the scheduler and send each piece sealed as it comes (either protocol)."""
        chunks = 0
        with self._peers.watching(conn) as cancel:
            tokens = self._engine.generate(
                request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                cancel=cancel,
            )
            try:
                for chunk in tokens:
                    if chunk.final:
                        payload = {
                            "text": chunk.text,
                            "finish_reason": chunk.finish_reason,
                            "usage": chunk.usage.to_dict() if chunk.usage else {},
                        }
                        self._send(conn, sealer.seal(payload, final=True))
                    else:
                        self._send(conn, sealer.seal(chunk.text))
                    chunks += 1
            finally:
                close = getattr(tokens, "close", None)
                if close is not None:
                    close()  # stops the engine if we left early (peer gone, stop)
        log.info(
            "request=%s answered envelope_bytes=%d messages=%d chunks=%d seconds=%.2f",
            request_id,
            size,
            len(request.messages),
            chunks,
            time.monotonic() - started,
        )

    def complete_text(self, messages: Sequence[Message], max_tokens: int, request_id: str) -> str:
        """A whole answer, greedy, through the same scheduler as streamed requests (seed route)."""
        chunks = self._engine.generate(
            messages, max_tokens=max_tokens, temperature=0.0, seed=None, cancel=self._stop
        )
        return "".join(chunk.text for chunk in chunks)

    # -- sending -------------------------------------------------------------------------------
    def _send(self, conn: socket.socket, frame: dict[str, Any]) -> None:
        data = encode_frame(frame, max_size=self._config.max_frame_size)
        try:
            conn.sendall(data)
        except OSError:  # includes timeouts: a gateway that stopped reading must not hold the model
            raise _PeerGone from None

    def _send_quietly(self, conn: socket.socket, frame: dict[str, Any]) -> None:
        with contextlib.suppress(_PeerGone, NitroLLMError):
            self._send(conn, frame)

    def _count(self, name: str) -> None:
        with self._counters_lock:
            self._counters[name] += 1
