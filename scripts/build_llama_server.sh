#!/usr/bin/env bash
# Build llama.cpp's `llama-server` for this CPU into the dante cache (<cache>/llama.cpp/bin), from
# the llama.cpp source that PyPI's llama-cpp-python sdist vendors (the package registry is the
# one source these machines reach). Needs cmake and a C++ compiler. About 5-7 minutes on 2 cores.
#   scripts/build_llama_server.sh [PIP]       (PIP: the pip to download with, default .venv/bin/pip)
set -euo pipefail
VERSION=0.3.36                                   # llama-cpp-python, vendoring llama.cpp 0c1e570
PIP=${1:-.venv/bin/pip}
CACHE=${DANTE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dante}
DEST="$CACHE/llama.cpp"
if [ -x "$DEST/bin/llama-server" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "llama-server $VERSION already built: $DEST/bin/llama-server"; exit 0
fi
command -v cmake >/dev/null || { echo "cmake not found: apt-get install cmake (or pip install cmake)"; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PIP" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >/dev/null
rm -rf "$DEST" && mkdir -p "$DEST/bin"
cp "$WORK/build/bin/llama-server" "$DEST/bin/"
echo "$VERSION" > "$DEST/VERSION"
echo "built $DEST/bin/llama-server"
