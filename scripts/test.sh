#!/usr/bin/env bash
# Set up (with the test tools) and run every check CI runs: ruff, then the whole test suite, then
# the tests of the engines and models a second time as an AVX2-only CPU would run them: llama.cpp
# from its AVX2-only build (scripts/build_llama.sh --avx2, loaded through LLAMA_CPP_LIB_PATH) and
# torch's kernels and oneDNN held to AVX2, so that path is tested on every machine, whatever CPU
# it has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
if [ "$(uname -m)" = x86_64 ] && [ "${THINKTREE_SKIP_AVX2_PASS:-0}" != 1 ]; then
  echo "--- again as an AVX2-only CPU (llama.cpp's AVX2 build; ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)"
  LLAMA_CPP_LIB_PATH=$(bash scripts/build_llama.sh --avx2) THINKTREE_EXPECT_AVX2=1 \
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python -m pytest \
    tests/test_llama_engine.py tests/test_engine.py tests/test_models.py "$@"
fi
