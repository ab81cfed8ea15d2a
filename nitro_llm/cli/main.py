"""The ``nitro-llm`` command: one typer app whose command groups are loaded only when they are used.

Why lazily: every party runs from this one entry point (``nitro-llm gateway``, ``nitro-llm enclave
serve``, ``nitro-llm proxy``), and a party's process must hold only the code its side of the trust
boundary may hold. Importing every group up front made the gateway load the client's and the
enclave's decrypting modules. Here ``nitro-llm gateway …`` imports ``nitro_llm.cli.gateway`` and
nothing else; ``--help`` with no command loads every group to list them.

Development commands (``up``, ``demo``, ``bench``, ``kms-emulator``, …) live in the separate
``nitro_llm_dev`` package and arrive through the ``nitro_llm.commands`` entry-point group, so the
product never imports development tooling: without it installed they are simply absent. An entry
point named ``NAME`` or ``NAME.anything`` is loaded when the command is ``NAME``; its object is a
``register(app)`` function.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from typing import Any

import typer

HELP = "Confidential LLM inference on AWS Nitro Enclaves. Run 'nitro-llm demo' to see it work end to end."

#: Top-level command name -> the product module whose ``register(app)`` defines it.
PRODUCT_COMMANDS: dict[str, str] = {
    "ask": "nitro_llm.cli.client",
    "chat": "nitro_llm.cli.client",
    "attest": "nitro_llm.cli.attest",
    "deploy": "nitro_llm.cli.deploy",
    "kms-policy": "nitro_llm.cli.deploy",
    "enclave": "nitro_llm.cli.enclave",
    "fleet-key": "nitro_llm.cli.fleet_key",
    "gateway": "nitro_llm.cli.gateway",
    "gateway-token": "nitro_llm.cli.gateway",
    "image": "nitro_llm.cli.image",
    "model": "nitro_llm.cli.model",
    "proxy": "nitro_llm.cli.proxy",
}

PLUGIN_GROUP = "nitro_llm.commands"


def _plugins() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _command_path(argv: list[str]) -> list[str] | None:
    """The command and sub-command being run, or None when the whole list is needed."""
    path: list[str] = []
    for arg in argv:
        if arg in ("--help", "-h", "--install-completion", "--show-completion") and not path:
            return None
        if not arg.startswith("-"):
            path.append(arg)
            if len(path) == 2:
                break
    return path or None


def _plugin_matches(name: str, path: list[str]) -> bool:
    """``NAME`` matches command NAME; ``NAME.SUB`` only NAME SUB (or NAME alone, to list SUB in help),
    so ``nitro-llm enclave serve`` never loads the development package's ``enclave pcrs``."""
    command, _, sub = name.partition(".")
    if command != path[0]:
        return False
    return not sub or len(path) == 1 or path[1] == sub


def register_commands(target: typer.Typer, path: list[str] | None) -> None:
    """Register what the command ``path`` needs: its product module and the plugins named for it.

    An unknown command (or None) registers everything, so typer can list every command it knows.
    """
    plugins = _plugins()
    if path is not None:
        modules = [PRODUCT_COMMANDS[path[0]]] if path[0] in PRODUCT_COMMANDS else []
        chosen = [entry for entry in plugins if _plugin_matches(entry.name, path)]
        if modules or chosen:
            _register(target, modules, chosen)
            return
    _register(target, sorted(set(PRODUCT_COMMANDS.values())), plugins)


def _register(target: typer.Typer, modules: list[str], plugins: list[importlib.metadata.EntryPoint]) -> None:
    for module in modules:
        importlib.import_module(module).register(target)
    for entry in plugins:
        register: Callable[[typer.Typer], None] = entry.load()
        register(target)


def new_app(*, plain_errors: bool = False) -> typer.Typer:
    """An app with no command yet; the callback keeps typer in group mode when only one is registered.

    ``plain_errors``: usage errors as click prints them, one line each, instead of in a rich panel
    that is wrapped at 80 columns when standard error is not a terminal.
    """
    style: dict[str, Any] = {"rich_markup_mode": None} if plain_errors else {}
    app = typer.Typer(
        name="nitro-llm",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,  # locals may hold keys or plaintext
        **style,
    )
    app.callback()(_root)
    return app


def _root() -> None:
    pass


def full_app() -> typer.Typer:
    """Every command, product and installed plugins (for ``--help`` listings and in-process tests)."""
    app = new_app()
    register_commands(app, None)
    return app


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    app = new_app(plain_errors=not sys.stderr.isatty())
    register_commands(app, _command_path(args))
    app(args=args)


if __name__ == "__main__":
    main()
