#!/usr/bin/env bash
# LoRA fine-tuning benchmark: moonforge against transformers + PEFT on
# SmolLM2-135M-Instruct (its Q4_1 GGUF, dequantized to f32 on both sides),
# r 8 / alpha 16 / dropout 0.05 on every linear layer, seq 256, batch 4,
# AdamW on the adapters, same threads.
#
#   bash bench/lora_step/run.sh [BUILD_DIR]      (default: build)
#
# Both sides run at once, each in its own process under /usr/bin/time
# (peak resident memory), and alternate.py times them in turns of two steps,
# the second timed, so that both meet the same load on a shared machine.
# Prints tokens/s (over each side's median timed step) and peak memory for
# both and their ratios. Environment: THREADS (2), STEPS (5 timed steps a
# side, after four warm-up steps), BASE (f32): the frozen base's precision
# in moonforge, f32, bf16, q8_0, q4_0 or q4_1; PEFT's base is bf16 when BASE
# is bf16, else f32.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MOONFORGE=${MOONFORGE:-$BUILD/moonforge}
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
BASE=${BASE:-f32}
PEFT_DTYPE=$([ "$BASE" = bf16 ] && echo bf16 || echo f32)
SEQ=256 BATCH=4
MODEL=datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

bash datasets/smollm2/fetch.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
field() { awk -v key="$1" '$1 == key { print $2 }' "$out"; }

echo "SmolLM2-135M, frozen base in $BASE (PEFT: $PEFT_DTYPE), LoRA r 8 on all linear layers, seq $SEQ," \
  "batch $BATCH (half masked); $THREADS threads, $STEPS turns of 2 steps a side, the second timed"
MOONFORGE_THREADS=$THREADS OMP_NUM_THREADS=$THREADS python3 bench/lora_step/alternate.py \
  --steps "$STEPS" --seq $SEQ --batch $BATCH \
  --moonforge "$MOONFORGE exec bench/lora_step/lora_step.lua model=$MODEL seq=$SEQ batch=$BATCH base=$BASE" \
  --peft "python3 bench/lora_step/peft_step.py --model $MODEL --seq $SEQ --batch $BATCH --threads $THREADS \
--dtype $PEFT_DTYPE" >"$out"
echo "timed step seconds, in turn: moonforge $(field moonforge_step_s), PEFT $(field peft_step_s)"

awk -v mf_tps="$(field moonforge_tokens_per_s)" -v pt_tps="$(field peft_tokens_per_s)" \
    -v mf_rss="$(field moonforge_peak_kib)" -v pt_rss="$(field peft_peak_kib)" \
    -v mf_loss="$(field moonforge_loss)" -v pt_loss="$(field peft_loss)" '
  BEGIN {
    printf "%-22s %12s %12s %8s\n", "", "moonforge", "PEFT", "ratio"
    printf "%-22s %12.1f %12.1f %7.2fx\n", "train tokens/s", mf_tps, pt_tps, mf_tps / pt_tps
    printf "%-22s %12.0f %12.0f %7.2fx\n", "peak resident MiB", mf_rss / 1024, pt_rss / 1024, mf_rss / pt_rss
    printf "%-22s %12.4f %12.4f\n\n", "last loss", mf_loss, pt_loss
    printf "target tokens/s ratio >= 2x: %s\n", (mf_tps >= 2 * pt_tps ? "met" : "not met")
    printf "target memory ratio <= 0.5x: %s\n", (mf_rss <= 0.5 * pt_rss ? "met" : "not met")
  }'
