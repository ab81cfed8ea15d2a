"""The EIF's measurements as nitro-cli reports them: the PCRs a key policy and a verifier pin.

They come from nitro-cli's output, or from the manifest of ``nitro-llm image build`` (its
``outputs.eif.measurements`` has the same shape), which exists before any instance does.

``nitro-cli build-enclave`` and ``describe-eif`` print ``{"Measurements": {"HashAlgorithm": ...,
"PCR0": hex, "PCR1": hex, "PCR2": hex[, "PCR8": hex]}}`` (PCR8 only for a signed EIF), possibly
after progress lines. The file we save keeps exactly that shape so any tool that reads nitro-cli's
output reads ours. Every PCR is checked to be a SHA-384 digest (a truncated or mistyped value would
become a key policy no enclave can satisfy), and all-zero PCRs, a debug-mode enclave's, are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitro_llm.attestation.pcr import parse_eif_measurements
from nitro_llm.deploy.errors import MeasurementsError
from nitro_llm.image.manifest import read_manifest

REQUIRED_PCRS = (0, 1, 2)
_ZERO = "0" * 96


@dataclass(frozen=True)
class Measurements:
    pcrs: dict[int, str]
    """PCR index -> lowercase hex SHA-384."""
    hash_algorithm: str = "Sha384 { ... }"

    @property
    def signed(self) -> bool:
        return 8 in self.pcrs

    def to_json(self) -> dict[str, Any]:
        inner: dict[str, str] = {"HashAlgorithm": self.hash_algorithm}
        inner.update({f"PCR{i}": self.pcrs[i] for i in sorted(self.pcrs)})
        return {"Measurements": inner}

    def policy_pcrs(self) -> dict[int, str]:
        """The PCRs a key policy pins: 0, 1, 2, and 8 when the EIF is signed."""
        return {i: v for i, v in self.pcrs.items() if i in (*REQUIRED_PCRS, 8)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def parse_measurements(text: str) -> Measurements:
    """nitro-cli's output (progress lines allowed) -> Measurements. The format itself is read by the
    attestation library's reader, so the verifier and the deployment tools agree byte for byte."""
    pcrs = {index: value.hex() for index, value in parse_eif_measurements(text).items()}
    zero = [f"PCR{i}" for i in REQUIRED_PCRS if pcrs[i] == _ZERO]
    if zero:
        raise MeasurementsError(
            f"{', '.join(zero)} are all zeros, which is what a debug-mode enclave reports",
            hint="use the measurements nitro-cli printed when it built the EIF, "
            "not a debug enclave's document",
        )
    return Measurements(pcrs=pcrs)


def load_measurements(path: Path) -> Measurements:
    try:
        text = path.read_text()
    except OSError as exc:
        raise MeasurementsError(
            f"cannot read the measurements file {path} ({exc.strerror})",
            hint="run 'nitro-llm deploy build-eif' first; it saves the measurements there",
        ) from None
    return parse_measurements(text)


def load_manifest_measurements(path: Path) -> Measurements:
    """The EIF's PCRs from an image manifest, checked like nitro-cli's output."""
    manifest = read_manifest(path)
    if manifest.eif is None:
        raise MeasurementsError(
            f"{path} pins only PCR2: its image was built without nitro-cli's blobs, so it has no EIF "
            "and no PCR0/PCR1",
            hint="build with 'nitro-llm image build OUT --blobs DIR' and use OUT/manifest.json",
        )
    return parse_measurements(json.dumps({"Measurements": manifest.eif.measurements()}))
