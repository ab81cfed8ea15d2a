"""Gateway access control on a real server: tokens (401), per-client rate and concurrency (429 with
Retry-After), bodies refused before they are read in full (413), bodies that never finish (408).
Time that has to pass (token buckets, the tokens file's reload check) passes on the gateway's fake
clock; a request that has to be in flight is held by a scripted link until released."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest
from gateway_fakes import ScriptedLink

from nitro_llm.errors import ConfigError
from nitro_llm.gateway.auth import (
    ANONYMOUS,
    RELOAD_CHECK_SECONDS,
    Client,
    ClientLimits,
    TokenRegistry,
    add_client,
    parse_tokens,
)
from nitro_llm.gateway.ratelimit import Limiter, RateLimited, TokenBucket, TooManyConcurrent
from nitro_llm.protocol.frame_codec import FrameDecoder


def infer(gw, token=None, body=b"sealed-envelope", **kw):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{gw.url}/v1/infer", content=body, headers=headers, timeout=30, **kw)


def frames_of(body: bytes) -> list[dict]:
    decoder = FrameDecoder()
    out = decoder.feed(body)
    decoder.close()
    return out


# -- tokens ------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_never_reach_the_enclave(gateway, enclave_peer, issue):
    token = issue("clinic-a")
    gw = gateway()
    for auth in (
        None,
        "",
        "Bearer",
        "Bearer nlt_guess",
        "Basic Y2xpbmljOmE=",
        f"Bearer {token}x",
        "Bearer " + "A" * 300,
    ):
        headers = {"authorization": auth} if auth is not None else {}
        r = httpx.post(f"{gw.url}/v1/infer", content=b"sealed", headers=headers, timeout=10)
        assert r.status_code == 401, auth
        assert r.json()["code"] == "unauthorized" and r.json()["hint"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert enclave_peer.infer_count() == 0
    r = infer(gw, token)
    assert r.status_code == 200 and [f["seq"] for f in frames_of(r.content)] == [0, 1, 2]
    assert enclave_peer.infer_count() == 1


def test_health_and_stats_need_no_token_but_attestation_does(gateway, issue):
    issue("clinic-a")
    gw = gateway()
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{gw.url}/v1/enclave/stats", timeout=10).status_code == 200
    assert httpx.get(f"{gw.url}/v1/attestation?nonce=" + "00" * 16, timeout=10).status_code == 401


def test_without_a_tokens_file_the_gateway_is_open(gateway):
    gw = gateway(tokens=False)
    assert infer(gw).status_code == 200


def test_token_never_appears_in_logs_or_answers(gateway, issue, caplog):
    token = issue("clinic-a")
    gw = gateway()
    with caplog.at_level(logging.DEBUG):
        ok = infer(gw, token)
        bad = infer(gw, token[:-2] + "zz")
    assert ok.status_code == 200 and bad.status_code == 401
    assert token not in caplog.text and token[:-2] not in bad.text
    assert "clinic-a" not in bad.text


def test_revoked_token_is_refused_without_a_restart(gateway, issue):
    old = issue("clinic-a")
    gw = gateway()
    assert infer(gw, old).status_code == 200
    new = issue("clinic-a")  # re-issuing replaces (revokes) the old token
    gw.clock.advance(RELOAD_CHECK_SECONDS)  # the gateway looks at the file again
    assert infer(gw, old).status_code == 401, "the revoked token still works"
    assert infer(gw, new).status_code == 200


def test_tokens_file_is_strict_and_keeps_only_digests(tokens_file):
    token = add_client(tokens_file, "clinic-a", ClientLimits(rate_per_second=2, burst=3, max_concurrent=1))
    data = json.loads(tokens_file.read_text())
    assert token not in tokens_file.read_text()
    assert oct(tokens_file.stat().st_mode)[-3:] == "600"
    client = TokenRegistry(tokens_file).authenticate(f"Bearer {token}")
    assert client == Client("clinic-a", ClientLimits(2.0, 3, 1))
    bad_variants = [
        {**data, "extra": 1},
        {**data, "format": "nitro-llm-api-tokens/2"},
        {**data, "clients": {"clinic-a": {**data["clients"]["clinic-a"], "rate": 5}}},
        {**data, "clients": {"clinic-a": {**data["clients"]["clinic-a"], "burst": "10"}}},
        {**data, "clients": {"clinic-a": {**data["clients"]["clinic-a"], "burst": 0}}},
        {**data, "clients": {"clinic-a": {"token_sha256": "AB" * 32}}},
        {**data, "clients": {"bad name!": data["clients"]["clinic-a"]}},
        {**data, "clients": {"a": data["clients"]["clinic-a"], "b": data["clients"]["clinic-a"]}},
        [],
    ]
    for variant in bad_variants:
        with pytest.raises(ConfigError):
            parse_tokens(variant)


# -- rate and concurrency ----------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_then_recovers(gateway, issue):
    token = issue("clinic-a", rate_per_second=1.0, burst=2)
    gw = gateway()
    statuses = [infer(gw, token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = infer(gw, token)
    assert refused.json()["code"] == "rate_limited" and refused.json()["retryable"] is True
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 2
    gw.clock.advance(wait)
    assert infer(gw, token).status_code == 200


def test_limits_are_per_client(gateway, issue):
    greedy = issue("greedy", rate_per_second=0.5, burst=1)
    polite = issue("polite", rate_per_second=50, burst=50)
    gw = gateway()
    assert infer(gw, greedy).status_code == 200
    assert infer(gw, greedy).status_code == 429
    assert [infer(gw, polite).status_code for _ in range(5)] == [200] * 5


def test_concurrency_cap_holds_until_the_answer_is_relayed(gateway, issue):
    token = issue("clinic-a", max_concurrent=1)
    link = ScriptedLink()
    link.release.clear()  # the first request's answer waits: it holds its slot until released
    gw = gateway(link=link)
    first: dict[str, int] = {}
    holder = threading.Thread(target=lambda: first.update(status=infer(gw, token).status_code))
    holder.start()
    assert link.infer_started.wait(10)
    second = infer(gw, token)
    assert second.status_code == 429 and second.json()["code"] == "too_many_concurrent_requests"
    assert second.headers["retry-after"] == "1"
    link.release.set()
    holder.join(10)
    assert first["status"] == 200
    assert infer(gw, token).status_code == 200


def test_token_bucket_and_limiter_units():
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0
    limiter = Limiter(clock=lambda: now[0])
    client = Client("c", ClientLimits(rate_per_second=100.0, burst=100, max_concurrent=2))
    leases = [limiter.admit(client), limiter.admit(client)]
    with pytest.raises(TooManyConcurrent):
        limiter.admit(client)
    leases[0].release()
    leases[0].release()  # twice is harmless
    assert limiter.active("c") == 1
    limiter.admit(client)
    slow = Client("s", ClientLimits(rate_per_second=0.1, burst=1))
    limiter.admit(slow)
    with pytest.raises(RateLimited) as info:
        limiter.admit(slow)
    assert info.value.retry_after == 10
    unlimited = Client(ANONYMOUS, ClientLimits())
    for _ in range(1000):
        limiter.admit(unlimited)


# -- bodies ------------------------------------------------------------------------------------


def _raw(gw, head: str, body_pieces=(), *, read_timeout: float = 15.0) -> tuple[bytes, int]:
    """Send a request head and body pieces on a raw socket; return (answer, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=read_timeout) as sock:
        sock.sendall(head.encode())
        try:
            for piece in body_pieces:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer, sent


