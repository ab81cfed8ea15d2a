"""Helpers for the CloudFormation template tests: the templates read with CloudFormation's short-form
tags, cfn-lint and checkov found and run, UserData substituted as CloudFormation would."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "deploy" / "cloudformation"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as their long forms."""


def _construct(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # a SafeLoader subclass


def cfn_lint() -> str:
    beside = Path(sys.executable).with_name("cfn-lint")
    found = str(beside) if beside.exists() else shutil.which("cfn-lint")
    if not found:
        pytest.fail("cfn-lint is not installed: pip install -e '.[dev]' (it is a dev dependency)")
    return found


def run_cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational.
    return subprocess.run([cfn_lint(), str(template)], capture_output=True, text=True, timeout=300)


def checkov() -> str:
    """checkov lives in its own virtualenv (scripts/setup.sh makes .venv-checkov): its pins (boto3,
    packaging, networkx) conflict with ours."""
    venv = Path(sys.executable).parents[1]  # this interpreter's virtualenv, not its target
    for candidate in (venv.with_name(".venv-checkov"), REPO / ".venv-checkov"):
        if (candidate / "bin" / "checkov").exists():
            return str(candidate / "bin" / "checkov")
    found = shutil.which("checkov")
    if not found:
        pytest.fail("checkov is not installed: bash scripts/setup.sh creates .venv-checkov with it")
    return found


def run_checkov(template: Path) -> dict[str, Any]:
    """checkov's JSON report on a template (or on every template of a folder)."""
    target = ["-d", str(template)] if template.is_dir() else ["-f", str(template)]
    done = subprocess.run(
        [checkov(), *target, "--framework", "cloudformation", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(template if template.is_dir() else template.parent),
            "BC_SKIP_MAPPING": "TRUE",
        },
    )
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


_SUB = re.compile(r"\$\{([^!}][^}]*)\}")


def substitute(sub: str, values: dict[str, str], template: dict[str, Any]) -> str:
    """A ``!Sub`` string as CloudFormation renders it; every name it uses must be a pseudo parameter,
    a parameter or a resource of the template, and must be given a value."""
    used = set(_SUB.findall(sub))
    assert used <= set(values), used - set(values)
    for name in used:
        assert name.startswith("AWS::") or name in template["Parameters"] or name in template["Resources"], (
            name
        )
    return _SUB.sub(lambda m: values[m.group(1)], sub).replace("${!", "${")


def parse_cli(argv: list[str], register: Any = None) -> tuple[str, dict[str, Any]]:
    """Parse a ``nitro-llm ...`` command line with the real command-line parser, without running it:
    (the command's name, its parameters); a wrong option or argument raises typer's UsageError.
    ``register``: one CLI module's ``register`` (quicker), or every command when None."""
    import typer

    from nitro_llm.cli.main import register_commands

    app = typer.Typer()
    if register is None:
        register_commands(app, None)
    else:
        register(app)
    ctx = typer.main.get_command(app).make_context("nitro-llm", list(argv))
    while hasattr(ctx.command, "resolve_command"):  # a group: descend to the subcommand
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = ctx.command.resolve_command(ctx, rest)
        assert sub is not None, argv
        ctx = sub.make_context(name, rest, parent=ctx)
    return str(ctx.info_name), dict(ctx.params)


def shell_commands(script: str, program: str) -> list[list[str]]:
    """The command lines of a shell script that run ``program`` (continuation lines joined), each cut
    at its first redirection, pipe or list operator."""
    import shlex

    joined = re.sub(r"\\\n\s*", " ", script)
    found = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = []
        for word in lexer:
            if word and set(word) <= set("<>|&;()"):
                break
            words.append(word)
        if words and words[0] == program:
            found.append(words[1:])
    return found


STACK_VALUES = {
    "AWS::Region": "eu-west-1",
    "AWS::StackName": "nitro-llm",
    "SourceRepository": "https://example.invalid/nitro-llm.git",
    "SourceRef": "0123456789abcdef0123456789abcdef01234567",
    "EnclaveCpuCount": "2",
    "EnclaveMemoryMiB": "4096",
    "GatewayPort": "8080",
    "ImageBucket": "nitro-llm-images-123456789012",
    "ImagePrefix": "0123456789abcdef0123456789abcdef01234567",
    "ImageManifestSha256": "ab" * 32,
    "GatewayAddress": "203.0.113.7",
}
"""Parameter values for substituting the single-instance stack's UserData (the fleet's adds its own)."""
