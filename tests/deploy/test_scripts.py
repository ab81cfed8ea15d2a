"""Shell scripts under deploy/: bash -n, shellcheck, and ssm-run.sh driven against a stand-in
``aws`` (the real one needs an AWS account) to check its JSON quoting, polling and exit status."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "deploy").rglob("*.sh"))
SSM_RUN = REPO / "deploy" / "scripts" / "ssm-run.sh"

FAKE_AWS = r"""#!/usr/bin/env bash
# Stand-in for the AWS CLI: records each call; answers send-command and get-command-invocation.
printf '%s\0' "$@" >> "$FAKE_AWS_LOG"; printf '\n' >> "$FAKE_AWS_LOG"
case "$2" in
  send-command) echo "cmd-0001" ;;
  get-command-invocation)
    n=$(cat "$FAKE_AWS_COUNT" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_AWS_COUNT"
    case "$*" in
      *"--query Status"*) if [ "$n" -lt 2 ]; then echo InProgress; else echo "$FAKE_FINAL_STATUS"; fi ;;
      *StandardOutputContent*) echo "remote output" ;;
      *StandardErrorContent*) echo "remote error" ;;
    esac ;;
esac
"""


def test_there_are_scripts_to_check():
    assert SSM_RUN in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_syntax(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script):
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def _run_ssm(
    tmp_path: Path, final_status: str, command: str
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(FAKE_AWS)
    aws.chmod(0o755)
    log = tmp_path / "aws.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_AWS_LOG": str(log),
        "FAKE_AWS_COUNT": str(tmp_path / "count"),
        "FAKE_FINAL_STATUS": final_status,
        "SSM_POLL_SECONDS": "0",
    }
    done = subprocess.run(
        ["bash", str(SSM_RUN), "i-0123456789abcdef0", command, "600"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines() if line]
    return done, calls


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin:/bin") is None, reason="needs python3 on PATH")
def test_ssm_run_quotes_the_command_as_json_and_waits(tmp_path):
    command = """nitro-llm deploy build-eif --config "/etc/nitro-llm/deploy.toml" && echo 'it''s done'"""
    done, calls = _run_ssm(tmp_path, "Success", command)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "remote output"
    send = calls[0]
    assert send[:2] == ["ssm", "send-command"]
    params = json.loads(send[send.index("--parameters") + 1])
    assert params == {"commands": [command], "executionTimeout": ["600"]}
    assert send[send.index("--instance-ids") + 1] == "i-0123456789abcdef0"
    polls = [c for c in calls if "Status" in c]
    assert len(polls) == 3  # InProgress, InProgress, Success


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin:/bin") is None, reason="needs python3 on PATH")
def test_ssm_run_fails_when_the_remote_command_fails(tmp_path):
    done, _ = _run_ssm(tmp_path, "Failed", "false")
    assert done.returncode == 1
    assert "remote error" in done.stderr and "Failed" in done.stderr


def test_ssm_run_usage():
    done = subprocess.run(["bash", str(SSM_RUN)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 64 and "usage" in done.stderr
