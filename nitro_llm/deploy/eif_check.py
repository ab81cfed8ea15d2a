"""Build once, verify everywhere, on the instance: the EIF that 'nitro-cli run-enclave' starts is the
one the published manifest describes, and that manifest is the one the operator pinned.

The manifest is pinned by its SHA-256 (a stack parameter: the operator computed it from the same file
the key policy was generated from). The EIF is then checked against the manifest's PCRs, ramdisk
digest and CRC (``nitro_llm.image.publish.verify_eif``) when it is installed and again before every
start, so a file changed on disk after installation is refused too, with the checks that differ
named. KMS enforces the PCRs in any case; these checks fail early and say why, instead of leaving an
enclave that boots and never gets a key.

A fleet replica's image is measured with the fleet KMS key's ARN; the config's ``[fleet]`` names the
one this fleet's key file is wrapped by. Both are checked to agree (and to be both absent), for the
same reason: an enclave of another fleet KMS key, or of none, never opens this fleet's key, and its
gateway's /healthz would stay 503 with nothing on the instance saying why.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import EifRejected
from nitro_llm.image.digest import file_sha256
from nitro_llm.image.manifest import read_manifest
from nitro_llm.image.publish import Verification, verify_eif

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_manifest_digest(manifest: Path, expected_sha256: str) -> None:
    """The downloaded manifest is byte for byte the one the operator pinned."""
    expected = expected_sha256.strip().lower()
    if not _SHA256.fullmatch(expected):
        raise EifRejected(
            f"{expected_sha256[:80]!r} is not a SHA-256 (64 hex characters)",
            hint="pass the output of 'sha256sum build/image/manifest.json' (its first word)",
        )
    found = file_sha256(manifest)
    if found != expected:
        raise EifRejected(
            f"{manifest} has SHA-256 {found}, not the pinned {expected}",
            hint="download the manifest published with this EIF again, or pin the manifest you published",
        )


def verify_against_manifest(eif: Path, manifest: Path) -> Verification:
    """Every check of the EIF against the manifest; raises EifRejected naming what differs."""
    result = verify_eif(eif, read_manifest(manifest))
    if not result.ok:
        differ = ", ".join(
            f"{check.name} (manifest {check.expected}, EIF {check.found})" for check in result.failed()
        )
        raise EifRejected(f"{eif} does not match {manifest}: {differ}")
    return result


def check_fleet_kms_key(cfg: DeployConfig, manifest: Path) -> None:
    """The image was measured with the fleet KMS key the config names (or, like the config, none)."""
    measured = read_manifest(manifest).fleet_kms_key
    configured = cfg.fleet.kms_key_arn if cfg.fleet is not None else None
    if measured == configured:
        return
    if configured is None:
        raise EifRejected(
            f"{manifest} is a fleet replica's image (measured with the fleet KMS key {measured}), but the"
            " config has no [fleet] section",
            hint="add [fleet] with kms_key_arn and key_file to the deployment config (deploy/nitro-llm.toml),"
            " so that the gateway hands the enclave the fleet key file",
        )
    raise EifRejected(
        f"{manifest} was measured with the fleet KMS key {measured or '(none)'}, but the config's [fleet]"
        f" kms_key_arn is {configured}: that enclave could never open this fleet's key",
        hint="publish an image built with 'nitro-llm image build --fleet-kms-key " + configured + "', or"
        " correct fleet.kms_key_arn",
    )


def check_installed(cfg: DeployConfig) -> Verification:
    """Before each start: the installed EIF still matches the installed manifest."""
    eif, manifest = cfg.path(cfg.enclave.eif), cfg.path(cfg.enclave.manifest)
    for path, what in ((eif, "EIF"), (manifest, "manifest")):
        if not path.is_file():
            raise EifRejected(
                f"no {what} at {path}",
                hint="install the published EIF and manifest with 'nitro-llm deploy install-eif' "
                "(deploy/README.md)",
            )
    result = verify_against_manifest(eif, manifest)
    check_fleet_kms_key(cfg, manifest)
    return result


def install(cfg: DeployConfig, eif: Path, manifest: Path, manifest_sha256: str) -> Verification:
    """Check a downloaded EIF and manifest, then move both to the configured paths (each by an atomic
    rename, the manifest last, so a reader sees either the old pair's manifest or the new one's)."""
    check_manifest_digest(manifest, manifest_sha256)
    result = verify_against_manifest(eif, manifest)
    check_fleet_kms_key(cfg, manifest)
    targets = ((eif, cfg.path(cfg.enclave.eif)), (manifest, cfg.path(cfg.enclave.manifest)))
    for source, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() == target.resolve():
            continue
        staged = target.with_name(f".{target.name}.installing")
        shutil.copyfile(source, staged)
        os.chmod(staged, 0o644)
        staged.replace(target)
        source.unlink()
    return result
