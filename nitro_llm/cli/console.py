"""Rich consoles for the commands: styled on a terminal, never wrapped at 80 columns when piped.

Rich wraps text at the terminal's width, and at 80 columns when the output is a file or a pipe
(a log, ``2>&1 | tee``, a test capturing output): error messages broke mid-sentence and a PCR's 96
hex characters came out over several lines. Here text printed to something that is not a terminal
keeps its lines as they are; renderables that lay themselves out (tables, panels) are left to rich.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


class CliConsole(Console):
    """A :class:`rich.console.Console` whose plain-text prints do not wrap unless on a terminal."""

    def print(self, *objects: Any, **options: Any) -> None:
        if (
            options.get("soft_wrap") is None
            and not self.is_terminal
            and all(isinstance(item, str) for item in objects)
        ):
            options["soft_wrap"] = True
        super().print(*objects, **options)


def make_console(*, stderr: bool = False) -> Console:
    return CliConsole(stderr=stderr)
