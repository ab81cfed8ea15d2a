"""Many new conversations at once reach KMS through the relays without waiting for a relay worker.

The relay standing in for vsock-proxy gets exactly the workers the deployment config gives
vsock-proxy (``kms_proxy.workers``), and like vsock-proxy it holds one for each connection's whole
life. The enclave's key release is the product's (boto3 through the in-enclave forwarder). With the
old 4 workers and botocore's unbounded 10-connection pool, the fifth connection's TLS handshake (here
its HTTP request) waited behind kept-alive connections until its attempt timed out: those requests
ended in ``kms_unavailable``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kms_stack import REGION, Conversation, start_kms_path

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS

N = 12
"""More than the old 4 workers and more than the enclave's 10 connections (so some calls queue for a
connection slot inside the enclave, never at the relay)."""
WAIT_S = 60.0
"""The test's bounded wait for every conversation of a wave (a stalled one never finishes)."""


@pytest.fixture
def kms_path(tmp_path):
    workers = DeployConfig(region=REGION).kms_proxy.workers  # what vsock-proxy runs with
    path = start_kms_path(tmp_path, relay_workers=workers)
    yield path
    path.close()


def _wave(path, n: int) -> list[object]:
    """``n`` new conversations, each asking its first question at the same moment."""
    conversations = [Conversation(path.kms("client")) for _ in range(n)]
    start = threading.Barrier(n)
    results: list[object] = [None] * n

    def ask(i: int) -> None:
        start.wait(timeout=WAIT_S)
        try:
            results[i] = conversations[i].ask(path.address, f"question {i}")
        except Exception as exc:  # the assertion below names it
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a conversation stalled past the test's wait"
    return results


def test_cold_conversations_at_once_never_wait_for_a_relay_worker(kms_path):
    for wave in range(2):  # the second wave finds the first's connections kept alive in the pool
        results = _wave(kms_path, N)
        failures = [repr(r) for r in results if not isinstance(r, str)]
        assert not failures, f"wave {wave}: {len(failures)} of {N} failed: {failures[:3]}"
        assert results == [f"question {i}" for i in range(N)]
    assert kms_path.key_release.decrypt_calls == 2 * N  # every conversation was cold
    # None stalled: a call that waits behind a kept-alive connection times out and is retried.
    assert kms_path.key_release.kms_attempts == 2 * N
    # Connections were reused, and never more were opened than the relays allow.
    assert 1 <= kms_path.relay.connections_total <= MAX_KMS_CONNECTIONS


def test_vsock_proxy_workers_cover_the_enclaves_kms_connections():
    assert DeployConfig(region=REGION).kms_proxy.workers >= MAX_KMS_CONNECTIONS
    with pytest.raises(Exception, match="workers"):
        DeployConfig.from_mapping({"region": REGION, "kms_proxy": {"workers": 4}}, base_dir=Path("."))
