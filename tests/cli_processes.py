"""The long-running commands a user leaves open in a terminal, each in its own process: ``nitro-llm up``
(the whole local stack) and ``nitro-llm proxy``. Shared by tests/cli.

Both are waited on by what they say or serve (``up``'s "ready" line, the proxy's ``/healthz``), and
stopped by signalling only the process the test started. ``up`` is stopped with SIGTERM, which it
handles as Ctrl-C: a job started in the background of a non-interactive shell inherits SIGINT as
ignored, and so would the test's children.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

NITRO_LLM = str(Path(sys.executable).with_name("nitro-llm"))
#: The development engine and the source-tree enclave: the model and the image are not the point.
FAST_STACK = ("--engine", "echo", "--enclave-from", "source")
READY = re.compile(r"ready: gateway (http://127\.0\.0\.1:\d+),")


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell with its own state folder; no COLUMNS, so rich picks its
    width as it would for a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    env["NITRO_LLM_HOME"] = str(home)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpProcess:
    """``nitro-llm up`` with ``FAST_STACK`` and ``args``; returns once the stack is ready (or fails,
    with its output, if the command ended first)."""

    def __init__(self, env: dict[str, str], *args: str, timeout: float = 180) -> None:
        self.proc = subprocess.Popen(
            [NITRO_LLM, "up", *FAST_STACK, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.gateway_url = ""
        self._settled = threading.Event()  # ready, or the command ended
        self._said = threading.Condition()  # a new line, or the end of the output
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._settled.wait(timeout) or not self.gateway_url:
            self.stop()
            raise AssertionError(f"'nitro-llm up' did not get ready:\n{self.output}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._said:
                self.lines.append(line)
                self._said.notify_all()
            found = READY.search(line)
            if found and not self.gateway_url:
                self.gateway_url = found.group(1)
                self._settled.set()
        with self._said:
            self._ended = True
            self._said.notify_all()
        self._settled.set()

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        """The output up to the first line matching ``pattern`` (what 'up' prints after 'ready')."""
        wanted = re.compile(pattern)

        def seen() -> bool:
            return self._ended or any(wanted.search(line) for line in self.lines)

        with self._said:
            self._said.wait_for(seen, timeout)
            for index, line in enumerate(self.lines):
                if wanted.search(line):
                    return "".join(self.lines[: index + 1])
        raise AssertionError(f"'nitro-llm up' never printed {pattern!r}:\n{self.output}")

    def stop(self, timeout: float = 60) -> str:
        """Stop the stack as Ctrl-C would, wait for it to have stopped every process; its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # only the process this test started
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        return self.output


class ProxyProcess:
    """``nitro-llm proxy --port FREE ARGS``, returned once it answers ``/healthz``."""

    def __init__(self, command: str, env: dict[str, str], *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [command, "proxy", "--port", port, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the proxy did not start: {self.stderr}")

    def verification(self) -> dict:
        return httpx.get(self.url + "/v1/verification", timeout=30).json()

    def chat(self, question: str) -> httpx.Response:
        """One OpenAI chat completion, not streamed."""
        body = {"model": "default", "messages": [{"role": "user", "content": question}]}
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # only the process this test started
        try:
            self.stderr = self.proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stderr = self.proc.communicate()[1]
