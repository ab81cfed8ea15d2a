"""The ``nitro-llm`` command: one typer app, each sub-command group defined in its own module.

Every module listed in ``_GROUPS`` exposes ``register(app: typer.Typer) -> None``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="nitro-llm",
    help="Confidential LLM inference on AWS Nitro Enclaves. Run 'nitro-llm demo' to see it work end to end.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold keys or plaintext
)

# Each helper module adds itself here: "nitro_llm.cli.<name>".
_GROUPS: list[str] = [
    "nitro_llm.cli.attest",
    "nitro_llm.cli.bench",
    "nitro_llm.cli.client",
    "nitro_llm.cli.deploy",
    "nitro_llm.cli.gateway",
    "nitro_llm.cli.kms",
    "nitro_llm.cli.local",
    "nitro_llm.cli.model",
    "nitro_llm.cli.proxy",
    "nitro_llm.cli.enclave",
]

for _name in _GROUPS:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
