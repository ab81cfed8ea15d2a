"""Scenarios (i) and (j) on real processes with the real model, tiny settings (a few tokens).

Structure only, never timings: llama_cpp.server and both proxies answer through the same openai SDK
code; the proxy's named chats and the direct clients' later turns get a cache hit; our routes all
write the same text; ``nitro-llm up`` records its phases and the first answer comes back.
"""

from __future__ import annotations

import pytest

from nitro_llm.inference.model import default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.model]
pytest.importorskip("llama_cpp")

from nitro_llm_dev.bench.speed.peer import DIRECT_ROUTES, PEER, PROXY_ROUTES, missing_packages  # noqa: E402
from nitro_llm_dev.bench.speed.report import render  # noqa: E402
from nitro_llm_dev.bench.speed.stacks import running_stack  # noqa: E402
from nitro_llm_dev.bench.speed.targets import check_targets  # noqa: E402
from nitro_llm_dev.local.image_enclave import image_enclave_available  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NITRO_LLM_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.mark.skipif(bool(missing_packages()), reason="needs the bench extra (openai, llama_cpp.server's)")
@pytest.mark.skipif(not image_enclave_available(), reason="the bench runs the enclave image (root)")
def test_peer_bench_routes_and_the_cache_they_use(home):
    from nitro_llm_dev.bench.speed.peer import bench_peer

    with running_stack(engine="llama", threads=1, batch_size=2, max_waiting=2, ctx=1024) as stack:
        h = bench_peer(
            stack, default_model_path(), threads=1, ctx=1024, max_tokens=4, sessions=2, turns=2,
            turn_tokens=4, rounds=1, single_rounds=1,
        )  # fmt: skip
        assert (stack.run_dir / "startup.json").is_file()  # every start records its phases
        assert any(p.name.startswith("enclave: model loaded") for p in stack.timings.phases)
    assert set(h["single"]) == {PEER, *PROXY_ROUTES}
    for route in PROXY_ROUTES:
        assert h["single"][route]["tokens"] == 4 and h["single"][route]["first_token_ratio"] > 0
        assert h["concurrent"][route]["tokens"] == 8 and h["concurrent"][route]["aggregate_time_ratio"] > 0
    chat = h["conversation"]
    assert chat["routes"] == [PEER, *PROXY_ROUTES, *DIRECT_ROUTES]
    assert chat["ours_same_answers"] is True
    for route in (*PROXY_ROUTES, *DIRECT_ROUTES):  # turn 2 extends turn 1 (the proxy's chat is named)
        assert chat["enclave"][route]["kv_cache_hits"] == 1
        assert chat["enclave"][route]["kv_cache_public_reused_tokens"] > 0  # turn 1 restored the template
    assert 0 < h["shared_prefix_tokens"] < h["single_prompt_tokens"]
    assert "## (i)" in render({"i": h}, [])
    # per proxy route: one client (default and own system prompt), clients at once; per route: the chat
    assert sum(t["target"].startswith("(i)") for t in check_targets({"i": h})) == 2 * 3 + 4


@pytest.mark.skipif(not image_enclave_available(), reason="'nitro-llm up' runs the enclave image (root)")
def test_startup_bench_from_up_to_the_first_answer(home):
    from nitro_llm_dev.bench.speed.startup import bench_startup

    i = bench_startup(rounds=1)
    (restart,) = i["restarts"]
    for start in (i["first_start"], restart):
        assert start["answered"] and start["first_answer_s"] > start["ready_s"] > 0
        names = [p["name"] for p in start["phases"]]
        assert "enclave: model loaded, KV cache allocated" in names and "key and key policy (PCRs)" in names
    assert "## (j)" in render({"j": i}, [])
    assert any(t["target"].startswith("(j)") for t in check_targets({"j": i}))
