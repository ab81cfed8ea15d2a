"""The seed's model architecture, made locally: Bloom-560m-shaped random weights, then GGUF.

No hub access, ever: the weights are drawn at random with transformers' ``BloomConfig`` set to
Bloom-560m's real dimensions (speed does not depend on the values), saved as safetensors, and
converted by this module to GGUF with the ``gguf`` package's ``GGUFWriter``, using llama.cpp's
names for BLOOM tensors (``token_embd``, ``token_embd_norm``, ``blk.N.attn_norm``,
``blk.N.attn_qkv``, ``blk.N.attn_output``, ``blk.N.ffn_norm``, ``blk.N.ffn_up``, ``blk.N.ffn_down``,
``output_norm``, ``output``). Two details matter for a model llama.cpp can run:

* Hugging Face stores Bloom's fused QKV projection per head (``[head][q|k|v][head_dim]``);
  llama.cpp expects all of Q, then all of K, then all of V, so rows (and bias entries) are regrouped.
* llama.cpp needs a vocabulary to load a model. The benchmark feeds token ids directly, so a
  synthetic byte-level BPE vocabulary of the right size (250,880) stands in for Bloom's tokenizer.

Then ``llama_model_quantize`` makes the Q8_0 / Q4_0 / Q4_1 copies. Everything is cached under
``state_dir()/bench/bloom-560m-random`` and rebuilt only when missing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nitro_llm.errors import NitroLLMError
from nitro_llm_dev.bench.speed.stacks import bench_dir

BLOOM_560M = {
    "vocab_size": 250880,
    "hidden_size": 1024,
    "n_layer": 24,
    "n_head": 16,
    "layer_norm_epsilon": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 3,
}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
QUANT_TYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_1": 3}  # llama.cpp LLAMA_FTYPE_MOSTLY_*
BENCH_EXTRA_HINT = (
    "install the benchmark extra: .venv/bin/pip install -e '.[bench]' (torch 2.13.0 CPU, transformers, gguf)"
)


class BenchDependencyError(NitroLLMError):
    code = "bench_dependency_missing"
    default_hint = BENCH_EXTRA_HINT


def model_dir() -> Path:
    path = bench_dir() / "bloom-560m-random"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchDependencyError(f"scenario (c) needs {', '.join(missing)}")


def ensure_random_bloom(
    directory: Path | None = None, *, config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """Safetensors of a randomly initialised Bloom (560m dimensions unless ``config`` says otherwise)."""
    _require("torch", "transformers")
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: nothing here may reach a hub
    directory = directory or model_dir() / "hf"
    if (directory / "model.safetensors").exists() and (directory / "config.json").exists():
        return directory
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(seed)
    model = BloomForCausalLM(BloomConfig(**(config or BLOOM_560M)))
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _byte_tokens() -> list[str]:
    """The 256 single-byte tokens of a byte-level BPE, in GPT-2's printable byte-to-character map."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def synthetic_vocab(size: int) -> list[str]:
    tokens = SPECIAL_TOKENS + _byte_tokens()
    tokens += [f"tok{i}" for i in range(size - len(tokens))]
    return tokens


def _regroup_qkv(array: Any, n_head: int) -> Any:
    """[head][q|k|v][head_dim] (rows, Hugging Face) -> [q|k|v][head][head_dim] (llama.cpp)."""
    import numpy as np

    head_dim = array.shape[0] // (3 * n_head)
    grouped = array.reshape((n_head, 3, head_dim, *array.shape[1:]))
    return np.concatenate([grouped[:, i].reshape((n_head * head_dim, *array.shape[1:])) for i in range(3)])


def convert_to_gguf(hf_dir: Path, out: Path) -> Path:
    """Write ``out`` (F16 matrices, F32 vectors) from the safetensors in ``hf_dir``."""
    _require("gguf", "safetensors", "numpy")
    import json

    import gguf
    import numpy as np
    from safetensors import safe_open

    cfg = json.loads((hf_dir / "config.json").read_text())
    n_embd, n_head, n_layer = cfg["hidden_size"], cfg["n_head"], cfg["n_layer"]
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BLOOM, n_layer)
    writer = gguf.GGUFWriter(str(out) + ".part", gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BLOOM])
    writer.add_name("bloom-560m-shaped random weights (nitro-llm benchmark)")
    writer.add_context_length(cfg.get("seq_length", 2048))
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(4 * n_embd)
    writer.add_block_count(n_layer)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = synthetic_vocab(cfg["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("bloom")
    writer.add_token_list(vocab)
    types = (
        [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(vocab) - 4)
    )
    writer.add_token_types(types)
    writer.add_token_merges(["t o", "to k"])
    writer.add_bos_token_id(cfg.get("bos_token_id", 1))
    writer.add_eos_token_id(cfg.get("eos_token_id", 2))
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(cfg.get("pad_token_id", 3))
    with safe_open(str(hf_dir / "model.safetensors"), framework="numpy") as tensors:
        keys = list(tensors.keys())
        for key in keys:
            hf_name = key.removeprefix("transformer.")
            if hf_name == "lm_head.weight":
                continue  # tied to the embedding; written as "output" below, as llama.cpp's converter does
            data = tensors.get_tensor(key)
            if "query_key_value" in hf_name:
                data = _regroup_qkv(data, n_head)
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"no llama.cpp name for tensor {hf_name}")
            writer.add_tensor(name, data.astype(np.float16 if data.ndim == 2 else np.float32))
            if hf_name == "word_embeddings.weight":
                writer.add_tensor("output.weight", data.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    Path(str(out) + ".part").replace(out)
    return out


def quantize(source: Path, out: Path, kind: str, *, threads: int = 1) -> Path:
    """``llama_model_quantize`` from the F16 file (llama.cpp's own choice of types per tensor)."""
    from nitro_llm.inference.llama_batch import load_llama_cpp

    llama_cpp = load_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[kind]
    params.nthread = threads
    part = Path(str(out) + ".part")
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(part).encode(), ctypes.byref(params))
    if rc != 0:
        raise NitroLLMError(f"llama_model_quantize to {kind} failed (code {rc})", hint="see stderr")
    part.replace(out)
    return out


def ensure_ggufs(
    hf_dir: Path,
    kinds: tuple[str, ...],
    *,
    threads: int = 1,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Path]:
    directory = hf_dir.parent
    f16 = directory / "bloom-560m-random.F16.gguf"
    if not f16.exists():
        progress("converting to GGUF F16")
        convert_to_gguf(hf_dir, f16)
    out = {"F16": f16}
    for kind in kinds:
        if kind == "F16":
            continue
        path = directory / f"bloom-560m-random.{kind}.gguf"
        if not path.exists():
            progress(f"quantising to {kind}")
            quantize(f16, path, kind, threads=threads)
        out[kind] = path
    return out


def gguf_bytes_per_token(path: Path) -> int:
    """Bytes of weights one decode step reads: every tensor but the embedding table (one row of it)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    total = 0
    for tensor in reader.tensors:
        if tensor.name == "token_embd.weight":
            total += int(tensor.n_bytes) // int(tensor.shape[-1] if len(tensor.shape) > 1 else 1)
        else:
            total += int(tensor.n_bytes)
    return total
