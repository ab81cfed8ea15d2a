"""`nitro-llm image build|describe|verify|docker-import-args|lock|python-lock`: the enclave image,
built once and checked everywhere.

``build`` makes the root filesystem, the application ramdisk and the manifest from pinned inputs
(``nitro_llm.image.build``), and with nitro-cli's blobs the EIF whose PCRs go into the manifest: the
same commit gives the same bytes and PCRs on any machine, so the key policy can be generated before
any instance exists. ``verify`` is what an instance runs on the EIF it downloaded before
``nitro-cli run-enclave``. ``describe`` prints what ``nitro-cli describe-eif`` prints, without
nitro-cli. ``docker-import-args`` prints the ``docker import`` line for operators who build with
nitro-cli instead.

The build needs the development extras (the import-graph walk); ``verify`` and ``describe`` only need
the product, as installed on an instance.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.cli.enclave import (
    BatchOpt,
    CtxOpt,
    FleetKmsKeyOpt,
    SeedOpt,
    ThreadsOpt,
    TtlOpt,
    WaitingOpt,
    WindowOpt,
    enclave_config,
)
from nitro_llm.enclave.data_keys import DEFAULT_TTL_SECONDS
from nitro_llm.enclave.freshness import DEFAULT_WINDOW_SECONDS
from nitro_llm.errors import NitroLLMError
from nitro_llm.image.manifest import MANIFEST_FILE
from nitro_llm.inference.llama_engine import DEFAULT_CTX

image_app = typer.Typer(
    help="The enclave image: build it reproducibly, describe and verify EIFs.", no_args_is_help=True
)

EXIT_MISMATCH = 1
EXIT_ERROR = 2
MIB = 1024 * 1024

ManifestOpt = Annotated[
    Path,
    typer.Option("--manifest", help="The manifest.json published with the EIF ('image build' writes it)."),
]


def _fail(exc: NitroLLMError) -> typer.Exit:
    typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    return typer.Exit(EXIT_ERROR)


def _blobs_dir(explicit: Path | None) -> Path | None:
    from nitro_llm.image.publish import DEFAULT_BLOBS

    if explicit is not None:
        return explicit
    return DEFAULT_BLOBS if DEFAULT_BLOBS.is_dir() else None


@image_app.command("build")
def build(
    out: Annotated[Path, typer.Argument(help="Build directory (a previous build there is replaced).")],
    model: Annotated[
        Path | None, typer.Option("--model", help="A GGUF file (default: the packaged SmolLM2).")
    ] = None,
    model_sha256: Annotated[
        str | None, typer.Option("--model-sha256", help="The model file's SHA-256 (required with --model).")
    ] = None,
    threads: ThreadsOpt = 0,
    ctx: CtxOpt = DEFAULT_CTX,
    freshness_window: WindowOpt = DEFAULT_WINDOW_SECONDS,
    data_key_ttl: TtlOpt = DEFAULT_TTL_SECONDS,
    seed_compat: SeedOpt = False,
    batch_size: BatchOpt = 8,
    max_waiting: WaitingOpt = 8,
    fleet_kms_key: FleetKmsKeyOpt = None,
    region: Annotated[
        str | None,
        typer.Option("--region", help="AWS region of the KMS key: required to serve on Nitro (measured)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="vsock port the enclave serves on (default 5000)."),
    ] = None,
    kms_proxy_port: Annotated[
        int | None,
        typer.Option(
            "--kms-proxy-port", min=1, max=65535, help="The parent's vsock-proxy port (default 8000)."
        ),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="The model's name in answers (default: derived).")
    ] = None,
    blobs: Annotated[
        Path | None,
        typer.Option(
            "--blobs",
            help="nitro-cli's blobs directory (bzImage, cmdline, init, nsm.ko); default "
            "/usr/share/nitro_enclaves/blobs when it exists. Without blobs: no EIF, PCR2 only.",
        ),
    ] = None,
    arch: Annotated[
        str, typer.Option("--arch", help="x86_64 or aarch64 (the blobs' architecture).")
    ] = "x86_64",
    signing_certificate: Annotated[
        Path | None, typer.Option("--signing-certificate", help="Sign the EIF (adds PCR8): certificate PEM.")
    ] = None,
    private_key: Annotated[
        Path | None, typer.Option("--private-key", help="The signing certificate's ECDSA private key (PEM).")
    ] = None,
    llama_wheel: Annotated[
        Path | None,
        typer.Option("--llama-wheel", help="The portable llama-cpp-python wheel (default: cached)."),
    ] = None,
    entry: Annotated[
        str | None, typer.Option("--entry", help="The enclave's entry module (advanced).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines on stderr.")] = False,
) -> None:
    """Build the enclave image from pinned inputs; with nitro-cli's blobs, also the EIF and its PCRs."""
    config = enclave_config(
        None, "llama", threads, ctx, False, freshness_window, data_key_ttl, seed_compat,
        batch_size=batch_size, max_waiting=max_waiting, fleet_kms_key=fleet_kms_key,
    )  # fmt: skip
    _check_fleet_region(fleet_kms_key, region)
    if (signing_certificate is None) != (private_key is None):
        raise typer.BadParameter("--signing-certificate and --private-key go together")
    blobs_dir = _blobs_dir(blobs)
    if signing_certificate is not None and blobs_dir is None:
        raise typer.BadParameter("signing needs the EIF, and the EIF needs --blobs DIR")
    for path in (signing_certificate, private_key):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"no file at {path}")
    try:
        from nitro_llm.image.build import build_image
        from nitro_llm.image.layout import entry_args
        from nitro_llm.image.modules import DEFAULT_ENTRY
        from nitro_llm.image.progress import Progress
        from nitro_llm.image.publish import EIF, add_eif, blobs_input

        args = entry_args(region=region, port=port, kms_proxy_port=kms_proxy_port, model_name=model_name)
        if blobs_dir is not None:
            blobs_input(blobs_dir, arch)  # a missing blob fails now, not after the build
        progress = Progress(quiet=quiet)
        manifest = build_image(
            out,
            model=model,
            model_sha256=model_sha256,
            config=config,
            llama_wheel=llama_wheel,
            entry=entry or DEFAULT_ENTRY,
            entry_args=args,
            progress=progress,
        )
        stale = out / EIF
        if stale.exists():  # from an earlier build here: it must not outlive its manifest
            stale.unlink()
        if blobs_dir is not None:
            manifest = add_eif(
                out,
                manifest,
                blobs_dir,
                arch=arch,
                signing_cert=signing_certificate,
                signing_key=private_key,
                progress=progress,
            )
    except NitroLLMError as exc:
        raise _fail(exc) from None
    manifest_path = out / MANIFEST_FILE
    if region is None:
        typer.echo(
            "note: no --region: this image serves in local mode only; on Nitro it stops at start", err=True
        )
    if manifest.eif is None:
        typer.echo(f"PCR2: {manifest.pcr2}")
        typer.echo(
            "no nitro-cli blobs (/usr/share/nitro_enclaves/blobs is absent): built the root filesystem, "
            "the ramdisk and PCR2; PCR0/PCR1 need the EIF: pass --blobs DIR",
            err=True,
        )
        typer.echo(f"manifest: {manifest_path}", err=True)
        return
    for name, value in manifest.eif.measurements().items():
        if name != "HashAlgorithm":
            typer.echo(f"{name}: {value}")
    typer.echo(
        f"EIF {out / manifest.eif.file} ({manifest.eif.size / MIB:.1f} MiB) and its manifest "
        f"{manifest_path}: publish both",
        err=True,
    )
    typer.echo(f"next: nitro-llm kms-policy --manifest {manifest_path} ... > key-policy.json", err=True)
    if fleet_kms_key is not None:
        typer.echo(
            f"next: nitro-llm fleet-key policy --manifest {manifest_path} ... (the fleet KMS key's policy)",
            err=True,
        )


