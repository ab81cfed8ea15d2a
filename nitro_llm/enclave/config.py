"""The enclave's settings, and which of them are measured into its PCRs.

On Nitro the command line is baked into the image, so PCR0 covers it. In local mode the parent
starts the enclave process with arguments; every setting that changes answers or weakens a check
(engine, threads, context, freshness window, cache bounds, frame limit) is therefore measured, and
an enclave started with a looser setting gets other PCRs and no key from KMS. Where the enclave
listens and which KMS endpoint it uses are not measured: a wrong endpoint can only fail, it cannot
obtain or fake a data key that opens the client's request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitro_llm.attestation.errors import MeasurementError
from nitro_llm.enclave.data_keys import DEFAULT_CAPACITY, DEFAULT_TTL_SECONDS
from nitro_llm.enclave.freshness import DEFAULT_REPLAY_CAPACITY, DEFAULT_WINDOW_SECONDS
from nitro_llm.enclave.threads import AUTO, inference_threads
from nitro_llm.fleet.key_file import check_kms_key_arn
from nitro_llm.inference.llama_engine import DEFAULT_CTX
from nitro_llm.protocol.frame_codec import DEFAULT_MAX_FRAME_SIZE

#: Engine names: "llama" (the product's llama.cpp engine) or one installed through the
#: ``nitro_llm.engines`` entry points (the development package's "echo"); see enclave/engines.py.
_ENGINE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class EnclaveConfig:
    """``threads``: llama.cpp's thread count; 0 ("auto", the default) sizes it from the CPUs the
    enclave is given: every CPU but one, at least one (``enclave/threads.py``). Measured on two CPUs
    (BENCHMARKS.md, (g)): two threads beat one only while nothing else runs (prefill 1.83x, decode
    1.41x); with anything else busy one thread wins by far (through the local stack, whose gateway
    and sealing threads run beside the decoder, two ran at 0.49x / 0.17x of one; with one CPU kept
    busy, 0.23x / 0.04x), so "auto" is one thread there. A positive count overrides it.

    ``data_key_ttl_seconds`` also bounds how long a conversation's KV cells stay in the engine
    between turns: they are keyed by and evicted with the conversation's data key (kms protocol) or
    session key (attested protocol); see ``enclave/conversation_keys.py``."""

    engine: str = "llama"
    model_path: Path | None = None  # None: the packaged default model
    threads: int = AUTO
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
    model_name: str | None = None  # not measured: a label (None: the packaged model's, or the file stem)
    fleet_kms_key: str | None = None
    """A fleet replica: the ARN of the KMS key that wraps the fleet key (enclave/fleet_key.py). Measured,
    so a key wrapped by any other KMS key is refused; None: this enclave makes its own session keys."""

    def __post_init__(self) -> None:
        if not _ENGINE_NAME.fullmatch(self.engine):
            raise ValueError("engine must be a short lower-case name such as 'llama'")
        if self.threads < 0 or self.ctx < 64 or self.max_waiting < 0 or self.batch_size < 1:
            raise ValueError(
                "threads >= 0 (0: auto), ctx >= 64, max_waiting >= 0 and batch_size >= 1 are required"
            )
        if self.fleet_kms_key is not None:
            check_kms_key_arn(self.fleet_kms_key, error=ValueError)

    def inference_threads(self, cpus: int | None = None) -> int:
        """The thread count llama.cpp gets: the configured one, or the rule's for ``cpus`` (default:
        the CPUs this process may run on)."""
        return inference_threads(self.threads, cpus)

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
            **({"fleet_kms_key": self.fleet_kms_key} if self.fleet_kms_key else {}),
        }


_MEASURED_FIELDS = frozenset(
    {
        "engine",
        "threads",
        "ctx",
        "freshness_window_seconds",
        "replay_capacity",
        "data_key_cache_size",
        "data_key_ttl_seconds",
        "max_frame_size",
        "max_waiting",
        "batch_size",
        "seed_compat",
        "fleet_kms_key",
    }
)


def config_from_measured(measured: Mapping[str, Any], **unmeasured: Any) -> EnclaveConfig:
    """The inverse of ``EnclaveConfig.measured()``: what the image's entrypoint reads from the measured
    JSON it was built with. ``unmeasured`` gives the rest (model path, model name). An unknown key is
    refused rather than ignored: it would mean a config written for another version of the enclave."""
    unknown = sorted(set(measured) - _MEASURED_FIELDS)
    if unknown:
        raise ValueError(f"unknown measured setting(s): {', '.join(unknown)}")
    return EnclaveConfig(**dict(measured), **unmeasured)


def canonical_config(config: Mapping[str, object] | object) -> bytes:
    """The config as canonical JSON bytes; pydantic models are dumped in JSON mode first."""
    dump = getattr(config, "model_dump", None)
    data = dump(mode="json") if callable(dump) else config
    if not isinstance(data, Mapping):
        raise MeasurementError("the enclave config must be a mapping (or a pydantic model)")
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MeasurementError(f"the enclave config is not plain JSON data ({type(exc).__name__})") from None
    return text.encode("utf-8")
