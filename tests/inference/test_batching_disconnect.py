"""A request whose gateway connection closes is cancelled even while it waits for a slot, and a
real batched model behind the enclave server answers concurrent requests (server + scheduler)."""

import threading
import time

import pytest
from enclave.conftest import Conversation, start_enclave

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.inference.model import default_model_path
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.transport import connect
from nitro_llm_dev.engines.echo import EchoEngine


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_waiting_request_is_dropped_when_its_connection_closes(tmp_path):
    enclave = start_enclave(
        tmp_path, config=EnclaveConfig(engine="echo", max_waiting=2), engine=EchoEngine(delay_seconds=0.05)
    )
    try:
        enclave.give_credentials()
        conv = Conversation(enclave.kms)
        conv.ask(enclave, "warm")  # the data key is cached: the next requests go straight to the queue
        long = " ".join(["w"] * 60)
        results = {}
        runner = threading.Thread(
            target=lambda: results.setdefault("long", conv.ask(enclave, long, max_tokens=60))
        )
        runner.start()
        assert wait_for(lambda: enclave.server.stats()["queued"] == 1)
        _, envelope = conv.seal([{"role": "user", "content": "queued then gone"}])
        sock = connect(enclave.address, 5)
        sock.sendall(encode_frame(frame_kinds.infer_frame(envelope.to_cbor())))
        assert wait_for(lambda: enclave.server.stats()["queued"] == 2)
        sock.close()  # the gateway hangs up while the request waits
        assert wait_for(lambda: enclave.server.stats()["queued"] == 1, timeout=2.0)
        assert runner.is_alive()  # dropped while the long answer was still running
        runner.join(10)
        assert results["long"] == long
    finally:
        enclave.server.stop()


@pytest.mark.model
def test_server_batches_concurrent_requests_on_the_real_model(tmp_path):
    pytest.importorskip("llama_cpp")
    from nitro_llm.inference.batching import BatchScheduler
    from nitro_llm.inference.llama_batch import LlamaBatchDecoder

    decoder = LlamaBatchDecoder(default_model_path(), n_seq=3, n_ctx_seq=512, n_threads=1)
    engine = BatchScheduler(decoder, name="smollm2", ctx=512, max_waiting=0)
    enclave = start_enclave(tmp_path, config=EnclaveConfig(engine="llama", max_waiting=0), engine=engine)
    try:
        enclave.give_credentials()
        questions = ["What is 2+2?", "Name a fruit.", "Who wrote Hamlet?"]
        solo = {q: Conversation(enclave.kms).ask(enclave, q, max_tokens=12) for q in questions}
        together = {}
        threads = [
            threading.Thread(
                target=lambda q=q: together.setdefault(
                    q, Conversation(enclave.kms).ask(enclave, q, max_tokens=12)
                )
            )
            for q in questions
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert together == solo
        assert engine.step_tokens > engine.steps  # some steps carried more than one sequence
    finally:
        enclave.server.stop()
