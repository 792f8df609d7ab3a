#!/usr/bin/env bash
# llama-cpp-wheel.sh: print the directory holding a portable llama-cpp-python wheel, building it
# first if the cache has none. PyPI serves this version as an sdist only, and the build compiles
# llama.cpp (about 7 minutes on 2 cores), so the wheel is built once per key and reused by the
# project venv, the runtime venv and the runtime image's wheelhouse.
# The key is everything the binary depends on: version, CMake flags, the interpreter's ABI, the
# platform. GGML_NATIVE=OFF keeps -march=native out: the wheel needs only what ggml enables by
# default without it (AVX2, FMA, F16C on x86-64), not this build machine's exact CPU.
set -euo pipefail
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/modelplane}
PYTHON=${HOST_PYTHON:-python3}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
abi=$("$PYTHON" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')
key=$(printf '%s\n' "$VERSION" "$CMAKE_FLAGS" "$abi" "$(ldd --version 2>&1 | head -1)" | sha256sum | cut -c1-12)
dir=$CACHE_DIR/llama-cpp-wheel/$key
[ -f "$dir/.complete" ] && { echo "$dir"; exit 0; }
mkdir -p "$CACHE_DIR/llama-cpp-wheel"
exec 9>"$CACHE_DIR/llama-cpp-wheel/.lock"
flock 9  # a second caller waits for the first build instead of starting its own
[ -f "$dir/.complete" ] && { echo "$dir"; exit 0; }
work=$(mktemp -d "$CACHE_DIR/llama-cpp-wheel/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "building llama-cpp-python $VERSION (key $key, $CMAKE_FLAGS)" >&2
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
# --no-deps: its dependencies are ordinary wheels the consumers install from the index/wheelhouse.
CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  "$work/venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
  -w "$work/out" "llama-cpp-python==$VERSION" >&2
rm -rf "$dir"; mkdir -p "$dir"
mv "$work"/out/llama_cpp_python-*.whl "$dir/"
touch "$dir/.complete"
echo "built $(basename "$dir"/llama_cpp_python-*.whl) in $(( $(date +%s) - start ))s" >&2
echo "$dir"
