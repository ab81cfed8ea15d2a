"""`nitro-llm deploy ...` (build the EIF with nitro-cli, run it, configure the parent) and
`nitro-llm kms-policy` (from an image manifest or nitro-cli's measurements).

Every command first computes what it will do (argv lists, file texts) with the pure functions in
``nitro_llm.deploy``; ``--dry-run``/``--print`` show exactly that without touching the machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel

from nitro_llm.cli.console import make_console
from nitro_llm.deploy import eif_check, host_files, nitro_cli, runner
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, DeployError
from nitro_llm.deploy.measurements import load_manifest_measurements, load_measurements, parse_measurements
from nitro_llm.errors import NitroLLMError

err = make_console(stderr=True)  # not wrapped at 80 columns when piped

DEFAULT_CONFIGS = (Path("/etc/nitro-llm/deploy.toml"), Path("deploy/nitro-llm.toml"))

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Deployment config (default: $NITRO_LLM_DEPLOY_CONFIG, /etc/nitro-llm/deploy.toml, "
        "then ./deploy/nitro-llm.toml).",
    ),
]
RegionOption = Annotated[str | None, typer.Option(help="Override the config's AWS region.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the commands instead of running them.")]
RootOption = Annotated[
    Path, typer.Option(help="Write files under this root instead of / (to review them before installing).")
]
PrintOption = Annotated[bool, typer.Option("--print", help="Print the files instead of writing them.")]


def resolve_config_path(explicit: Path | None, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if explicit is not None:
        return explicit
    if env.get("NITRO_LLM_DEPLOY_CONFIG"):
        return Path(env["NITRO_LLM_DEPLOY_CONFIG"])
    for candidate in DEFAULT_CONFIGS:
        if candidate.is_file():
            return candidate
    raise DeployConfigError(
        "no deployment config found",
        hint="pass --config, or copy deploy/nitro-llm.toml and set its region",
    )


def _load(config: Path | None, region: str | None = None) -> tuple[DeployConfig, Path]:
    path = resolve_config_path(config)
    return DeployConfig.load(path, region=region), path.resolve()


def _fail(exc: NitroLLMError) -> typer.Exit:
    # soft_wrap: errors and hints stay on one line, so commands in them can be copied whole; escaped, so
    # a config section such as [fleet] is printed, not taken for markup.
    err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True, highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def _show(argv: list[str]) -> None:
    err.print("[dim]$[/] " + " ".join(argv), highlight=False, soft_wrap=True)


def build_eif(
    config: ConfigOption = None, region: RegionOption = None, dry_run: DryRunOption = False
) -> None:
    """Turn an image build into an EIF with nitro-cli (docker import, then build-enclave); save its PCRs.

    Takes build.image_dir, the output of 'nitro-llm image build'. That command with --blobs is the
    reproducible path: it writes the EIF itself, with PCRs anyone can rebuild and compare. nitro-cli
    packs the same files into a ramdisk of its own, so the PCR2 it prints differs from the manifest's,
    and the key policy must pin what it printed (kms-policy --measurements).
    """
    from nitro_llm.image.manifest import read_manifest
    from nitro_llm.image.publish import check_rootfs_tar

    try:
        cfg, _ = _load(config, region)
        manifest_path, rootfs_tar = nitro_cli.image_paths(cfg)
        manifest = read_manifest(manifest_path)
        steps = [nitro_cli.docker_import_argv(cfg, manifest, rootfs_tar), nitro_cli.build_enclave_argv(cfg)]
        if dry_run:
            for argv in steps:
                typer.echo(shlex.join(argv))
            return
        for tool in ("docker", "nitro-cli"):  # both, before importing a large tarball
            runner.require_tool(tool)
        check_rootfs_tar(manifest, rootfs_tar)
        _show(steps[0])
        runner.run(steps[0])
        cfg.path(cfg.enclave.eif).parent.mkdir(parents=True, exist_ok=True)
        _show(steps[1])
        measurements = parse_measurements(runner.run(steps[1], capture_stdout=True))
        out = cfg.path(cfg.build.measurements)
        measurements.save(out)
        eif_bytes = cfg.path(cfg.enclave.eif).stat().st_size
    except NitroLLMError as exc:
        raise _fail(exc) from None
    for index, value in sorted(measurements.pcrs.items()):
        typer.echo(f"PCR{index}: {value}")
    err.print(f"measurements saved to {out}")
    if measurements.pcrs[2] != manifest.pcr2:
        err.print(
            f"note: PCR2 differs from {manifest_path}'s: nitro-cli packs the root filesystem into a "
            "ramdisk of its own. Pin these measurements; 'nitro-llm image build --blobs' gives PCRs "
            "anyone can reproduce.",
            soft_wrap=True,
            highlight=False,
        )
    err.print(
        f"EIF {eif_bytes / nitro_cli.MIB:.1f} MiB: the enclave needs enclave.memory_mib >= "
        f"{nitro_cli.required_memory_mib(eif_bytes)} (configured: {cfg.enclave.memory_mib})"
    )
    err.print("next: nitro-llm kms-policy --measurements " + str(out) + " ... > key-policy.json")


def read_allocator(text: str) -> dict[str, int]:
    """The two numbers we write into allocator.yaml (a full YAML parser is not needed for them)."""
    values: dict[str, int] = {}
    for key in ("memory_mib", "cpu_count"):
        match = re.search(rf"^{key}:\s*(\d+)\s*(#.*)?$", text, re.MULTILINE)
        if match:
            values[key] = int(match.group(1))
    return values


def check_allocator(cfg: DeployConfig, allocator_text: str | None) -> None:
    """The allocator reserves what run-enclave may take: a smaller reservation fails at launch."""
    if allocator_text is None:
        return
    have = read_allocator(allocator_text)
    for key, want in (("memory_mib", cfg.enclave.memory_mib), ("cpu_count", cfg.enclave.cpu_count)):
        if key in have and have[key] < want:
            raise DeployConfigError(
                f"the allocator reserves {key}={have[key]} but the enclave asks for {want}",
                hint="run 'sudo nitro-llm deploy allocator' and "
                f"'sudo systemctl restart {host_files.ALLOCATOR_UNIT}'",
            )


def run(
    config: ConfigOption = None,
    debug_mode: Annotated[
        bool,
        typer.Option(
            "--debug-mode",
            help="UNSAFE: console attached, PCRs read as zero, so KMS refuses the enclave. "
            "Never with real data.",
        ),
    ] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Start the enclave once with nitro-cli (the EIF checked against its manifest first), in production
    mode unless --debug-mode is given. The enclave unit runs 'deploy supervise' instead, which also
    restarts it."""
    try:
        cfg, _ = _load(config)
        argv = nitro_cli.run_enclave_argv(cfg, debug_mode=debug_mode)
        if debug_mode:
            err.print(Panel(nitro_cli.DEBUG_MODE_WARNING, title="WARNING", style="bold red"))
        if dry_run:
            typer.echo(" ".join(argv))
            return
        eif = cfg.path(cfg.enclave.eif)
        if eif.is_file():  # cheap first: a file too large for the enclave's memory is not read
            nitro_cli.check_enclave_memory(cfg.enclave.memory_mib, eif.stat().st_size)
        eif_check.check_installed(cfg)  # the EIF the manifest describes, every time
        allocator = host_files.ALLOCATOR_PATH
        check_allocator(cfg, allocator.read_text() if allocator.is_file() else None)
        _show(argv)
        out = runner.run(argv, capture_stdout=True)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    typer.echo(out.strip())


