"""The emulator's HTTP front: AWS's JSON 1.1 protocol on ``POST /`` over a threaded stdlib server.

``X-Amz-Target: TrentService.<Operation>`` names the operation, the body is JSON, answers are
``application/x-amz-json-1.1`` and faults are ``{"__type": "...Exception", "message": ...}`` with
AWS's status codes, so botocore parses them into the same exception classes as AWS's. Every request
is authenticated with SigV4 before its body is even parsed.

One log line per request names the operation, the caller's ARN, the key id and the outcome; it
never holds plaintext, data keys, blobs, attestation documents or credentials.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from nitro_llm.kms.errors import (
    KmsApiError,
    KmsInternalError,
    SerializationFailed,
    UnknownOperation,
    ValidationFailed,
)
from nitro_llm_dev.kms_emulator.keystore import KeyStore
from nitro_llm_dev.kms_emulator.operations import Audit, KmsService
from nitro_llm_dev.kms_emulator.principals import Principal, Principals, load_or_issue, rotate_session
from nitro_llm_dev.kms_emulator.recipient import MAX_DOCUMENT_AGE, RecipientVerifier
from nitro_llm_dev.kms_emulator.sigv4 import verify_request
from nitro_llm_dev.kms_emulator.storage import StateLock, prepare_state_dir

log = logging.getLogger("nitro_llm_dev.kms_emulator")

TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 1 << 20
MAX_CONNECTIONS = 64
SOCKET_TIMEOUT_S = 30


@dataclass
class EmulatorConfig:
    state_dir: Path
    region: str = "us-east-1"
    host: str = "127.0.0.1"
    port: int = 0
    trust_roots: list[x509.Certificate] | None = None
    """``None`` trusts only the AWS Nitro root, as AWS KMS does."""
    attestation_max_age: timedelta = field(default=MAX_DOCUMENT_AGE)
    session_lifetime: timedelta | None = None
    """The enclave role's session credentials expire this long after they are issued (None: never).
    ``EmulatorServer.rotate_session_credentials`` issues the next set."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The emulator's notion of now for request signatures and session expiry (a test moves it)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nitro-llm-kms-emulator"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S
    server: _HttpServer

    def do_POST(self) -> None:
        started = time.monotonic()
        operation = "-"
        caller: Principal | None = None
        audit = Audit()
        try:
            body = self._read_body()
            operation = self._operation()
            caller = verify_request(
                method="POST",
                target=self.path,
                headers=self._header_lists(),
                body=body,
                principals=self.server.emulator.principals,
                now=self.server.emulator.config.clock(),
            )
            params = _parse_json(body)
            answer = self.server.emulator.service.call(operation, caller, params, audit)
            self._send(200, answer)
            outcome, status = "ok", 200
        except KmsApiError as exc:
            self._send_error(exc)
            outcome, status = exc.aws_type, exc.status
        except Exception as exc:  # one bad request never takes the emulator down
            log.error("internal error in %s: %s", operation, type(exc).__name__, exc_info=False)
            fault = KmsInternalError("The request processing has failed because of an unknown error.")
            self._send_error(fault)
            outcome, status = fault.aws_type, fault.status
        attested = f" attested_pcr0={audit.attested_pcr0}..." if audit.attested_pcr0 else ""
        log.info(
            "request op=%s principal=%s key=%s outcome=%s status=%d ms=%.1f%s",
            operation,
            caller.arn if caller else "-",
            audit.key_id,
            outcome,
            status,
            (time.monotonic() - started) * 1000,
            attested,
        )

    def do_GET(self) -> None:
        self._reject()

    def do_PUT(self) -> None:
        self._reject()

    def do_DELETE(self) -> None:
        self._reject()

    def _reject(self) -> None:
        self.close_connection = True
        self._send_error(
            UnknownOperation("", hint="KMS is POST / with X-Amz-Target: TrentService.<Operation>")
        )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise SerializationFailed("Chunked request bodies are not supported; send Content-Length.")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise SerializationFailed("Content-Length is not a number.") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise ValidationFailed(f"The request body must be at most {MAX_BODY} bytes.")
        return self.rfile.read(length)

    def _operation(self) -> str:
        target = self.headers.get("X-Amz-Target", "")
        if not target.startswith(TARGET_PREFIX) or len(target) > 128:
            raise UnknownOperation("", hint="set X-Amz-Target: TrentService.<Operation>")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in (CONTENT_TYPE, "application/x-amz-json-1.0"):
            raise SerializationFailed(f"Content-Type must be {CONTENT_TYPE}.")
        return target[len(TARGET_PREFIX) :]

    def _header_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            out.setdefault(name.lower(), []).append(value)
        return out

    def _send_error(self, exc: KmsApiError) -> None:
        payload: dict[str, Any] = {"__type": exc.aws_type}
        if exc.message:
            payload["message"] = exc.message
        self._send(exc.status, payload)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the caller went away; nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except (ValueError, RecursionError):
        raise SerializationFailed("The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SerializationFailed("The request body must be a JSON object.")
    return params


class _HttpServer(ThreadingHTTPServer):
    """Threaded, with a bound on concurrent connections: the accept loop waits when all are busy."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


class EmulatorServer:
    """State, service and HTTP server of one emulator; owns the state directory's lock."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        state_dir = prepare_state_dir(config.state_dir)
        self._lock = StateLock(state_dir)
        self._lock.acquire()
        try:
            self.principals: Principals = load_or_issue(
                state_dir, config.region, session_lifetime=config.session_lifetime, now=config.clock()
            )
            self._state_dir = state_dir
            store = KeyStore(state_dir, self.principals.account, config.region)
            verifier = RecipientVerifier(config.trust_roots, max_age=config.attestation_max_age)
            self.service = KmsService(store, self.principals, verifier)
            self._http = _HttpServer((config.host, config.port), self)
        except BaseException:
            self._lock.release()
            raise
        self._thread: threading.Thread | None = None

    def rotate_session_credentials(self, lifetime: timedelta | None = None) -> Principal:
        """The enclave role's next session credentials, valid from the emulator's now for ``lifetime``
        (default: the configured session lifetime, else one hour); written to ``credentials.json``.
        The previous ones keep working until their own expiration."""
        lifetime = lifetime or self.config.session_lifetime or timedelta(hours=1)
        return rotate_session(self._state_dir, self.principals, now=self.config.clock(), lifetime=lifetime)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def serve_forever(self) -> None:
        self._http.serve_forever(poll_interval=0.2)

    def start(self) -> EmulatorServer:
        """Serve from a background thread (for in-process use; the CLI runs serve_forever)."""
        self._thread = threading.Thread(target=self.serve_forever, name="kms-emulator", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._http.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self._http.server_close()
        self._lock.release()

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.shutdown()
        else:
            self.close()
