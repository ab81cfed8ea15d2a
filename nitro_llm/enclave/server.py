"""The enclave server: one connection per request, typed error frames, never down for a bad frame.

Requests arrive as frames from the gateway (docs/CONTRACTS.md, "frames"); each frame type has its
handler in one table, and an ``infer`` frame goes to the handler of the protocol it names (its
``"p"`` field, else its envelope's ``protocol`` field): "kms" or, when enabled, "attested"; any other
name is refused with ``unknown_protocol``. A "kms" request goes through: envelope schema -> model ->
freshness -> data key (cache, else KMS Decrypt with attestation) -> AES-GCM open -> request schema ->
replay claim; an "attested" one through enclave/attested_handler.py. Then both go to the engine's
scheduler (continuous batching, bounded queue; inference/scheduling.py) -> answer chunks sealed by
the one chunk sealer (protocol/chunks.py) under the protocol's key. Any failure becomes an
``{"t": "error"}`` frame carrying a code and a message without content, and the server goes on to
the next connection.

Conversations: both protocols hand the engine an opaque per-conversation cache key, derived here
from what only the conversation's client and this enclave hold (enclave/conversation_keys.py), so
that a turn prefills only what the conversation added and nothing is ever reused across
conversations, clients or protocols. The key's cells go when its secret goes: the data key leaving
``DataKeyCache`` (kms), the session being rotated (attested). A request sealed ``one_shot`` gets no
key, and in kms its data key is not cached: keeping either would cost settling the answer's cells
and holding a key for minutes, for a next turn its client has said will never come. The pong
counts hits, misses and prefilled tokens; never a key or any content.

Log lines carry request ids, sizes, counts and error codes only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.enclave.attested_handler import AttestedHandler
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.conversation_keys import kms_cache_key
from nitro_llm.enclave.data_keys import DataKeyCache
from nitro_llm.enclave.errors import InternalError, ModelNotServedError
from nitro_llm.enclave.fleet_key import FleetAttestedHandler
from nitro_llm.enclave.freshness import FreshnessGuard, now_ms
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.peer_watch import PeerWatch
from nitro_llm.enclave.seed_compat import SeedDisabledError, SeedHandler
from nitro_llm.errors import NitroLLMError
from nitro_llm.inference.engine import Engine
from nitro_llm.inference.scheduling import scheduled
from nitro_llm.inference.stops import stop_at
from nitro_llm.protocol import attested as attested_protocol
from nitro_llm.protocol import frame_kinds, kms_envelope
from nitro_llm.protocol.chunks import ChunkSealer
from nitro_llm.protocol.envelopes import envelope_protocol
from nitro_llm.protocol.errors import FrameError, UnknownProtocolError
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope, ResponseSealer, open_request
from nitro_llm.protocol.messages import ChatRequest, Message
from nitro_llm.transport.acceptor import ThreadedAcceptor

log = logging.getLogger(__name__)

DEFAULT_IO_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 32
GENERIC_MODEL = "default"


@dataclass
class _Connection:
    """One connection's request: its socket, and the request id its log lines may name."""

    sock: socket.socket
    request_id: str = "-"


@dataclass(frozen=True)
class _Opened:
    """An ``infer`` request its protocol opened: what to answer, and the sealer for the answer."""

    request: ChatRequest
    sealer: ChunkSealer
    request_id: str
    cache_key: bytes | None = field(default=None, repr=False)  # its conversation's, or None


#: A fleet replica answers none of these until it holds the fleet key (enclave/fleet_key.py).
_NEEDS_FLEET_KEY = frozenset({"attest", "infer", "seed"})

_CACHE_STAT_NAMES = {"prefill_tokens": "prefilled_tokens"}

