#!/usr/bin/env bash
# The GPU figures, on a machine with an NVIDIA GPU (issue 18 part 5). Prints them; writes
# logs under $OUT (default gpu-out/). Needs nvcc (a CUDA toolkit) and cmake.
#   bash scripts/gpu_check.sh [SDIST_DIR]   # SDIST_DIR: where llama_cpp_python-*.tar.gz is (else pip downloads it)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
VERSION=$(python3 -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null || echo 0.3.36)
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
# 1. llama-cpp-python with CUDA (the same version as on CPU)
SRC=${1:-}
if [[ -n $SRC ]]; then PKG=$(ls "$SRC"/llama_cpp_python-"$VERSION".tar.gz); else PKG="llama-cpp-python==$VERSION"; fi
time CMAKE_ARGS="-DGGML_CUDA=on" python3 -m pip install --force-reinstall --no-deps --no-cache-dir "$PKG" \
  > "$OUT/build.log" 2>&1
python3 -m pip install -e '.[test]' > "$OUT/install.log" 2>&1
python3 -m tts_tui doctor | tee "$OUT/doctor.txt"
python3 -m tts_tui models pull default
# 2. engine throughput at N = 1..64 (naive vs engine vs the bare decode ceiling, side by side)
python3 bench/engine_throughput.py --ns 1,4,8,16,32,64 --tokens 128 | tee "$OUT/throughput.txt"
# 3. a 20-problem evaluation: CoT, majority@16, beam N=16 M=4
tts eval --data ../shared/data/gsm8k_dev.jsonl --strategy cot,majority,beam --n 16 --m 4 --limit 20 \
  --out "$OUT/gsm8k20" | tee "$OUT/eval.txt"
# 4. llama-server with CUDA (its own build cache), and majority@16 through it at --concurrency 4
export TTS_CACHE=$HOME/.cache/tts-tui-cuda LLAMA_SERVER_CMAKE_ARGS="-DGGML_CUDA=on"
scripts/serve_local.sh default 8080 -ngl 99 -np 16 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:8080/health > /dev/null; do sleep 2; done
tts eval --data ../shared/data/gsm8k_dev.jsonl --strategy majority --n 16 --limit 20 --backend openai \
  --base-url http://127.0.0.1:8080 --model default --concurrency 4 --out "$OUT/gsm8k20-server" | tee "$OUT/eval-server.txt"
echo "# done: $OUT"
