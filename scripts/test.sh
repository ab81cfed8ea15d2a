#!/usr/bin/env bash
# One command for the test suite: set everything up, lint (ruff, formatting, types, the import
# contracts of the trust boundary), then run every test (unit, end-to-end with real processes and the
# real model). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CODE=(nitro_llm dev/nitro_llm_dev tests)
echo "[test] ruff check" >&2
.venv/bin/ruff check "${CODE[@]}"
echo "[test] ruff format --check" >&2
.venv/bin/ruff format --check "${CODE[@]}"
echo "[test] mypy" >&2
.venv/bin/mypy nitro_llm dev/nitro_llm_dev
echo "[test] import contracts (lint-imports)" >&2
.venv/bin/lint-imports
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