_FrameHandler = Callable[[_Connection, Mapping[str, Any]], None]
_ProtocolHandler = Callable[[_Connection, bytes], _Opened]


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
        attested: AttestedHandler | FleetAttestedHandler | None = None,
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
            capacity=config.data_key_cache_size,
            ttl_seconds=config.data_key_ttl_seconds,
            on_drop=self._forget_kms_conversation,
        )
        if attested is not None:
            attested.evict_with(self._engine.evict)
        self._threads = config.inference_threads()
        self._io_timeout = io_timeout
        self._max_connections = max_connections
        self._stop = threading.Event()
        self._peers = PeerWatch(self._stop)  # cancels a request whose gateway connection closed
        self._acceptor: ThreadedAcceptor | None = None
        self._started = time.monotonic()
        self._counters_lock = threading.Lock()
        self._counters = {"requests": 0, "answered": 0, "errors": 0, "data_key_cache_hits": 0}
        self._frame_handlers: dict[str, _FrameHandler] = {
            "ping": self._on_ping,
            "credentials": self._on_credentials,
            "seed": self._on_seed,
            "infer": self._on_infer,
        }
        self._protocols: dict[str, _ProtocolHandler] = {kms_envelope.PROTOCOL: self._open_kms}
        if attested is not None:
            self._frame_handlers["attest"] = self._on_attest
            self._protocols[attested_protocol.PROTOCOL] = self._open_attested
        self._fleet = attested if isinstance(attested, FleetAttestedHandler) else None
        if self._fleet is not None:
            self._frame_handlers["fleet_keys"] = self._on_fleet_keys

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
            "threads": self._threads,
            "has_credentials": self._keys.has_credentials,
            "kms_decrypt_calls": self._keys.decrypt_calls,
            **counters,
            **self._conversation_stats(),
            "queued": queued,
            "uptime_seconds": int(time.monotonic() - self._started),
            "pcrs": self._pcrs,
            "debug_mode": self._config.debug_mode,
            "hardening": self._hardening,
            **({"fleet_key": self._fleet.status()} if self._fleet is not None else {}),
        }

    def _conversation_stats(self) -> dict[str, int]:
        """The engine's conversation-cache counters, named for the pong (empty for engines that keep
        no conversations): hits, misses, prompt tokens reused and prefilled, conversations held."""
        return {
            _CACHE_STAT_NAMES.get(name, f"kv_cache_{name}"): value
            for name, value in self._engine.cache_stats().items()
        }

    # -- one connection ------------------------------------------------------------------------
    def handle_connection(self, conn: socket.socket) -> None:
        conn.settimeout(self._io_timeout)
        connection = _Connection(conn)
        try:
            frame = read_frame(conn, max_size=self._config.max_frame_size)
            if frame is None:
                return
            handler = self._frame_handlers.get(frame["t"])
            if handler is None:
                raise FrameError(
                    "unknown frame type", hint=f"send one of: {', '.join(sorted(self._frame_handlers))}"
                )
            if self._fleet is not None and frame["t"] in _NEEDS_FLEET_KEY:
                self._fleet.require_ready()
            handler(connection, frame)
        except _PeerGone:
            log.info("request=%s peer_gone", connection.request_id)
            self._count("errors")
        except NitroLLMError as exc:
            log.info("request=%s error=%s", connection.request_id, exc.code)
            self._count("errors")
            self._send_quietly(conn, frame_kinds.error_frame(exc))
        except Exception as exc:  # a bug: report it without its details, keep serving
            log.warning("request=%s internal_error type=%s", connection.request_id, type(exc).__name__)
            self._count("errors")
            self._send_quietly(
                conn, frame_kinds.error_frame(InternalError("the enclave failed to handle the request"))
            )

    # -- the frame handlers (one per frame type) -----------------------------------------------
    def _on_ping(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        frame_kinds.read_ping(frame)
        self._send(connection.sock, frame_kinds.pong_frame(**self.stats()))

    def _on_credentials(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        self._keys.set_credentials(frame_kinds.read_credentials(frame))
        log.info("credentials received")
        self._send(connection.sock, frame_kinds.ok_frame())

    def _on_seed(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        if self._seed is None:
            raise SeedDisabledError("this enclave does not accept the seed's wire format")
        body = frame.get("body")
        if set(frame) != {"t", "body"} or not isinstance(body, bytes):
            raise FrameError("a seed frame has exactly 't' and 'body' (bytes)")
        self._count("requests")
        self._send(connection.sock, self._seed.handle(body, self.complete_text))
        self._count("answered")

    def _on_attest(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        assert self._attested is not None  # registered only with the attested protocol
        self._send(connection.sock, self._attested.attest(frame))

    def _on_fleet_keys(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        assert self._fleet is not None  # registered only for a fleet replica
        self._send(connection.sock, self._fleet.install(frame))

    def _on_infer(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        """Hand the envelope to the protocol the frame (or, failing that, the envelope) names."""
        raw, started = frame_kinds.read_infer(frame), time.monotonic()
        name = frame_kinds.read_infer_protocol(frame) or envelope_protocol(raw)
        protocol = self._protocols.get(name)
        if protocol is None:
            raise UnknownProtocolError(
                "the request names a protocol this enclave does not speak",
                hint=f"seal the request with one of: {', '.join(sorted(self._protocols))}",
            )
        self._count("requests")
        opened = protocol(connection, raw)
        self._answer(connection.sock, opened, len(raw), started)
        self._count("answered")

    # -- the protocol handlers (one per protocol an infer frame may name) ----------------------
    def _open_kms(self, connection: _Connection, raw: bytes) -> _Opened:
        envelope = KmsEnvelope.from_cbor(raw)
        header = envelope.header
        connection.request_id = header.request_id
        if header.model not in (GENERIC_MODEL, self._engine.name):
            raise ModelNotServedError(
                f"request {header.request_id} asks for a model this enclave does not serve"
            )
        self._freshness.check_fresh(header.request_id, header.timestamp)
        data_key = self._data_keys.get(envelope.edk, header.conversation_id)
        cached = data_key is not None
        if data_key is None:
            data_key = self._keys.decrypt(
                envelope.edk, header.encryption_context(), request_id=header.request_id, key_id=header.key_id
            )
        else:
            self._count("data_key_cache_hits")
        # Whether the key is worth keeping is sealed in the request, so it is decided once it is open.
        request = ChatRequest.from_dict(open_request(data_key, envelope))
        self._freshness.claim(header.request_id, header.timestamp)
        if request.one_shot:
            # No turn follows: the key is not cached (it goes with this request; the answer's sealer
            # holds only the key derived from it) and the engine keeps no cells, even for a
            # conversation whose earlier turns are kept: those stay as they are.
            kept = False
        elif cached:
            kept = True
        else:
            kept = self._data_keys.put(envelope.edk, header.conversation_id, data_key)
        # Only a conversation whose data key the cache holds keeps cells: their lifetime is the key's.
        cache_key = kms_cache_key(data_key, header.conversation_id) if kept else None
        return _Opened(request, ResponseSealer(data_key, header), header.request_id, cache_key)

    def _forget_kms_conversation(self, data_key: bytes, conversation_id: str) -> None:
        """``DataKeyCache`` dropped a conversation's data key: its KV cells go with it."""
        self._engine.evict(kms_cache_key(data_key, conversation_id))

    def _open_attested(self, connection: _Connection, raw: bytes) -> _Opened:
        assert self._attested is not None  # registered only with the attested protocol
        turn = self._attested.open(raw, self._freshness)
        opened = turn.opened
        connection.request_id = opened.request_id
        return _Opened(opened.request, opened.response_sealer(), opened.request_id, turn.cache_key)

    def _answer(self, conn: socket.socket, opened: _Opened, size: int, started: float) -> None:
        """Generate through the scheduler and send each piece sealed as it comes (either protocol)."""
        request, sealer, chunks = opened.request, opened.sealer, 0
        with self._peers.watching(conn) as cancel:
            tokens = self._engine.generate(
                request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                cancel=cancel,
                cache_key=opened.cache_key,
            )
            tokens = stop_at(tokens, request.stop)  # the request's stop strings: applied here, never sent
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
            opened.request_id,
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
