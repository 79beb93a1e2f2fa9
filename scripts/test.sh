#!/usr/bin/env bash
# Set up (with the test tools) and run every check CI runs: ruff, then the whole test suite, then
# the engine, lean-decoder and precision tests a second time as an AVX2-only CPU would run them
# (torch's kernels and oneDNN held to AVX2: no bf16 instructions, so "auto" is fp32 and nothing
# is packed for oneDNN), so that path is tested on every machine, whatever CPU it has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
if [ "$(uname -m)" = x86_64 ] && [ "${THINKTREE_SKIP_AVX2_PASS:-0}" != 1 ]; then
  echo "--- again as an AVX2-only CPU (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)"
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python -m pytest \
    tests/test_engine.py tests/test_fast_decode.py tests/test_machine.py tests/test_models.py "$@"
fi
