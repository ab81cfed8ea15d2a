"""Which inference engine an enclave runs, chosen by name from its measured configuration.

The product ships one engine, llama.cpp. Others (the development package's deterministic ``echo``
engine for tests and benchmarks) are offered through the ``nitro_llm.engines`` entry-point group, so
the enclave never imports development code: an image built without the development package cannot
be configured into running an echo engine, and asking for it fails at start with the installed list.
The engine name is part of the measured configuration, so a non-llama enclave also has other PCRs.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import TYPE_CHECKING

from nitro_llm.errors import ConfigError
from nitro_llm.inference.engine import Engine
from nitro_llm.inference.model import DEFAULT_MODEL_NAME, ModelInfo, check_model

if TYPE_CHECKING:
    from nitro_llm.enclave.config import EnclaveConfig

log = logging.getLogger(__name__)

ENGINE_GROUP = "nitro_llm.engines"


def installed_engines() -> list[str]:
    """ "llama" first, then every engine an installed package offers."""
    extra = sorted(
        ep.name for ep in importlib.metadata.entry_points(group=ENGINE_GROUP) if ep.name != "llama"
    )
    return ["llama", *extra]


def build_engine(config: EnclaveConfig, info: ModelInfo | None = None) -> Engine:
    """``info``: the model already checked by the caller (saves hashing the file twice)."""
    if config.engine != "llama":
        found = [ep for ep in importlib.metadata.entry_points(group=ENGINE_GROUP) if ep.name == config.engine]
        if not found:
            raise ConfigError(
                f"engine {config.engine!r} is not installed in this enclave",
                hint=f"installed engines: {', '.join(installed_engines())}",
            )
        engine: Engine = found[0].load()()
        return engine
    from nitro_llm.inference.batching import BatchScheduler
    from nitro_llm.inference.kv_cache import DEFAULT_CACHE_CONVERSATIONS
    from nitro_llm.inference.llama_batch import LlamaBatchDecoder

    info = info or check_model(config.model_path)  # the default model is held to its pinned SHA-256
    name = config.model_name or (DEFAULT_MODEL_NAME if config.model_path is None else info.path.stem.lower())
    log.info("model %s size=%d sha256=%s", info.path.name, info.size, info.sha256)
    threads = config.inference_threads()
    log.info("inference threads=%d (configured %s)", threads, config.threads or "auto")
    decoder = LlamaBatchDecoder(info.path, n_seq=config.batch_size, n_ctx_seq=config.ctx, n_threads=threads)
    # A conversation's cells live no longer than the key they are kept under (data key or session):
    # the same idle TTL, and the server evicts them when that key goes (enclave/conversation_keys.py).
    # An enclave told to keep no data keys between requests keeps no conversations either.
    keeps_keys = config.data_key_cache_size > 0 and config.data_key_ttl_seconds > 0
    return BatchScheduler(
        decoder,
        name=name,
        ctx=config.ctx,
        max_waiting=config.max_waiting,
        cache_conversations=DEFAULT_CACHE_CONVERSATIONS if keeps_keys else 0,
        cache_ttl_seconds=config.data_key_ttl_seconds if keeps_keys else None,
        public_prefix=decoder.public_prefix(),  # the model's template alone: safe to share
        turn_separator=decoder.turn_separator(),
    )
