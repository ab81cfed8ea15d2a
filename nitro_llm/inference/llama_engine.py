"""The llama.cpp backend (llama-cpp-python): loads a GGUF once and streams chat completions.

The chat template comes from the GGUF itself (``create_chat_completion`` applies it), so the prompt
format matches what the model was trained on without a copy of it here. Temperature 0 is greedy
decoding with top_k=1. A request without a seed gets a random one: llama-cpp-python would
otherwise derive every unseeded request's seed from the same fixed value.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Unpack, cast

from nitro_llm.inference.engine import FinishReason, GenerateArgs, TokenChunk, Usage
from nitro_llm.inference.errors import ContextOverflowError, EngineUnavailableError, InferenceError
from nitro_llm.protocol.messages import Message

DEFAULT_CTX = 8192  # SmolLM2 was trained at 8k: a 20 KB question (~4.5k tokens) fits


class LlamaEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        n_threads: int = 1,
        n_threads_batch: int | None = None,
        n_ctx: int = DEFAULT_CTX,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise EngineUnavailableError("llama-cpp-python is not installed") from None
        if n_threads < 1 or n_ctx < 64:
            raise ValueError("n_threads must be at least 1 and n_ctx at least 64")
        self._name = name
        try:
            self._llm = Llama(
                model_path=str(model_path),
                n_threads=n_threads,
                n_threads_batch=n_threads_batch or n_threads,
                n_ctx=n_ctx,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python reports an unloadable file as ValueError
            raise InferenceError(
                f"llama.cpp could not load {model_path.name} ({type(exc).__name__})",
                hint="check that the file is a GGUF model: nitro-llm model check",
            ) from None

    @property
    def name(self) -> str:
        return self._name

    def generate(self, messages: Sequence[Message], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        # ``cache_key`` is ignored: this engine keeps nothing per conversation
        max_tokens, temperature, seed = args["max_tokens"], args["temperature"], args["seed"]
        cancel = args.get("cancel")
        greedy = temperature == 0
        try:
            stream = self._llm.create_chat_completion(
                messages=[m.to_dict() for m in messages],  # type: ignore[misc]  # TypedDicts
                max_tokens=max_tokens,
                temperature=float(temperature),
                top_k=1 if greedy else 40,
                seed=seed if seed is not None else secrets.randbits(32),
                stream=True,
            )
        except ValueError as exc:
            raise _translate(exc) from None
        completion = 0
        reason: FinishReason = "length"
        try:
            for part in cast(Iterator[dict[str, Any]], stream):  # stream=True returns an iterator of dicts
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                choice = part["choices"][0]
                text = choice["delta"].get("content")
                if isinstance(text, str) and text:
                    completion += 1
                    yield TokenChunk(text)
                if choice["finish_reason"]:
                    reason = "stop" if choice["finish_reason"] == "stop" else "length"
        except ValueError as exc:
            raise _translate(exc) from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops llama.cpp's loop when the consumer stops early
        # Streamed completions do not report token counts; each content delta is one token,
        # except rare multi-byte characters held back and joined with the next piece.
        yield TokenChunk("", reason, Usage(prompt_tokens=None, completion_tokens=completion))


def _translate(exc: ValueError) -> InferenceError:
    """llama-cpp-python signals a prompt longer than the context as ValueError; its text holds only counts."""
    if "context window" in str(exc):
        return ContextOverflowError("the conversation does not fit in the model's context window")
    return InferenceError(f"generation failed ({type(exc).__name__})")
