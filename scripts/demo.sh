#!/usr/bin/env bash
# One command for a new user: set everything up, then ask a PHI-laden question through the local
# emulated Nitro stack (KMS emulator, attested enclave in its own network namespace, gateway) and show
# what each party saw. Extra arguments go to `nitro-llm demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nitro-llm demo "$@"
