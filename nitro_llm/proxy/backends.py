"""The two real backends behind the proxy: "kms" and "attested".

``KmsBackend`` wraps :class:`~nitro_llm.client.kms_conversation.KmsConversation`: one conversation
(one data key, one conversation id) per request, so that separate chats going through one proxy
cannot be linked by the gateway; the HTTP and KMS clients are shared to keep that cheap.

``AttestedBackend`` verifies the enclave itself before sealing anything: it fetches
``GET /v1/attestation`` with a fresh nonce, checks it with :func:`verify_attestation` against the
user's policy, caches the verified session until its leaf certificate expires, seals each request
to that session's HPKE key and opens the padded answer chunks strictly in order. When verification
fails nothing is sent, and ``describe()`` says why (the web chat turns red).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from nitro_llm.client.attested_verify import (
    VerifiedEnclave,
    VerifiedEnclaveCache,
    new_nonce,
    verify_attestation,
)
from nitro_llm.client.config import ClientConfig
from nitro_llm.client.errors import GatewayUnreachable, RemoteError
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested import decode_attestation_bundle, seal_request
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.framing import FrameDecoder
from nitro_llm.protocol.hpke_suite import DEFAULT_SUITE
from nitro_llm.protocol.messages import chat_request
from nitro_llm.proxy.backend import BackendChunk

FRAMES_MEDIA_TYPE = "application/x-nitro-llm-frames"
CBOR_MEDIA_TYPE = "application/cbor"
MAX_BUNDLE_BYTES = 128 * 1024


class KmsBackend:
    """The "kms" protocol: KMS's key policy, not this machine, checks the enclave's attestation."""

    protocol = "kms"

    def __init__(
        self,
        config: ClientConfig,
        *,
        http: httpx.Client | None = None,
        kms: Any = None,
        model_id: str | None = None,
    ) -> None:
        self.config = config
        self.model_id = model_id or config.model
        self._http = http
        self._kms = kms
        self._lock = threading.Lock()

    def _clients(self) -> tuple[httpx.Client, Any]:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
            if self._kms is None:
                from nitro_llm.kms.client import make_kms_client

                self._kms = make_kms_client(
                    self.config.kms_endpoint, self.config.credentials, self.config.region
                )
            return self._http, self._kms

    def stream(
        self, messages: list[Mapping[str, str]], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Iterator[BackendChunk]:
        from nitro_llm.client.kms_conversation import KmsConversation

        http, kms = self._clients()
        conversation = KmsConversation(self.config, http=http, kms=kms)
        for chunk in conversation.stream(messages, max_tokens=max_tokens, temperature=temperature, seed=seed):
            if chunk.final:
                yield BackendChunk(chunk.text, chunk.finish_reason or "stop", _usage(chunk.usage))
            else:
                yield BackendChunk(chunk.text)

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "kms",
            "verified": True,
            "verified_by": "KMS key policy (kms:RecipientAttestation PCR conditions)",
            "failure_reason": None,
            "pcrs": {},
            "model_digest": None,
            "verified_at": None,
            "gateway": self.config.gateway_url,
            "note": (
                "In the kms protocol AWS KMS releases the data key only to an enclave whose attestation "
                "matches the key policy; this machine does not see the attestation. "
                "Start the proxy with --protocol attested to verify the enclave here."
            ),
        }

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class AttestedBackend:
    """The "attested" protocol: verify the enclave here, then HPKE-seal to the key it attested."""

    protocol = "attested"

    def __init__(
        self,
        gateway_url: str,
        policy: ClientPolicy,
        *,
        suite: str = DEFAULT_SUITE,
        model_id: str = "default",
        http: httpx.Client | None = None,
        cache: VerifiedEnclaveCache | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if suite not in policy.accepted_suites:
            raise ValueError(f"the policy does not accept the {suite} suite")
        self.gateway_url = gateway_url.rstrip("/")
        self.policy = policy
        self.suite = suite
        self.model_id = model_id
        self._http = http or httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
        self._cache = cache or VerifiedEnclaveCache(clock=clock)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._failure: NitroLLMError | None = None

    # --- verification ------------------------------------------------------------------------

    def verify(self, *, refresh: bool = False) -> VerifiedEnclave:
        """The verified session to seal to: cached, or fetched and verified now. Raises if refused."""
        with self._lock:
            if not refresh and (cached := self._cache.current(self.suite)) is not None:
                return cached
            try:
                enclave = self._fetch_and_verify()
            except NitroLLMError as exc:
                self._failure = exc
                raise
            self._failure = None
            self._cache.put(enclave)
            return enclave

    def _fetch_and_verify(self) -> VerifiedEnclave:
        nonce = new_nonce()
        url = f"{self.gateway_url}/v1/attestation"
        try:
            response = self._http.get(
                url, params={"nonce": nonce.hex(), "suite": self.suite}, headers={"accept": CBOR_MEDIA_TYPE}
            )
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"lost the gateway at {self.gateway_url} ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise _remote_error(response)
        if len(response.content) > MAX_BUNDLE_BYTES:
            raise RemoteError("attestation_too_large", "the attestation answer is implausibly large")
        document, descriptor = decode_attestation_bundle(response.content)
        return verify_attestation(document, descriptor, nonce, self.policy, at=self._clock())

    # --- answering ---------------------------------------------------------------------------

    def stream(
        self, messages: list[Mapping[str, str]], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Iterator[BackendChunk]:
        request = chat_request(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        enclave = self.verify()
        answered = False
        try:
            for chunk in self._exchange(enclave, request):
                answered = True
                yield chunk
        except UnknownDescriptorError:
            if answered:
                raise
            # The enclave rotated its key or restarted and refused the request before answering:
            # forget the old session, verify the new one, and send once more.
            self._cache.forget(enclave.descriptor_hash)
            yield from self._exchange(self.verify(refresh=True), request)

    def _exchange(self, enclave: VerifiedEnclave, request: Any) -> Iterator[BackendChunk]:
        sealed = seal_request(enclave.descriptor, request)
        opener = sealed.response_opener()
        decoder = FrameDecoder()
        try:
            with self._http.stream(
                "POST",
                f"{self.gateway_url}/v1/infer",
                content=sealed.envelope.to_cbor(),
                headers={"content-type": CBOR_MEDIA_TYPE, "accept": FRAMES_MEDIA_TYPE},
            ) as response:
                if response.status_code != 200:
                    raise _remote_error(response)
                for piece in response.iter_bytes():
                    for frame in decoder.feed(piece):
                        if frame.get("t") == "error":
                            raise _frame_error(frame)
                        payload = opener.open(frame)
                        if opener.finished:
                            reason = payload.get("finish_reason") or "stop"
                            yield BackendChunk(payload["text"], reason, _usage(payload.get("usage")))
                        else:
                            yield BackendChunk(payload["text"])
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"lost the gateway at {self.gateway_url} ({type(exc).__name__})"
            ) from None
        decoder.close()
        opener.finish()

    def describe(self) -> dict[str, Any]:
        """What the web chat shows; verifies first if nothing is verified yet (so it is never stale)."""
        try:
            enclave = self.verify()
        except NitroLLMError as exc:
            return {
                "protocol": "attested",
                "verified": False,
                "verified_by": "this machine (client policy)",
                "failure_reason": f"[{exc.code}] {exc.message}",
                "pcrs": {},
                "model_digest": None,
                "verified_at": None,
                "gateway": self.gateway_url,
                "unsafe": self.policy.unsafe_reasons(),
            }
        return {
            **enclave.describe(),
            "verified_by": "this machine (client policy)",
            "failure_reason": None,
            "gateway": self.gateway_url,
        }

    def close(self) -> None:
        self._http.close()


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not isinstance(usage, Mapping):
        return None
    return {
        k: v
        for k, v in usage.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }


def _frame_error(frame: Mapping[str, Any]) -> NitroLLMError:
    code = str(frame.get("code", "remote_error"))
    message = str(frame.get("message", "the enclave refused the request"))
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    return RemoteError(code, message, str(frame.get("hint", "")), bool(frame.get("retryable", False)))


def _remote_error(response: httpx.Response) -> NitroLLMError:
    response.read()
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = str(data.get("code", f"http_{response.status_code}"))
    message = str(data.get("message", f"the gateway answered HTTP {response.status_code}"))
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    retryable = bool(data.get("retryable", response.status_code in (429, 503, 504)))
    return RemoteError(code, message, str(data.get("hint", "")), retryable)
