"""Scenario (c) on a tiny Bloom (same code path as the 560m run): our converter's GGUF must compute
what transformers computes, and the benchmark must report sane numbers. Skipped without torch."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from nitro_llm_dev.bench.speed.bloom_gguf import convert_to_gguf, ensure_random_bloom, synthetic_vocab
from nitro_llm_dev.bench.speed.seed_stack import bench_seed_stack

TINY = {
    "vocab_size": 2048,
    "hidden_size": 64,
    "n_layer": 2,
    "n_head": 4,
    "layer_norm_epsilon": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
}


@pytest.fixture(scope="module")
def tiny_bloom(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield ensure_random_bloom(tmp_path_factory.mktemp("bloom") / "hf", config=TINY, seed=3)


def test_vocabulary_is_unique_and_sized():
    vocab = synthetic_vocab(2048)
    assert len(vocab) == len(set(vocab)) == 2048


def test_converted_gguf_decodes_like_transformers(tiny_bloom, tmp_path):
    """Greedy continuations agree token for token; a wrong QKV regrouping or tensor name would not."""
    import torch
    from transformers import BloomForCausalLM

    from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling

    gguf = convert_to_gguf(tiny_bloom, tmp_path / "tiny.F16.gguf")
    prompt = [17, 400, 1999, 5, 731, 88, 1024, 64]
    model = BloomForCausalLM.from_pretrained(tiny_bloom, torch_dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=3
        )[0, len(prompt) :].tolist()
    decoder = LlamaBatchDecoder(gguf, n_seq=1, n_ctx_seq=64, n_threads=1)
    try:
        decoder.open_slot(0, Sampling())
        got = [decoder.step([Feed(0, prompt, 0, True)])[0]]
        while len(got) < 8:
            got.append(decoder.step([Feed(0, (got[-1],), len(prompt) + len(got) - 1, True)])[0])
    finally:
        decoder.close()
    assert got == expected


def test_seed_stack_benchmark_structure(tiny_bloom):
    result = bench_seed_stack(
        threads=1, tokens=4, quants=("F16", "Q8_0"), repeats=1, config=TINY, directory=tiny_bloom
    )
    seed, *ours = result["rows"]
    assert seed["engine"].startswith("transformers") and seed["tokens_per_s"] > 0
    assert [r["engine"] for r in ours] == ["llama.cpp GGUF F16 (ours)", "llama.cpp GGUF Q8_0 (ours)"]
    for row in ours:
        assert row["tokens_per_s"] > 0 and row["speedup_vs_seed"] > 0
        assert 1 < row["bytes_bound"] and row["bytes_per_token"] < seed["bytes_per_token"]
    assert ours[1]["bytes_per_token"] < ours[0]["bytes_per_token"]  # Q8_0 reads less than F16