def stop(config: ConfigOption = None, dry_run: DryRunOption = False) -> None:
    """Terminate the enclave started by 'deploy run'."""
    try:
        cfg, _ = _load(config)
        argv = nitro_cli.terminate_enclave_argv(cfg)
        if dry_run:
            typer.echo(" ".join(argv))
            return
        _show(argv)
        typer.echo(runner.run(argv, capture_stdout=True).strip())
    except NitroLLMError as exc:
        raise _fail(exc) from None


def _emit(files: dict[Path, str], root: Path, print_only: bool) -> None:
    if print_only:
        for path, text in files.items():
            typer.echo(f"# ---- {path}")
            typer.echo(text, nl=False)
        return
    try:
        written = host_files.write_files(files, root)
    except OSError as exc:
        raise _fail(
            DeployError(
                f"cannot write {exc.filename} ({exc.strerror})",
                hint="run with sudo on the parent instance, or pass --root DIR / --print to review",
            )
        ) from None
    for path in written:
        err.print(f"wrote {path}")


def allocator(
    config: ConfigOption = None, root: RootOption = Path("/"), print_only: PrintOption = False
) -> None:
    """Render /etc/nitro_enclaves/allocator.yaml (the CPUs and memory reserved for the enclave)."""
    _render_host_files(
        config,
        root,
        print_only,
        lambda cfg, _path: host_files.render_allocator(cfg),
        f"next: sudo systemctl enable --now {host_files.ALLOCATOR_UNIT} (restart it after changes)",
    )


