"""git, standing in. On the laptop: ``rev-parse HEAD`` answers a fixed commit. On the instance:
``init``, ``remote add``, ``fetch --depth 1 origin REF`` and ``checkout --detach FETCH_HEAD`` lay
down the source under test (the files the instance installs from) as that commit's checkout would;
a fetch of another ref than the one the stack names, or a checkout before a fetch, fails."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from standins.recording import record

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SOURCE = ("pyproject.toml", "nitro_llm", "deploy")


def main(argv: list[str]) -> int:
    record("git", argv)
    args = list(argv)
    where = Path.cwd()
    if args[:1] == ["-C"]:
        where, args = Path(args[1]), args[2:]
    args = [a for a in args if a != "-q"]
    state = where / ".git" / "standin.json"
    if args == ["rev-parse", "HEAD"]:
        print(COMMIT)
        return 0
    if args[:1] == ["init"]:
        target = Path(args[1]) if len(args) > 1 else where
        (target / ".git").mkdir(parents=True, exist_ok=True)
        (target / ".git" / "standin.json").write_text("{}")
        return 0
    if not state.exists():
        print(f"fatal: not a git repository: {where}", file=sys.stderr)
        return 128
    data = json.loads(state.read_text())
    if args[:2] == ["remote", "add"]:
        data["origin"] = args[3]
    elif args[:1] == ["fetch"]:
        ref = args[-1]
        if "origin" not in data or ref != os.environ.get("STANDIN_SOURCE_REF"):
            print(f"fatal: couldn't find remote ref {ref}", file=sys.stderr)
            return 128
        data["fetched"] = ref
    elif args[:3] == ["checkout", "--detach", "FETCH_HEAD"]:
        if "fetched" not in data:
            print("fatal: invalid reference: FETCH_HEAD", file=sys.stderr)
            return 128
        repo = Path(os.environ["STANDIN_REPO"])
        for name in SOURCE:
            source, target = repo / name, where / name
            if source.is_dir():
                shutil.copytree(
                    source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(source, target)
    else:
        print(f"stand-in git: unexpected {argv}", file=sys.stderr)
        return 1
    state.write_text(json.dumps(data))
    return 0
