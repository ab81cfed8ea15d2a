"""The real `nitro-llm chat` on a pseudo-terminal, typed at as a person does: Ctrl-C while an answer
streams stops that answer only, Up recalls the last question (readline), and /help and unknown
/commands are answered locally. Waits are for output to appear, never for time to pass."""

import os
import pty
import select
import time

QUESTION = "alpha beta gamma delta epsilon zeta"


class Terminal:
    """A child process on a pseudo-terminal; ``expect`` reads until a text appears (or fails)."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its own session, the pty as its controlling terminal
            os.execve(argv[0], argv, env)
        self.seen = b""
        self._mark = 0
        self.returncode: int | None = None

    def expect(self, text: str, timeout: float = 30.0) -> None:
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while (at := self.seen.find(wanted, self._mark)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.seen.decode()}")
        self._mark = at + len(wanted)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child is gone
            return False
        self.seen += data
        return bool(data)

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass  # drain until the child closes its end
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        """Clean-up after a failed expectation: end the child if it is still there."""
        if self.returncode is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
            os.close(self.fd)


def test_ctrl_c_stops_one_answer_history_recalls_and_commands_stay_local(stack, nitro_command):
    deployment = stack(delay=0.25)  # six words: about 1.5 s per answer, time enough to press Ctrl-C
    command, env = nitro_command
    term = Terminal([command, "chat"], {**env, "TERM": "xterm"})
    try:
        term.expect("you> ")
        term.send(QUESTION + "\r")
        term.expect("llm> alpha")  # the answer is streaming (the question was echoed before)
        term.send("\x03")  # Ctrl-C, through the terminal: SIGINT to the chat
        term.expect("[answer cut off: stopped (Ctrl-C)]")
        term.expect("answer stopped")
        term.expect("you> ")  # ... and the chat goes on
        term.send("\x1b[A\r")  # Up: readline recalls the last question; Enter sends it again
        term.expect(f"llm> {QUESTION}\r\n", timeout=60)  # the whole answer this time
        term.expect("you> ")
        term.send("/help\r")
        term.expect("//text")
        term.send("/bogus\r")
        term.expect("unknown command /bogus, /help lists them")
        term.send("/exit\r")
        assert term.exit_code() == 0
    finally:
        term.kill()
    # two questions reached the enclave (the stopped one and its repeat); no command did
    assert deployment.enclave.stats()["requests"] == 2
