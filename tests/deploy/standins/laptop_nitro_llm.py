"""The operator's ``nitro-llm``: the real command line, with two stand-ins. ``image build`` skips
only the slow root-filesystem build (see image_standin); commands that need a live enclave signed
by AWS's Nitro root, or KMS (``attest fetch``, ``attest verify``, ``ask``), have their arguments
parsed by the real parser and stop there."""

from __future__ import annotations

import sys

import click
import typer

from standins.recording import record

NEEDS_AWS = (["attest", "fetch"], ["attest", "verify"], ["ask"])


def _parse_only(argv: list[str]) -> None:
    from nitro_llm.cli.main import full_app

    command: click.Command = typer.main.get_command(full_app())
    ctx = command.make_context("nitro-llm", list(argv))
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, ctx.protected_args + ctx.args)
        ctx = command.make_context(name or "", rest, parent=ctx)


def main(argv: list[str]) -> int:
    record("nitro-llm", argv)
    if any(argv[: len(prefix)] == prefix for prefix in NEEDS_AWS):
        _parse_only(argv)
        print(f"stand-in: {' '.join(argv[:2])} parsed; it needs AWS to run", file=sys.stderr)
        return 0
    from nitro_llm.cli.main import main as real_main

    if argv[:2] == ["image", "build"]:
        import image_standin

        with image_standin.fast_root_filesystem():
            real_main(argv)
        return 0
    real_main(argv)
    return 0
