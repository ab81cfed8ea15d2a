"""The serial scheduler (engines that cannot batch, e.g. echo): one at a time, first come first
served, bounded, cancellable while waiting. Echo engine with a small per-token delay."""

import threading
import time

import pytest

from nitro_llm.inference.errors import EngineBusyError
from nitro_llm.inference.scheduling import SerialScheduler, scheduled
from nitro_llm.protocol.messages import Message
from nitro_llm_dev.engines.echo import EchoEngine


def gen(s, text, cancel=None, max_tokens=64):
    return s.generate(
        [Message("user", text)], max_tokens=max_tokens, temperature=0.0, seed=None, cancel=cancel
    )


def test_engines_that_batch_are_used_as_they_are():
    class Batching(EchoEngine):
        schedules_itself = True

    engine = Batching()
    assert scheduled(engine, max_waiting=1) is engine
    assert isinstance(scheduled(EchoEngine(), max_waiting=1), SerialScheduler)


def test_first_come_first_served_one_at_a_time():
    s = SerialScheduler(EchoEngine(delay_seconds=0.01), max_waiting=8)
    order, active, peak = [], [0], [0]
    lock = threading.Lock()

    def run(i):
        stream = gen(s, f"r{i} a b c")
        first = next(stream)
        with lock:
            order.append(i)
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        rest = list(stream)
        with lock:
            active[0] -= 1
        assert first.text + "".join(c.text for c in rest) == f"r{i} a b c"

    threads = []
    for i in range(5):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.005)  # arrival order 0, 1, 2, ...
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert peak[0] == 1
    assert s.queued == 0


def test_bounded_then_room_again():
    s = SerialScheduler(EchoEngine(delay_seconds=0.05), max_waiting=1)
    running = gen(s, "one two three four five")
    next(running)
    waiting = gen(s, "next")
    with pytest.raises(EngineBusyError) as err:
        gen(s, "no room")
    assert err.value.code == "enclave_busy" and err.value.retryable
    running.close()  # leaves early: the engine is released, the waiting request runs
    assert "".join(c.text for c in waiting) == "next"
    assert "".join(c.text for c in gen(s, "room now")) == "room now"


def test_cancel_while_waiting_and_close():
    s = SerialScheduler(EchoEngine(delay_seconds=0.05), max_waiting=2)
    running = gen(s, "one two three four five six")
    next(running)
    stop = threading.Event()
    waiting = gen(s, "never", cancel=stop)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("chunks", list(waiting)))
    t.start()
    stop.set()
    t.join(5)
    assert result["chunks"][-1].finish_reason == "cancelled"
    assert s.queued == 1
    s.close()
    with pytest.raises(EngineBusyError):
        gen(s, "late")
    running.close()
    assert s.queued == 0
