#!/usr/bin/env bash
# Installs a real llama.cpp (pip's llama-cpp-python, compiled from its source release on PyPI)
# and the `gguf` Python package into a virtualenv, for the interop tests in
# crates/ruvllm-cli/tests/llama_cpp.rs. Versions are pinned in scripts/interop/requirements.txt.
# Idempotent: a second run with the same pins only checks the install.
#
#     scripts/interop-venv.sh [VENV]        (default: target/interop-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-target/interop-venv}"
reqs=scripts/interop/requirements.txt
stamp="$venv/.ruvllm-interop-installed"

pins=$(grep -vE '^(#|$)' "$reqs")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ] \
    && "$venv/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
    echo "interop venv: $venv is up to date ($(grep -E '^(llama-cpp-python|gguf)==' "$reqs" | tr '\n' ' '))"
    exit 0
fi

python=${PYTHON:-python3}
if ! $python -c 'import venv, ensurepip' 2>/dev/null; then
    echo "interop venv: $python lacks venv/ensurepip: installing Debian's python3-venv"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "interop venv: creating $venv with $($python --version)"
$python -m venv --clear "$venv"

# Build tools and dependencies first, all pinned and without build isolation, so the
# llama.cpp build below uses exactly these (cmake comes from PyPI's wheel: no system cmake needed).
echo "interop venv: installing pinned wheels (cmake, ninja, scikit-build-core, numpy, gguf, ...)"
grep -vE '^(#|$|llama-cpp-python==)' "$reqs" > "$venv/wheels.txt"
"$venv/bin/pip" install --quiet --no-input --no-deps --only-binary :all: -r "$venv/wheels.txt"

# llama.cpp for the CPU only, without -march=native (ggml's x86 defaults: AVX2, FMA, F16C, so
# the same code whatever the build machine), OpenMP, the multimodal library, tests, examples or
# tools; at most 2 compile jobs (CI has 2 cores).
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=2
llama=$(grep -E '^llama-cpp-python==' "$reqs")
echo "interop venv: compiling $llama from source (CMAKE_ARGS=$CMAKE_ARGS, 2 jobs)"
start=$(date +%s)
"$venv/bin/pip" install --quiet --no-input --no-deps --no-build-isolation --no-cache-dir \
    --no-binary llama-cpp-python "$llama"
echo "interop venv: llama.cpp built in $(( $(date +%s) - start )) s"

"$venv/bin/python" -c 'import importlib.metadata as m; print("interop venv: ready:", *(p + " " + m.version(p) for p in ("llama_cpp_python", "gguf")))'
echo "$pins" > "$stamp"
