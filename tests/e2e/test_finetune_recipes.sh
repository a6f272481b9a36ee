#!/usr/bin/env bash
# The fine-tuning recipes run end to end at tiny settings on SmolLM2-135M
# (skipped with a message when the model has not been fetched): each run
# succeeds, records its before/after metrics, and the classification recipes
# register a model that `moonforge models` lists.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
src=$PWD
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
model=$src/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$model" ]; then
  echo "skipped: $model is absent (bash datasets/smollm2/fetch.sh fetches it)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache" MOONFORGE_HOME="$tmp/home"
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

# run RECIPE METRIC... -- SET...: runs the recipe and checks that each metric was logged.
run() {
  local recipe=$1
  shift
  local metrics=()
  while [ "$1" != "--" ]; do metrics+=("$1"); shift; done
  shift
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  "$MOONFORGE" run "$src/recipes/$recipe" "${sets[@]}" >out.txt 2>&1 || { cat out.txt; fail "$recipe failed"; }
  local dir
  dir=$(sed -n '1s/^run [^ ]* (\(.*\))$/\1/p' out.txt)
  for m in "${metrics[@]}"; do
    grep -q "\"name\": *\"$m\"" "$dir/metrics.jsonl" || fail "$recipe: no metric $m"
  done
}

classify=(train_rows=8 eval_rows=4 test_rows=4 batch_size=4 shots=1 max_tokens=4 context_length=192)
run finetune_tutorial.lua base/accuracy tuned/accuracy base/macro_f1 tuned/macro_f1 train/loss eval/loss -- \
  "${classify[@]}"
run finetune_debian_sections.lua base/accuracy tuned/accuracy train/loss -- "${classify[@]}" max_chars=200
run continued_pretrain.lua base/perplexity tuned/perplexity train/loss -- train_docs=6 eval_docs=2 batch_size=4
"$MOONFORGE" models >models.txt
grep -q "^support-tickets *v1 " models.txt || { cat models.txt; fail "the tutorial's model is not registered"; }
grep -q "^debian-sections *v1 " models.txt || { cat models.txt; fail "the Debian model is not registered"; }
echo "ok"
