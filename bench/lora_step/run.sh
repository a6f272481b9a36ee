#!/usr/bin/env bash
# LoRA fine-tuning benchmark: moonforge against transformers + PEFT on
# SmolLM2-135M-Instruct (its Q4_1 GGUF, dequantized to f32 on both sides),
# r 8 / alpha 16 / dropout 0.05 on every linear layer, seq 256, batch 4,
# AdamW on the adapters, same threads.
#
#   bash bench/lora_step/run.sh [BUILD_DIR]      (default: build)
#
# Each side runs in its own process under /usr/bin/time, which reports its
# peak resident memory. Prints tokens/s and peak memory for both and their
# ratios. Environment: THREADS (2), STEPS (3 timed steps after a warm-up),
# BASE (f32): the frozen base's precision in moonforge, f32, bf16, q8_0,
# q4_0 or q4_1; PEFT's base is bf16 when BASE is bf16, else f32.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MOONFORGE=${MOONFORGE:-$BUILD/moonforge}
THREADS=${THREADS:-2}
STEPS=${STEPS:-3}
BASE=${BASE:-f32}
PEFT_DTYPE=$([ "$BASE" = bf16 ] && echo bf16 || echo f32)
SEQ=256 BATCH=4
MODEL=datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

bash datasets/smollm2/fetch.sh >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { awk -v key="$1" '$1 == key { print $2 }' "$2"; }
maxrss_kb() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }

echo "SmolLM2-135M, frozen base in $BASE (PEFT: $PEFT_DTYPE), LoRA r 8 on all linear layers, seq $SEQ," \
  "batch $BATCH (half masked); $THREADS threads, $STEPS timed steps"
MOONFORGE_THREADS=$THREADS /usr/bin/time -v "$MOONFORGE" exec bench/lora_step/lora_step.lua model=$MODEL \
  seq=$SEQ batch=$BATCH steps=$STEPS base=$BASE >"$tmp/mf" 2>"$tmp/mf.time"
OMP_NUM_THREADS=$THREADS /usr/bin/time -v python3 bench/lora_step/peft_step.py --model $MODEL --seq $SEQ \
  --batch $BATCH --steps $STEPS --threads $THREADS --dtype $PEFT_DTYPE >"$tmp/torch" 2>"$tmp/torch.time"

awk -v mf_tps="$(field tokens_per_s "$tmp/mf")" -v pt_tps="$(field tokens_per_s "$tmp/torch")" \
    -v mf_rss="$(maxrss_kb "$tmp/mf.time")" -v pt_rss="$(maxrss_kb "$tmp/torch.time")" \
    -v mf_loss="$(field loss "$tmp/mf")" -v pt_loss="$(field loss "$tmp/torch")" '
  BEGIN {
    printf "%-22s %12s %12s %8s\n", "", "moonforge", "PEFT", "ratio"
    printf "%-22s %12.1f %12.1f %7.2fx\n", "train tokens/s", mf_tps, pt_tps, mf_tps / pt_tps
    printf "%-22s %12.0f %12.0f %7.2fx\n", "peak resident MiB", mf_rss / 1024, pt_rss / 1024, mf_rss / pt_rss
    printf "%-22s %12.4f %12.4f\n\n", "last loss", mf_loss, pt_loss
    printf "target tokens/s ratio >= 2x: %s\n", (mf_tps >= 2 * pt_tps ? "met" : "not met")
    printf "target memory ratio <= 0.5x: %s\n", (mf_rss <= 0.5 * pt_rss ? "met" : "not met")
  }'
