"""The enclave's settings, and which of them are measured into its PCRs.

On Nitro the command line is baked into the image, so PCR0 covers it. In local mode the parent
starts the enclave process with arguments; every setting that changes answers or weakens a check
(engine, threads, context, freshness window, cache bounds, frame limit) is therefore measured, and
an enclave started with a looser setting gets other PCRs and no key from KMS. Where the enclave
listens and which KMS endpoint it uses are not measured: a wrong endpoint can only fail, it cannot
obtain or fake a data key that opens the client's request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nitro_llm.enclave.data_keys import DEFAULT_CAPACITY, DEFAULT_TTL_SECONDS
from nitro_llm.enclave.freshness import DEFAULT_REPLAY_CAPACITY, DEFAULT_WINDOW_SECONDS
from nitro_llm.inference.llama_engine import DEFAULT_CTX
from nitro_llm.protocol.framing import DEFAULT_MAX_FRAME_SIZE

EngineKind = Literal["llama", "echo"]


@dataclass(frozen=True)
class EnclaveConfig:
    engine: EngineKind = "llama"
    model_path: Path | None = None  # None: the packaged default model
    threads: int = 1
    ctx: int = DEFAULT_CTX
    freshness_window_seconds: float = DEFAULT_WINDOW_SECONDS
    replay_capacity: int = DEFAULT_REPLAY_CAPACITY
    data_key_cache_size: int = DEFAULT_CAPACITY
    data_key_ttl_seconds: float = DEFAULT_TTL_SECONDS
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_waiting: int = 8
    batch_size: int = 8  # sequences decoded together (continuous batching); KV memory grows with it
    debug_mode: bool = False
    seed_compat: bool = False  # the AWS sample's weaker wire format (enclave/seed_compat.py)

    def __post_init__(self) -> None:
        if self.engine not in ("llama", "echo"):
            raise ValueError("engine must be 'llama' or 'echo'")
        if self.threads < 1 or self.ctx < 64 or self.max_waiting < 0 or self.batch_size < 1:
            raise ValueError("threads >= 1, ctx >= 64, max_waiting >= 0 and batch_size >= 1 are required")

    def measured(self) -> dict[str, Any]:
        """What goes into PCR0/PCR2 as "config" (the model file is measured by its digest, separately)."""
        return {
            "engine": self.engine,
            "threads": self.threads,
            "ctx": self.ctx,
            "freshness_window_seconds": self.freshness_window_seconds,
            "replay_capacity": self.replay_capacity,
            "data_key_cache_size": self.data_key_cache_size,
            "data_key_ttl_seconds": self.data_key_ttl_seconds,
            "max_frame_size": self.max_frame_size,
            "max_waiting": self.max_waiting,
            "batch_size": self.batch_size,
            **({"seed_compat": True} if self.seed_compat else {}),
        }