def _check_fleet_region(fleet_kms_key: str | None, region: str | None) -> None:
    """The enclave reaches KMS in its own region only (vsock-proxy's allowlist names one endpoint), so a
    fleet KMS key elsewhere could never be opened: refuse the build rather than a fleet that never serves."""
    if fleet_kms_key is None or region is None:
        return
    key_region = fleet_kms_key.split(":")[3]
    if key_region != region:
        raise typer.BadParameter(
            f"the fleet KMS key is in {key_region} but the image serves in {region}: the enclave reaches only"
            f" kms.{region}; create the fleet KMS key in {region}",
            param_hint="'--fleet-kms-key'",
        )


@image_app.command("describe")
def describe(eif: Annotated[Path, typer.Argument(help="An .eif file.")]) -> None:
    """Print the EIF's measurements and metadata as 'nitro-cli describe-eif' does."""
    from nitro_llm.image.eif import describe_eif

    try:
        info = describe_eif(eif)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(info, indent=2, ensure_ascii=False))


@image_app.command("verify")
def verify(
    eif: Annotated[Path, typer.Argument(help="The .eif file to check.")], manifest: ManifestOpt
) -> None:
    """Check an EIF against a published manifest (PCRs, application ramdisk, CRC, signature).

    Run it on the instance before 'nitro-cli run-enclave'. Exit status 0: every check passed; 1: the
    EIF differs (each difference is named); 2: a file cannot be read or is not an EIF/manifest.
    """
    from nitro_llm.image.manifest import read_manifest
    from nitro_llm.image.publish import verify_eif

    try:
        result = verify_eif(eif, read_manifest(manifest))
    except NitroLLMError as exc:
        raise _fail(exc) from None
    for check in result.checks:
        if check.ok:
            typer.echo(f"ok        {check.name}: {check.expected}")
        else:
            typer.echo(f"MISMATCH  {check.name}: manifest {check.expected}, EIF {check.found}")
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if not result.ok:
        names = ", ".join(check.name for check in result.failed())
        typer.echo(f"error: {eif} does not match {manifest}: {names} differ", err=True)
        typer.echo(
            "hint: do not run this EIF; download it again or rebuild from the manifest's inputs", err=True
        )
        raise typer.Exit(EXIT_MISMATCH)
    typer.echo(f"{eif} matches {manifest}", err=True)


