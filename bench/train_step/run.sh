#!/usr/bin/env bash
# Training-step benchmark: moonforge against PyTorch on the same Llama (the
# llama2.c "stories15M" shape by default), same threads, same batch.
#
#   bash bench/train_step/run.sh [BUILD_DIR]      (default: build)
#
# Prints training tokens/s (forward + backward + AdamW), greedy KV-cache
# decode tokens/s, their ratios, and each side's model-FLOPs utilisation
# against the machine's sgemm peak. Environment: THREADS (2), STEPS (10
# timed steps after 2 warm-up ones), PEAK_GFLOPS (skip measuring the peak).
# Shared machines make single runs noisy: compare several.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MOONFORGE=${MOONFORGE:-$BUILD/moonforge}
THREADS=${THREADS:-2}
STEPS=${STEPS:-10}
DIM=288 LAYERS=6 HEADS=6 KV_HEADS=6 FFN=768 VOCAB=32000 SEQ=256 BATCH=8

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { awk -v key="$1" '$1 == key { print $2 }' "$2"; }

# The machine's sgemm peak for THREADS threads, from bench/gemm.
peak_gflops() {
  if [ -n "${PEAK_GFLOPS:-}" ]; then echo "$PEAK_GFLOPS"; return; fi
  local gemm="$BUILD/bench/gemm/mf_bench_gemm"
  [ -x "$gemm" ] || { echo "run.sh: $gemm not built; set PEAK_GFLOPS" >&2; exit 1; }
  MOONFORGE_THREADS=$THREADS "$gemm" --peak-only | awk -v t="$THREADS" '$1 == "peak" && $2 == t { print $3 }'
}

echo "shape: dim $DIM, $LAYERS layers, $HEADS heads ($KV_HEADS kv), ffn $FFN, vocab $VOCAB," \
  "seq $SEQ, batch $BATCH, f32, tied embeddings; $THREADS threads, $STEPS timed steps"
MOONFORGE_THREADS=$THREADS "$MOONFORGE" exec bench/train_step/train_step.lua dim=$DIM layers=$LAYERS \
  heads=$HEADS kv_heads=$KV_HEADS ffn=$FFN vocab=$VOCAB seq=$SEQ batch=$BATCH steps=$STEPS >"$tmp/mf"
python3 bench/train_step/torch_step.py --dim $DIM --layers $LAYERS --heads $HEADS --kv-heads $KV_HEADS \
  --ffn $FFN --vocab $VOCAB --seq $SEQ --batch $BATCH --steps $STEPS --threads $THREADS >"$tmp/torch"
PEAK=$(peak_gflops)

awk -v mf_params="$(field params "$tmp/mf")" -v torch_params="$(field params "$tmp/torch")" \
    -v mf_train="$(field train_tokens_per_s "$tmp/mf")" -v torch_train="$(field train_tokens_per_s "$tmp/torch")" \
    -v mf_decode="$(field decode_tokens_per_s "$tmp/mf")" -v torch_decode="$(field decode_tokens_per_s "$tmp/torch")" \
    -v L=$LAYERS -v H=$HEADS -v hd=$((DIM / HEADS)) -v T=$SEQ -v peak="$PEAK" '
  function mfu(tokens_per_s) { return 100 * tokens_per_s * flops / (peak * 1e9) }
  BEGIN {
    if (mf_params != torch_params) printf "warning: parameter counts differ: %d vs %d\n", mf_params, torch_params
    # PaLM-style model FLOPs per token: 6N for the weight matmuls forward and
    # backward (N counts the tied embedding once, as the LM head), plus
    # 12*L*H*hd*T for attention scores and values (causality not discounted).
    flops = 6 * mf_params + 12 * L * H * hd * T
    printf "model FLOPs/token = 6N + 12*L*H*hd*T = 6*%d + 12*%d*%d*%d*%d = %.1f MFLOP\n",
      mf_params, L, H, hd, T, flops / 1e6
    printf "sgemm peak: %.1f GFLOP/s\n\n", peak
    printf "%-22s %12s %12s %8s\n", "", "moonforge", "PyTorch", "ratio"
    printf "%-22s %12.1f %12.1f %7.2fx\n", "train tokens/s", mf_train, torch_train, mf_train / torch_train
    printf "%-22s %12.1f %12.1f %7.2fx\n", "decode tokens/s", mf_decode, torch_decode, mf_decode / torch_decode
    printf "%-22s %11.1f%% %11.1f%%\n\n", "train MFU", mfu(mf_train), mfu(torch_train)
    printf "target train ratio >= 2x: %s\n", (mf_train >= 2 * torch_train ? "met" : "not met")
    printf "target moonforge MFU >= 60%%: %s\n", (mfu(mf_train) >= 60 ? "met" : "not met")
  }'
