"""`nitro-llm fleet-key create|rotate|retire|show|policy`: the operator's commands for the fleet key.

The fleet key file these write holds only KMS ciphertext (nitro_llm/fleet/key_file.py): upload it to
S3, where every fleet instance fetches it ('nitro-llm deploy fetch-fleet-key', a timer), or into a
Kubernetes ConfigMap; the gateway hands it to its enclave (``nitro-llm gateway --fleet-key-file``). No
command here ever holds the fleet key itself: KMS makes it and releases it only to attested enclaves.
The steps in order, and the rotation's, are in deploy/README.md ('The fleet key').
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nitro_llm.errors import NitroLLMError

fleet_key_app = typer.Typer(
    help="The fleet key: one attested HPKE key shared by every replica, wrapped by KMS.", no_args_is_help=True
)

FileOpt = Annotated[Path, typer.Option("--file", help="The fleet key file (JSON; only KMS ciphertext).")]
RegionOpt = Annotated[str, typer.Option(help="AWS region of the KMS key.")]
EndpointOpt = Annotated[
    str | None, typer.Option(help="KMS endpoint URL (default: AWS; local mode: the emulator's URL).")
]
CredentialsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Local mode: the KMS emulator's credentials.json (its 'admin' entry). Default: the AWS chain."
    ),
]


def _fail(exc: NitroLLMError) -> typer.Exit:
    typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    return typer.Exit(1)


def _kms(region: str, endpoint: str | None, credentials_file: Path | None) -> Any:
    from nitro_llm.kms.client import make_kms_client

    credentials = None
    if credentials_file is not None:
        try:
            credentials = json.loads(credentials_file.read_text())["admin"]
        except (OSError, ValueError, KeyError, TypeError):
            raise typer.BadParameter(
                f"{credentials_file} has no 'admin' entry", param_hint="'--credentials-file'"
            ) from None
    return make_kms_client(endpoint, credentials, region)


def _describe(keys: Any) -> None:
    for role, generation in (("current", keys.current), ("previous", keys.previous)):
        if generation is not None:
            typer.echo(
                f"{role:8} id {generation.id} generation {generation.generation} created {generation.created}"
            )
    typer.echo(f"wrapped by {keys.kms_key_arn}")


@fleet_key_app.command("create")
def create(
    file: FileOpt,
    kms_key: Annotated[str, typer.Option(help="The fleet's own KMS key (ARN, id or alias).")],
    region: RegionOpt = "us-east-1",
    kms_endpoint: EndpointOpt = None,
    credentials_file: CredentialsOpt = None,
    replace: Annotated[
        bool, typer.Option(help="Overwrite an existing file (every replica and client changes key at once).")
    ] = False,
) -> None:
    """Have KMS generate the fleet key (generation 1) and write the file. Its KMS key's policy must
    come from 'nitro-llm fleet-key policy'; the enclaves must be measured with its ARN (--fleet-kms-key)."""
    from nitro_llm.fleet.operator import create as create_file

    try:
        keys = create_file(file, _kms(region, kms_endpoint, credentials_file), kms_key, replace=replace)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    _describe(keys)


@fleet_key_app.command("rotate")
def rotate(
    file: FileOpt,
    region: RegionOpt = "us-east-1",
    kms_endpoint: EndpointOpt = None,
    credentials_file: CredentialsOpt = None,
) -> None:
    """Step 1 of a rotation: a new generation is attested from now on; the old one is still opened
    (the overlap). Gateways pick the file up without a restart."""
    from nitro_llm.fleet.operator import rotate as rotate_file

    try:
        keys = rotate_file(file, _kms(region, kms_endpoint, credentials_file))
    except NitroLLMError as exc:
        raise _fail(exc) from None
    _describe(keys)
    typer.echo("overlap: the previous generation is still opened; end it with 'nitro-llm fleet-key retire'")


RetiredFileOpt = Annotated[
    Path | None,
    typer.Option(
        help="The fleet's list of retired generation ids, one a line: 'retire' appends to it, 'policy' denies"
        " every id in it (keep it beside the fleet key file; no secret in it)."
    ),
]


@fleet_key_app.command("retire")
def retire(file: FileOpt, retired_file: RetiredFileOpt = None) -> None:
    """Step 2 of a rotation: end the overlap; only the current generation is opened from now on."""
    from nitro_llm.fleet.operator import retire as retire_file

    try:
        keys, retired_id = retire_file(file)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    _describe(keys)
    if retired_file is not None:
        with retired_file.open("a", encoding="utf-8") as out:
            out.write(retired_id + "\n")
        typer.echo(
            f"retired {retired_id}, recorded in {retired_file}: regenerate the key policy with"
            f" 'fleet-key policy ... --retired-file {retired_file}' so that no enclave can obtain it again"
        )
        return
    typer.echo(
        f"retired {retired_id}: add it to the key policy ('fleet-key policy --retired {retired_id}') so that"
        " no enclave can obtain it again"
    )


@fleet_key_app.command("show")
def show(file: FileOpt) -> None:
    """List the live generations (ids, generations, the KMS key); never any key material."""
    from nitro_llm.fleet.key_file import FleetKeyFile

    try:
        _describe(FleetKeyFile.load(file))
    except NitroLLMError as exc:
        raise _fail(exc) from None


@fleet_key_app.command("policy")
def policy(
    account: Annotated[str, typer.Option(help="The 12-digit AWS account that owns the key.")],
    admin: Annotated[str, typer.Option(help="ARN that manages the key and creates fleet keys.")],
    enclave_role: Annotated[str, typer.Option(help="ARN of the role the enclaves use for KMS.")],
    manifest: Annotated[
        list[Path] | None,
        typer.Option(
            help="The image manifest of 'nitro-llm image build --fleet-kms-key' (its EIF's PCRs). Repeat it"
            " during a rolling update (--manifest OLD --manifest NEW): either image's complete set of PCRs"
            " opens the fleet key, never a mix."
        ),
    ] = None,
    pcrs: Annotated[
        Path | None,
        typer.Option(help='Or: the replicas\' PCRs as JSON {"0": hex, "1": hex, "2": hex}.'),
    ] = None,
    before_image: Annotated[
        bool,
        typer.Option(
            "--before-image",
            help="No image yet: the policy to create the key with (its ARN is measured into the image),"
            " under which no enclave opens a fleet key. Replace it with the --manifest policy once the"
            " image is built.",
        ),
    ] = False,
    retired: Annotated[
        list[str] | None, typer.Option(help="A retired generation id no one may open again (repeatable).")
    ] = None,
    retired_file: RetiredFileOpt = None,
) -> None:
    """Print the fleet KMS key's policy: attested enclaves open the fleet key, nobody else ever does."""
    from nitro_llm.deploy.measurements import load_manifest_measurements
    from nitro_llm.fleet.key_policy import build_fleet_key_policy
    from nitro_llm.kms.key_policy import EnclaveMeasurements

    if before_image and (manifest or pcrs is not None):
        raise typer.BadParameter("--before-image pins no image: leave out --manifest and --pcrs")
    if not (before_image or manifest or pcrs is not None):
        raise typer.BadParameter(
            "give --manifest (repeatable) or --pcrs; or --before-image to create the key before the image",
            param_hint="'--manifest'",
        )
    images: list[EnclaveMeasurements] = []
    if pcrs is not None:
        try:
            measured = json.loads(pcrs.read_text())
            images.append(EnclaveMeasurements({int(index): value for index, value in measured.items()}))
        except (OSError, ValueError, AttributeError):
            raise typer.BadParameter(
                f"{pcrs} is not a JSON map of PCR index to hex", param_hint="'--pcrs'"
            ) from None
    try:
        images += [EnclaveMeasurements(load_manifest_measurements(m).policy_pcrs()) for m in manifest or ()]
        retired_ids = [*(retired or ()), *(_read_retired(retired_file) if retired_file is not None else ())]
        document = build_fleet_key_policy(
            account,
            admin,
            enclave_role,
            images[0].pcrs if images else None,
            also_accept=images[1:],
            retired_ids=sorted(set(retired_ids)),
        )
    except NitroLLMError as exc:
        raise _fail(exc) from None
    if len(images) > 1:
        typer.echo(
            f"note: enclaves of any of {len(images)} images may open the fleet key; once every replica runs"
            " the new one, narrow the policy to it (deploy/README.md, 'Rolling update')",
            err=True,
        )
    elif not images:
        typer.echo(
            "note: no enclave may open a fleet key under this policy; once the image is built with this key's"
            " ARN (--fleet-kms-key), replace it with 'fleet-key policy --manifest ...'",
            err=True,
        )
    typer.echo(json.dumps(document, indent=2))


def _read_retired(path: Path) -> list[str]:
    """The ids in a retired-ids file; a file not there yet means no generation was retired yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        typer.echo(f"note: {path} does not exist yet: no retired generation is denied", err=True)
        return []
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path} ({exc.strerror})", param_hint="'--retired-file'"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def register(app: typer.Typer) -> None:
    app.add_typer(fleet_key_app, name="fleet-key")