@image_app.command("docker-import-args")
def docker_import_args(
    manifest: Annotated[Path, typer.Argument(help="The build's manifest.json.")],
    tag: Annotated[
        str, typer.Option("--tag", help="The docker image to create.")
    ] = "nitro-llm-enclave:latest",
    rootfs_tar: Annotated[
        Path | None, typer.Option("--rootfs-tar", help="Default: rootfs.tar next to the manifest.")
    ] = None,
) -> None:
    """Print the 'docker import' line giving nitro-cli the image's root filesystem, command and env."""
    from nitro_llm.image.manifest import read_manifest
    from nitro_llm.image.publish import docker_import_argv

    try:
        published = read_manifest(manifest)
        tar = rootfs_tar or manifest.parent / published.rootfs_tar.file
        typer.echo(shlex.join(docker_import_argv(published, tar, tag)))
    except NitroLLMError as exc:
        raise _fail(exc) from None


@image_app.command("lock")
def lock(
    action: Annotated[
        str,
        typer.Argument(
            help="update: rewrite the lock from what the mirror serves now; "
            "check: name every package the mirror no longer serves as locked."
        ),
    ],
    path: Annotated[
        Path | None, typer.Argument(help="The lock file (default: deploy/image/debian.lock).")
    ] = None,
) -> None:
    """The Debian packages of the image, at exact versions with their SHA-256 (needs mmdebstrap)."""
    from nitro_llm.image.lock import DEFAULT_LOCK_PATH, check_lock, update_lock

    if action not in ("update", "check"):
        raise typer.BadParameter("the action is update or check")
    target = path or DEFAULT_LOCK_PATH
    try:
        locked = update_lock(target) if action == "update" else check_lock(target)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    done = "written" if action == "update" else "match the mirror"
    typer.echo(f"{target}: {len(locked.packages)} packages {done}")


@image_app.command("python-lock")
def python_lock(
    action: Annotated[str, typer.Argument(help="update: pin the wheels the enclave entry's imports need.")],
    entry: Annotated[str | None, typer.Option(help="The enclave's entry module.")] = None,
) -> None:
    """The enclave's third-party wheels, each pinned by SHA-256 (deploy/image/python.lock)."""
    from nitro_llm.image.modules import DEFAULT_ENTRY, reachable
    from nitro_llm.image.python_lock import DEFAULT_PYTHON_LOCK, enclave_requirements, update_python_lock

    if action != "update":
        raise typer.BadParameter("the action is update")
    try:
        wheels = update_python_lock(enclave_requirements(reachable(entry or DEFAULT_ENTRY).external))
    except NitroLLMError as exc:
        raise _fail(exc) from None
    typer.echo(f"{DEFAULT_PYTHON_LOCK}: {len(wheels)} wheels written")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
