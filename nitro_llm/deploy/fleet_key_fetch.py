"""Keep a fleet instance's wrapped fleet key file the one the operator published (``[fleet] source``).

The operator rotates the fleet key on their machine ('nitro-llm fleet-key rotate', then 'retire') and
uploads the file; every instance's ``nitro-llm-fleet-key.timer`` runs 'deploy fetch-fleet-key', which
downloads it with the AWS CLI (the instance role may read that one object), checks it, and renames it
over ``[fleet] key_file`` only when it changed. The gateway notices the change (size or modification
time) and hands the new generations to its enclave; nothing restarts.

The file holds only KMS ciphertext, so these checks are not what keeps the fleet key safe (KMS and the
enclave do that). They keep a wrong upload from reaching the gateway, and say why on the instance: a
file of another fleet KMS key (the enclave would refuse it), or an older generation than the installed
one (an upload of a stale copy; the enclave would refuse that as a rollback). A refused download
leaves the installed file as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.deploy import runner
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, DeployError
from nitro_llm.fleet.errors import FleetKeyFileError
from nitro_llm.fleet.key_file import FleetKeyFile


class FleetKeyFetchRefused(DeployError, code="fleet_key_fetch_refused"):
    """the installed fleet key file is kept; check the uploaded one on your machine ('nitro-llm fleet-key
    show --file fleet-key.json') and upload the file 'fleet-key rotate|retire' last wrote"""


@dataclass(frozen=True)
class FetchResult:
    keys: FleetKeyFile
    changed: bool
    """False: the published file is byte for byte the installed one (left untouched)."""


def download_path(cfg: DeployConfig) -> Path:
    """Beside the key file, so that installing it is one atomic rename on the same filesystem."""
    if cfg.fleet is None:
        raise DeployConfigError(
            "the config has no [fleet] section",
            hint="add [fleet] with kms_key_arn, key_file and source (deploy/nitro-llm.toml)",
        )
    target = cfg.path(cfg.fleet.key_file)
    return target.with_name(f".{target.name}.download")


def fetch_argv(cfg: DeployConfig) -> list[str]:
    if cfg.fleet is None or cfg.fleet.source is None:
        raise DeployConfigError(
            "fleet.source is not set: there is nothing to download the fleet key file from",
            hint='set [fleet] source = "s3://BUCKET/fleet-key.json", where you upload the file',
        )
    region = ["--region", cfg.region]
    return ["aws", "s3", "cp", "--only-show-errors", *region, cfg.fleet.source, str(download_path(cfg))]


def install_downloaded(cfg: DeployConfig, downloaded: Path) -> FetchResult:
    """Check the downloaded file and rename it over the key file if it differs; remove it otherwise."""
    assert cfg.fleet is not None  # download_path() refused a config without one
    target = cfg.path(cfg.fleet.key_file)
    source = cfg.fleet.source or str(downloaded)
    try:
        try:
            keys = FleetKeyFile.load(downloaded)
        except FleetKeyFileError as exc:
            raise FleetKeyFetchRefused(f"{source} is not a fleet key file: {exc.message}") from None
        if keys.kms_key_arn != cfg.fleet.kms_key_arn:
            raise FleetKeyFetchRefused(
                f"{source} is wrapped by {keys.kms_key_arn}, not by this fleet's {cfg.fleet.kms_key_arn}"
                " (the enclave is measured with that one and would refuse it)"
            )
        installed = _installed(target)
        if installed is not None:
            _refuse_rollback(source, installed, keys)
            if target.read_bytes() == downloaded.read_bytes():
                return FetchResult(keys, changed=False)
        downloaded.chmod(0o644)  # ciphertext only; the gateway's user reads it
        downloaded.replace(target)
        return FetchResult(keys, changed=True)
    finally:
        downloaded.unlink(missing_ok=True)


def _installed(target: Path) -> FleetKeyFile | None:
    """The installed file, or None when there is none (first boot) or it cannot be read (replace it)."""
    try:
        return FleetKeyFile.load(target)
    except FleetKeyFileError:
        return None


def _refuse_rollback(source: str, installed: FleetKeyFile, new: FleetKeyFile) -> None:
    old_current, new_current = installed.current, new.current
    if new_current.generation < old_current.generation or (
        new_current.generation == old_current.generation and new_current.id != old_current.id
    ):
        raise FleetKeyFetchRefused(
            f"{source} has generation {new_current.generation} ({new_current.id}) as current, but this"
            f" instance already has generation {old_current.generation} ({old_current.id}): a stale copy, or"
            " a fleet key re-created with 'fleet-key create --replace' (then delete the installed file"
            " on each instance, or replace the instances)"
        )


def fetch(cfg: DeployConfig, run: Callable[[list[str]], object] = runner.run) -> FetchResult:
    """Download the published file (``run`` executes the AWS CLI) and install it if it changed."""
    argv = fetch_argv(cfg)
    downloaded = download_path(cfg)
    downloaded.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(argv)
    except BaseException:
        downloaded.unlink(missing_ok=True)
        raise
    if not downloaded.is_file():
        raise DeployError(
            f"'aws s3 cp' left no file at {downloaded}", hint="run the command by hand to see why"
        )
    return install_downloaded(cfg, downloaded)
