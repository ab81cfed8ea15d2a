"""The outcome of a verification: every check with its result, for people (a table) and tools (JSON).

A bare yes/no makes failures hard to act on and successes hard to audit; listing each check, including
the ones the policy skipped, shows exactly what was and was not established about the enclave.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from nitro_llm.attestation.document import AttestationDocument

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    @property
    def passed(self) -> bool:
        """True unless the check failed: a skipped check did not block the document."""
        return self.status != "fail"

    @property
    def skipped(self) -> bool:
        return self.status == "skip"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped, "detail": self.detail}


@dataclass(frozen=True)
class VerificationReport:
    """``document`` is None only when the bytes could not be parsed at all."""

    document: AttestationDocument | None
    checks: list[CheckResult]
    verified_at: dt.datetime
    roots: list[str] = field(default_factory=list)  # SHA-256 fingerprints of the trusted roots

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.passed), None)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "verified_at": self.verified_at.isoformat(),
            "trusted_roots_sha256": self.roots,
            "checks": [c.to_json() for c in self.checks],
            "document": None if self.document is None else self.document.to_json(),
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def to_table(self) -> Table:
        title = "attestation: VERIFIED" if self.ok else "attestation: REJECTED"
        table = Table(title=title, title_style="bold green" if self.ok else "bold red")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        style = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}
        for check in self.checks:
            table.add_row(check.name, style[check.status], _escape(check.detail))
        return table


def printable(text: str) -> str:
    """Untrusted text (module IDs, certificate names) made safe for a terminal: no control characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _escape(text: str) -> str:
    """Details quote names taken from the document: neutralise control characters and rich markup."""
    return escape(printable(text))
