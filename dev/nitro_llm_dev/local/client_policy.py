"""The client policy the local stack writes, so that ``--protocol attested`` works with no flags.

It pins what the stack just measured (PCR0-2 of the enclave's code, model and config) and the
model's SHA-256, and trusts the local dev root, flagged ``unsafe_dev_root`` so that every client
loading it says so. Debug-mode enclaves stay refused. The root is written inline rather than as a
path, so the file can be copied to another machine (or shared) and still mean the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.inference.model import check_model

DESCRIPTION = "local stack (nitro-llm up): dev root, PCRs measured at start-up"


def local_policy(pcrs: Mapping[str, str], dev_root_pem: Path, model: Path | None = None) -> ClientPolicy:
    """``pcrs``: PCR index -> hex as ``LocalStack.measure_pcrs`` returns them; ``model``: the GGUF the
    enclave serves (None: the packaged default, held to its pinned digest)."""
    return ClientPolicy(
        expected_pcrs={int(index): bytes.fromhex(pcrs[index]) for index in ("0", "1", "2")},
        trust_root=TrustRoot(pem=dev_root_pem.read_text(encoding="ascii")),
        unsafe_dev_root=True,
        allow_debug=False,
        model_digest=check_model(model).sha256,
        description=DESCRIPTION,
    )
