#!/usr/bin/env bash
# Serve a model with llama.cpp's llama-server on 127.0.0.1, built from the very llama.cpp
# source that llama-cpp-python vendors (the same build as the in-process engine).
#   scripts/serve_local.sh MODEL PORT [extra llama-server args]   # MODEL: a catalog id or a GGUF path
#   scripts/serve_local.sh --build-only                           # build (once) and print the binary's path
# The build is cached under $TTS_CACHE (default ~/.cache/tts-tui): the first one takes about
# 5 minutes on 2 cores, later ones nothing. Runs in the foreground; -np 4 parallel slots.
# LLAMA_SERVER_CMAKE_ARGS adds cmake flags (-DGGML_CUDA=on; use another TTS_CACHE for it).
set -euo pipefail
PY=${PYTHON:-python3}  # the interpreter whose llama-cpp-python we match (a venv's, say)
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
CACHE=${TTS_CACHE:-$HOME/.cache/tts-tui}
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
BIN=$SRC/build/bin/llama-server

build() {
  if [[ -x $BIN ]]; then return; fi
  mkdir -p "$CACHE"
  exec 9> "$CACHE/.build.lock"
  flock 9  # one build at a time; a second waits, then finds the binary
  if [[ -x $BIN ]]; then return; fi
  if [[ ! -d $SRC ]]; then
    local tmp
    tmp=$(mktemp -d "$CACHE/.src.XXXXXX")  # unpacked aside, then renamed: a kill leaves no half tree
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" >&2
    tar xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
    mv "$tmp/llama_cpp_python-$VERSION" "$CACHE/"
    rm -rf "$tmp"
  fi
  cmake -S "$SRC" -B "$SRC/build" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON -DCMAKE_BUILD_TYPE=Release ${LLAMA_SERVER_CMAKE_ARGS:-} >&2
  cmake --build "$SRC/build" --target llama-server -j"$(nproc)" >&2
}

if [[ ${1:-} == --build-only ]]; then
  build
  echo "$BIN"
  exit 0
fi
if [[ $# -lt 2 ]]; then
  echo "usage: scripts/serve_local.sh MODEL PORT [llama-server args] | --build-only" >&2
  exit 2
fi
MODEL=$1 PORT=$2 NAME=$1
shift 2
if [[ ! -f $MODEL ]]; then
  MODEL=$("$PY" -m tts_tui models path "$MODEL")
fi
if [[ ! -f $MODEL ]]; then
  echo "serve_local.sh: $MODEL is not downloaded (tts models pull $NAME)" >&2
  exit 2
fi
build
exec 9>&-  # the build lock is the build's, not the server's for its whole life
exec "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np 4 -c 4096 "$@"
