"""A local fleet of three replicas behind HAProxy, with replicas killed under load.

Real processes on loopback: the KMS emulator, three source-tree enclaves with the echo engine (every
answer is exactly the question, so every answer is checked), three gateways, HAProxy. The echo engine
takes a few milliseconds per piece (``NITRO_LLM_ECHO_DELAY_MS``) so that an answer can be caught
mid-stream. Clients are the product's own (``open_conversation`` with the configuration and policy
the fleet wrote), so they retry through ``nitro_llm.client.failover``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.protocol_choice import open_conversation
from nitro_llm.errors import NitroLLMError
from nitro_llm_dev.engines.echo import DELAY_ENV
from nitro_llm_dev.local.fleet import LocalFleet, Replica
from nitro_llm_dev.local.processes import ManagedProcess
from nitro_llm_dev.local.stack import EnclaveOptions

pytestmark = pytest.mark.slow

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    root = tmp_path_factory.mktemp("fleet")
    with LocalFleet(
        root=root,
        enclave=EnclaveOptions(engine="echo"),
        enclave_from="source",
        replicas=3,
        enclave_env={DELAY_ENV: "4"},
    ) as f:
        yield f


def conversation(fleet: LocalFleet, protocol: str):
    return open_conversation(
        protocol, config_path=fleet.root / "client.json", policy_path=fleet.client_policy_path
    )


def answer(conv, question: str, **options) -> tuple[str, list[str]]:
    """The answer as ``ask`` keeps it: pieces after the last discard marker; and the markers seen."""
    parts: list[str] = []
    markers: list[str] = []
    for chunk in conv.stream([{"role": "user", "content": question}], **options):
        if chunk.restarted:
            markers.append(chunk.restarted)
            parts.clear()
        else:
            parts.append(chunk.text)
    return "".join(parts), markers


def stats(replica: Replica) -> dict:
    return httpx.get(f"{replica.gateway_url}/v1/enclave/stats", timeout=5).json()


def kill(proc: ManagedProcess | None) -> None:
    """SIGKILL the process's whole group: no clean shutdown, as a crashed host."""
    assert proc is not None and proc.proc is not None
    os.killpg(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait(timeout=10)


def wait_whole_again(fleet: LocalFleet) -> None:
    """The supervisor replaces what was killed; the new replica obtains the fleet key; HAProxy sees it."""
    assert fleet.balancer is not None
    fleet.balancer.wait_all_up(timeout=90)


def test_every_replica_attests_the_same_fleet_key(fleet):
    hashes = set()
    token = fleet.client_config().auth_headers()
    for replica in fleet.fleet:  # each gateway directly, not the balancer
        http = httpx.Client(headers=token)
        conv = AttestedConversation(replica.gateway_url, fleet.attestation_policy(), http=http)
        hashes.add(conv.verify().descriptor_hash)
        conv.close()
    assert len(hashes) == 1
    assert {stats(r)["fleet_key"]["state"] for r in fleet.fleet} == {"ready"}


@pytest.mark.parametrize("protocol", ["attested", "kms"])
def test_a_conversation_continues_on_every_replica(fleet, protocol):
    before = [stats(r)["answered"] for r in fleet.fleet]
    conv = conversation(fleet, protocol)
    history: list[dict[str, str]] = []
    for turn in range(6):
        question = f"turn {turn} of one conversation"
        history.append({"role": "user", "content": question})
        text = "".join(c.text for c in conv.stream(history, max_tokens=64, temperature=0.0))
        assert text == question
        history.append({"role": "assistant", "content": text})
    conv.close()
    after = [stats(r)["answered"] for r in fleet.fleet]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # round robin


def _serving(fleet: LocalFleet) -> Replica:
    busy = [r for r in fleet.fleet if stats(r)["queued"] > 0]
    assert len(busy) == 1, [stats(r)["queued"] for r in fleet.fleet]
    return busy[0]


@pytest.mark.parametrize("victim", ["enclave", "gateway"])
def test_a_half_streamed_answer_is_discarded_and_asked_again_on_another_replica(fleet, victim):
    assert fleet.supervisor is not None
    question = " ".join(f"w{i}" for i in range(300))  # 300 pieces: over a second of streaming
    conv = conversation(fleet, "attested")
    with fleet.supervisor.paused():
        stream = conv.stream([{"role": "user", "content": question}], max_tokens=400, temperature=0.0)
        first = next(stream)  # the answer is under way
        assert not first.restarted
        serving = _serving(fleet)
        kill(serving.enclave if victim == "enclave" else serving.gateway)
        rest = list(stream)
    markers = [c.restarted for c in rest if c.restarted]
    assert len(markers) == 1  # what was shown is to be discarded, said once
    after = rest[rest.index(next(c for c in rest if c.restarted)) + 1 :]
    assert "".join(c.text for c in after) == question and after[-1].final  # the whole answer, not spliced
    assert conv.retries == 1
    conv.close()
    wait_whole_again(fleet)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    retried: int = 0
    discarded: int = 0
    failed: list[str] = field(default_factory=list)
    wrong: int = 0
    reached: threading.Event = field(default_factory=threading.Event)


def test_three_replicas_lose_an_enclave_and_a_gateway_under_load_and_no_request_fails(fleet):
    assert fleet.supervisor is not None and fleet.balancer is not None
    workers, per_worker, kill_after = 4, 25, 12
    tally = Tally()

    def work(index: int) -> None:
        rng = random.Random(index)
        conv = conversation(fleet, "attested" if index % 2 == 0 else "kms")
        try:
            for request in range(per_worker):
                question = f"worker {index} request {request} " + " ".join(rng.choices(WORDS, k=8))
                try:
                    text, _ = answer(conv, question, max_tokens=64, temperature=0.0)
                except NitroLLMError as exc:
                    with tally.lock:
                        tally.failed.append(exc.code)
                    continue
                with tally.lock:
                    tally.done += 1
                    tally.wrong += text != question
                    if tally.done >= kill_after:
                        tally.reached.set()
        finally:
            with tally.lock:
                tally.retried += conv.retries
                tally.discarded += conv.discarded
            conv.close()

    with fleet.supervisor.paused():  # the killed stay dead while the load runs
        threads = [threading.Thread(target=work, args=(i,), name=f"load-{i}") for i in range(workers)]
        for thread in threads:
            thread.start()
        assert tally.reached.wait(timeout=120), "the load did not get going"
        kill(fleet.fleet[0].enclave)  # one enclave ...
        kill(fleet.fleet[1].gateway)  # ... and another replica's gateway, while requests are in flight
        for thread in threads:
            thread.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
        states = fleet.balancer.states()
    total = workers * per_worker
    print(
        f"\nfleet failover: {total} requests, {tally.done} answered, {tally.retried} retried "
        f"({tally.discarded} partial answers discarded), {len(tally.failed)} failed, balancer {states}"
    )
    assert tally.failed == [] and tally.done == total and tally.wrong == 0
    assert tally.retried >= 1  # requests were cut or refused by the lost replicas, and sent again
    assert states["replica-0"] != "UP" and states["replica-1"] != "UP" and states["replica-2"] == "UP"
    wait_whole_again(fleet)  # and the replacements, once supervision resumes, obtain the fleet key
