#!/usr/bin/env bash
# Build llama-cpp-python (the version requirements-llama.txt pins) from source for this machine's
# CPU, and install it into .venv; `--avx2` also builds an AVX2-only copy of its libraries for the
# tests' AVX2 pass and prints their folder.
#
# The native build tunes llama.cpp to the CPU that builds it (-DGGML_NATIVE=ON: AVX-512 or AMX
# where there is some), so a wheel must never reach another CPU: wheels are kept per CPU, in
# $THINKTREE_CACHE/wheels/<cpu key>/ (the key hashes the CPU's model name and flags), never in
# pip's own cache, and a second set-up on the same CPU installs the kept wheel at once. What the
# project does not use is not built (tools, server, examples, tests, multimodal, curl).
# Without cmake or a C++ compiler it says what is missing and exits 3; the app then starts
# without the offline models.
set -euo pipefail
cd "$(dirname "$0")/.."
avx2=0
for arg in "$@"; do
  case "$arg" in
    --avx2) avx2=1 ;;
    *) echo "usage: scripts/build_llama.sh [--avx2]" >&2; exit 2 ;;
  esac
done
py=.venv/bin/python
pin=$(grep -v '^#' requirements-llama.txt | grep -m1 'llama-cpp-python==')
version=${pin#*==}
cache=${THINKTREE_CACHE:-$HOME/.cache/thinktree}
cpu=$( { uname -m; grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true;
         grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true; } | sha256sum | cut -c1-12)
wheels="$cache/wheels/llama-$version-$cpu"
common="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"

build() {  # build <folder> <cmake args>: the wheel, unless the folder already holds it
  local dir=$1 args=$2
  ls "$dir"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1 && return 0
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=("a C++ compiler (g++)")
  if [ ${#missing[@]} -gt 0 ]; then
    local what
    what=$(printf '%s and ' "${missing[@]}")
    echo "llama.cpp cannot be built here: ${what% and } missing (on Debian: apt-get install cmake g++)." >&2
    echo "The app starts without the offline models until it is built (bash scripts/setup.sh)." >&2
    exit 3
  fi
  echo "building llama-cpp-python $version for this CPU ($dir; ~5 min on 2 cores)" >&2
  mkdir -p "$dir"
  local start=$SECONDS
  CMAKE_ARGS="$args $common" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$py" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python "$pin" -w "$dir"
  echo "built in $((SECONDS - start)) s" >&2
}

build "$wheels/native" "-DGGML_NATIVE=ON"
# installed when missing, or when this .venv was set up on another CPU (its stamp says which)
stamp=.venv/.thinktree-llama
if [ "$(cat "$stamp" 2>/dev/null)" != "$version-$cpu" ] || ! "$py" -c "import llama_cpp" 2>/dev/null; then
  wheel=$(ls "$wheels"/native/llama_cpp_python-"$version"-*.whl)
  "$py" -m pip install -q --force-reinstall --no-deps "$wheel" >&2
  "$py" -m pip install -q "$wheel" >&2  # its own requirements (numpy, jinja2, ...)
  echo "$version-$cpu" > "$stamp"
fi

if [ $avx2 = 1 ]; then
  # the tests' AVX2 pass loads these libraries (LLAMA_CPP_LIB_PATH) instead of the native ones
  build "$wheels/avx2" "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  lib="$wheels/avx2/lib"
  if [ ! -f "$lib/libllama.so" ]; then
    "$py" - "$wheels/avx2" "$lib" <<'PY'
import sys, zipfile, pathlib
folder, lib = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(folder.glob("llama_cpp_python-*.whl"))
lib.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("llama_cpp/lib/") and not name.endswith("/"):
            (lib / pathlib.Path(name).name).write_bytes(z.read(name))
PY
  fi
  echo "$lib"
fi
