"""Reading apt's ``Packages`` indices: which file, at which URL, has which SHA-256.

The lock records each package's download URL and digest as the mirror's signed index states them,
so a build can fetch and check a ``.deb`` without apt (and offline, from its cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.image.errors import LockFileError


@dataclass(frozen=True)
class Source:
    """One ``deb URI SUITE COMPONENT...`` line."""

    uri: str
    suite: str
    components: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> Source:
        parts = line.split()
        if len(parts) < 4 or parts[0] != "deb":
            raise LockFileError(f"source {line!r} is not a one-line 'deb URI SUITE COMPONENT...'")
        return cls(uri=parts[1].rstrip("/"), suite=parts[2], components=tuple(parts[3:]))

    def line(self) -> str:
        return " ".join(["deb", self.uri, self.suite, *self.components])

    def list_prefix(self) -> str:
        """How apt names this source's index files in /var/lib/apt/lists (URItoFileName)."""
        without_scheme = self.uri.split("://", 1)[-1]
        return f"{without_scheme.replace('/', '_')}_dists_{self.suite.replace('/', '_')}_"


@dataclass(frozen=True)
class DebPackage:
    """One package as the archive's index names it: what the lock pins and the build fetches."""

    name: str
    version: str
    architecture: str
    sha256: str
    size: int
    url: str

    @property
    def label(self) -> str:
        return f"{self.name}={self.version}"


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs; continuation lines are kept but not needed here."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
        elif line[0] in " \t":
            if last:
                fields[last] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def read_index(path: Path, base_uri: str) -> Iterator[DebPackage]:
    for stanza in parse_stanzas(path.read_text(encoding="utf-8")):
        if not {"Package", "Version", "Filename", "SHA256", "Size"} <= stanza.keys():
            continue
        yield DebPackage(
            name=stanza["Package"],
            version=stanza["Version"],
            architecture=stanza.get("Architecture", ""),
            sha256=stanza["SHA256"].lower(),
            size=int(stanza["Size"]),
            url=f"{base_uri}/{stanza['Filename']}",
        )


def read_lists(lists_dir: Path, sources: list[Source]) -> list[DebPackage]:
    """Every package of every source's ``Packages`` file found in an apt lists directory."""
    entries: list[DebPackage] = []
    for path in sorted(lists_dir.glob("*_Packages")):
        for source in sources:
            if path.name.startswith(source.list_prefix()):
                entries.extend(read_index(path, source.uri))
                break
    return entries
