"""`nitro-llm model check|info`: verify and describe the model file the enclave will load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.inference.errors import InferenceError
from nitro_llm.inference.model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_PACKAGE,
    DEFAULT_MODEL_SHA256,
    check_gguf_header,
    check_model,
    default_model_path,
)

model_app = typer.Typer(help="Check and describe the model file.", no_args_is_help=True)

ModelOption = Annotated[
    Path | None, typer.Option("--model", help="A GGUF file (default: the packaged model).")
]
Sha256Option = Annotated[
    str | None, typer.Option("--sha256", help="Expected SHA-256 of --model (the default model's is pinned).")
]


@model_app.command("check")
def check(model: ModelOption = None, sha256: Sha256Option = None) -> None:
    """Verify the model's SHA-256 and that it is a GGUF file; exit 1 if the file is missing, its
    digest does not match, or it is not a GGUF model."""
    try:
        info = check_model(model, expected_sha256=sha256)
        version = check_gguf_header(info.path)
    except InferenceError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        typer.echo(f"hint: {exc.hint}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"path    {info.path}")
    typer.echo(f"size    {info.size} bytes")
    typer.echo(f"sha256  {info.sha256}")
    typer.echo(f"format  GGUF version {version}")
    pinned = model is None or sha256 is not None
    typer.echo("status  ok (digest matches)" if pinned else "status  ok (no expected digest given)")


@model_app.command("info")
def info(model: ModelOption = None) -> None:
    """Print what is known about the model as JSON, without hashing it."""
    try:
        path = model or default_model_path()
    except InferenceError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}\nhint: {exc.hint}", err=True)
        raise typer.Exit(1) from None
    out: dict[str, object] = {"path": str(path), "exists": path.is_file()}
    if path.is_file():
        out["size"] = path.stat().st_size
    if model is None:
        out |= {
            "name": DEFAULT_MODEL_NAME,
            "package": DEFAULT_MODEL_PACKAGE,
            "pinned_sha256": DEFAULT_MODEL_SHA256,
        }
    try:
        import llama_cpp

        out["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        out["llama_cpp_python"] = None
    typer.echo(json.dumps(out, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
