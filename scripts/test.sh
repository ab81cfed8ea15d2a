#!/usr/bin/env bash
# One command for the test suite: set everything up, lint, then run every test (unit, end-to-end with
# real processes and the real model). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff" >&2
.venv/bin/ruff check nitro_llm tests
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
