#!/usr/bin/env bash
# Serving throughput on SmolLM2-135M-Instruct (Q4_1 GGUF): `moonforge serve`
# (continuous batching) against llama.cpp's server (llama-cpp-python[server])
# on the same file and threads, with 1, 4 and 16 concurrent clients sending
# greedy chat completions of MAX_TOKENS tokens, in one run.
#   bash bench/serve/run.sh [BUILD_DIR]   # default build/; THREADS=2 MAX_TOKENS=32 REQUESTS=32
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
THREADS=${THREADS:-2}
MAX_TOKENS=${MAX_TOKENS:-32}
REQUESTS=${REQUESTS:-32}
MODEL=datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

bash datasets/smollm2/fetch.sh >/dev/null
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_health() {
  for _ in $(seq 600); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no server at $1" >&2
  exit 1
}

port=$(free_port)
MOONFORGE_THREADS=$THREADS "$BUILD/moonforge" serve "$MODEL" --port "$port" --name smollm2 --parallel 16 \
  --ctx 512 --exit-after 1800 >"$tmp/mf.log" 2>&1 &
pids+=($!)
wait_health "http://127.0.0.1:$port/health"
mf_url="http://127.0.0.1:$port"

port=$(free_port)
python3 -m llama_cpp.server --model "$MODEL" --model_alias smollm2 --host 127.0.0.1 --port "$port" \
  --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx 2048 >"$tmp/llama.log" 2>&1 &
pids+=($!)
wait_health "http://127.0.0.1:$port/v1/models"
ref_url="http://127.0.0.1:$port"

echo "serving SmolLM2-135M-Instruct Q4_1, $THREADS threads, $REQUESTS chat completions of up to $MAX_TOKENS tokens per level"
printf "  %-22s %7s %10s %8s %8s %10s\n" server clients "req/s" "p50 s" "p99 s" "tokens/s"
for clients in 1 4 16; do
  for side in moonforge llama.cpp; do
    url=$mf_url
    [ "$side" = llama.cpp ] && url=$ref_url
    python3 bench/serve/load.py "$url" smollm2 "$clients" "$clients" "$MAX_TOKENS" >/dev/null  # warm-up
    python3 bench/serve/load.py "$url" smollm2 "$clients" "$REQUESTS" "$MAX_TOKENS" |
      python3 -c 'import json, sys; r = json.load(sys.stdin); print("  %-22s %7d %10.2f %8.3f %8.3f %10.1f" % (sys.argv[1], r["clients"], r["requests_per_s"], r["p50_s"], r["p99_s"], r["tokens_per_s"]))' "$side"
  done
done