def systemd(
    config: ConfigOption = None, root: RootOption = Path("/"), print_only: PrintOption = False
) -> None:
    """Render the systemd units (gateway, vsock-proxy, enclave) and the vsock-proxy allowlist."""
    units = " ".join((host_files.VSOCK_PROXY_UNIT, host_files.ENCLAVE_UNIT, host_files.GATEWAY_UNIT))
    _render_host_files(
        config,
        root,
        print_only,
        host_files.render_systemd,
        f"next: sudo systemctl disable --now {host_files.STOCK_VSOCK_PROXY_UNIT}; "
        f"sudo systemctl daemon-reload && sudo systemctl enable --now {units}",
    )


def _render_host_files(
    config: Path | None,
    root: Path,
    print_only: bool,
    render: Callable[[DeployConfig, Path], dict[Path, str]],
    next_step: str,
) -> None:
    """Load the config, write (or print) the files ``render`` gives, then say what to run next."""
    try:
        cfg, path = _load(config)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    _emit(render(cfg, path), root, print_only)
    if not print_only:
        err.print(next_step)


CFN_PARAMETER_LIMIT = 4096
"""Bytes a CloudFormation parameter value may hold; the template takes the policy as one."""

_ACCOUNT = re.compile(r"^\d{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:[A-Za-z0-9+=,.@_/:-]+$")


def _check_arn(kind: str, arn: str) -> str:
    if not _ARN.fullmatch(arn):
        raise DeployConfigError(
            f"{kind} {arn!r} is not an IAM ARN",
            hint="use a full ARN such as arn:aws:iam::123456789012:role/NAME",
        )
    return arn