def test_declared_oversize_body_is_refused_before_it_is_read(gateway, issue, enclave_peer):
    token = issue("clinic-a")
    gw = gateway(max_body=1 << 20)
    head = (
        f"POST /v1/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        "content-length: 1073741824\r\n\r\n"
    )
    started = time.monotonic()
    answer, _ = _raw(gw, head)  # not one body byte sent: the answer must come anyway, at once
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
    assert b"connection: close" in answer.lower()
    assert time.monotonic() - started < 5
    assert enclave_peer.infer_count() == 0


def test_undeclared_oversize_body_is_cut_off(gateway, issue, enclave_peer):
    token = issue("clinic-a")
    gw = gateway(max_body=1 << 20)
    head = (
        f"POST /v1/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer, sent = _raw(gw, head, [chunk] * 512)  # offers 32 MiB against a 1 MiB limit
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent < 16 << 20, f"the gateway kept reading ({sent >> 20} MiB) after refusing"
    assert enclave_peer.infer_count() == 0


def test_body_that_never_finishes_gets_408(gateway, issue, enclave_peer):
    token = issue("clinic-a")
    gw = gateway(body_timeout=1.0)
    head = (
        f"POST /v1/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    answer, _ = _raw(gw, head, [b"x" * 10])  # 10 of 1000 bytes, then silence
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert 0.9 < time.monotonic() - started < 5
    assert enclave_peer.infer_count() == 0