def kms_policy(
    account: Annotated[str, typer.Option(help="The 12-digit AWS account that owns the key.")],
    enclave_role: Annotated[str, typer.Option(help="ARN of the instance role the enclave uses for KMS.")],
    client: Annotated[
        list[str], typer.Option(help="ARN allowed to GenerateDataKey and Decrypt (repeatable).")
    ],
    admin: Annotated[str, typer.Option(help="ARN that manages the key (cannot decrypt).")],
    image_sha384: Annotated[
        bool,
        typer.Option(
            "--image-sha384",
            help="Pin the image digest as kms:RecipientAttestation:ImageSha384 (equal to PCR0) "
            "instead of PCR0.",
        ),
    ] = False,
    output: Annotated[Path | None, typer.Option(help="Write the policy here instead of stdout.")] = None,
    compact: Annotated[bool, typer.Option(help="One line of JSON (for a CloudFormation parameter).")] = False,
    manifest: Annotated[
        list[Path] | None,
        typer.Option(
            help="The image manifest of 'nitro-llm image build --blobs' (its EIF's PCRs): the policy "
            "exists before any instance does. Repeat it during a rolling update (--manifest OLD "
            "--manifest NEW): either image's complete set of PCRs is accepted, never a mix."
        ),
    ] = None,
    measurements: Annotated[
        list[Path] | None,
        typer.Option(
            help="Or: the measurements JSON saved by 'deploy build-eif' (or nitro-cli's output); "
            "repeatable, and may be combined with --manifest."
        ),
    ] = None,
) -> None:
    """Print the KMS key policy for this enclave: only an attested enclave with these PCRs decrypts.

    Several images (a rolling update's old and new) get one statement each: the enclave role decrypts
    from an enclave that has all the PCRs of one of them."""
    from nitro_llm.kms.key_policy import ENCLAVE_ALLOW_SID, EnclaveMeasurements, build_key_policy

    try:
        sources = [
            *(("manifest", p) for p in manifest or ()),
            *(("measurements", p) for p in measurements or ()),
        ]
        if not sources:
            raise DeployConfigError(
                "give --manifest or --measurements (each may be repeated)",
                hint="--manifest from 'nitro-llm image build', or --measurements from nitro-cli",
            )
        if not _ACCOUNT.fullmatch(account):
            raise DeployConfigError(f"{account!r} is not a 12-digit AWS account id")
        for kind, arn in (
            ("--enclave-role", enclave_role),
            ("--admin", admin),
            *(("--client", c) for c in client),
        ):
            _check_arn(kind, arn)
        images = []
        for kind, path in sources:
            found = load_manifest_measurements(path) if kind == "manifest" else load_measurements(path)
            pcrs = found.policy_pcrs()
            image = pcrs.pop(0) if image_sha384 else None  # ImageSha384 is PCR0 under another name
            images.append(EnclaveMeasurements(pcrs, image))
        policy = build_key_policy(
            account=account,
            admin_arn=admin,
            client_arns=list(client),
            enclave_role_arn=enclave_role,
            pcrs=images[0].pcrs,
            image_sha384=images[0].image_sha384,
            also_accept=images[1:],
        )
    except NitroLLMError as exc:
        raise _fail(exc) from None
    accepted = sum(1 for s in policy["Statement"] if s["Sid"].startswith(ENCLAVE_ALLOW_SID))
    if accepted > 1:
        err.print(
            f"note: the enclave role may decrypt from any of {accepted} images; once every replica "
            "runs the new one, narrow the policy to it (deploy/README.md, 'Rolling update')",
            soft_wrap=True,
            highlight=False,
        )
    one_line = json.dumps(policy, separators=(",", ":"))
    if len(one_line.encode()) > CFN_PARAMETER_LIMIT:
        err.print(
            f"[yellow]warning:[/] the policy is {len(one_line.encode())} bytes; a CloudFormation "
            f"parameter holds {CFN_PARAMETER_LIMIT}: attach it with 'aws kms put-key-policy' "
            "instead of the KeyPolicy parameter",
            soft_wrap=True,
        )
    text = (one_line if compact else json.dumps(policy, indent=2)) + "\n"
    if output:
        output.write_text(text)
        err.print(f"key policy written to {output}")
    else:
        sys.stdout.write(text)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="deploy",
        help="Deploy on real Nitro Enclaves: build the EIF, run it, configure the parent instance.",
        no_args_is_help=True,
    )
    group.command("build-eif")(build_eif)
    group.command("run")(run)
    group.command("stop")(stop)
    group.command("allocator")(allocator)
    group.command("systemd")(systemd)
    from nitro_llm.cli import deploy_host

    deploy_host.register(group)
    app.add_typer(group)
    app.command("kms-policy")(kms_policy)
