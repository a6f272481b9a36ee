#!/usr/bin/env bash
# moonforge pack / unpack: a model folder, a run and a registry entry packed
# into bundles (the same bytes when packed again), unpacked byte for byte;
# a truncated bundle and one past --max-bytes refused with nothing written.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=${MOONFORGE:-build/moonforge}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache" MOONFORGE_HOME="$tmp/home"
fail() { echo "FAIL: $*" >&2; exit 1; }
model=tests/reference/golden/models/llama_gqa
tokenizer=tests/reference/golden/tokenizers/llama3.json

# A model folder with a tokenizer, twice: the same bytes.
"$MOONFORGE" pack "$model" --tokenizer "$tokenizer" -o "$tmp/a.mfb" >/dev/null || fail "pack a model folder"
"$MOONFORGE" pack "$model" --tokenizer "$tokenizer" -o "$tmp/b.mfb" >/dev/null
cmp -s "$tmp/a.mfb" "$tmp/b.mfb" || fail "packing the same files twice gave different bytes"
"$MOONFORGE" unpack "$tmp/a.mfb" -o "$tmp/a" >/dev/null || fail "unpack"
for f in "$model"/*; do cmp -s "$f" "$tmp/a/model/${f##*/}" || fail "model/${f##*/} differs"; done
cmp -s "$tokenizer" "$tmp/a/tokenizer/tokenizer.json" || fail "the tokenizer differs"

# A run whose cell saves its model as artifacts/model.
cat >"$tmp/tiny.lua" <<'EOF'
local mf = require "moonforge"
local r = mf.recipe{ name = "tiny", seed = 1, params = { width = 32 } }
r:cell("train", function(ctx)
  local m = mf.model.new({ model_type = "llama", vocab_size = 64, hidden_size = ctx.params.width,
    intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 4, seed = 1 })
  ctx:metric("eval/loss", m:loss({ 1, 2, 3 }, { 2, 3, 4 }))
  m:save(ctx.run_dir .. "/artifacts/model")
end)
return r
EOF
"$MOONFORGE" run "$tmp/tiny.lua" --runs "$tmp/runs" >"$tmp/run.txt" 2>&1 || { cat "$tmp/run.txt"; fail "run"; }
run_id=$(ls "$tmp/runs")
"$MOONFORGE" pack "$run_id" --runs "$tmp/runs" --tokenizer "$tokenizer" -o "$tmp/run.mfb" >/dev/null ||
  fail "pack a run by id"
"$MOONFORGE" pack "$tmp/runs/$run_id" --tokenizer "$tokenizer" -o "$tmp/run2.mfb" >/dev/null
cmp -s "$tmp/run.mfb" "$tmp/run2.mfb" || fail "a run packed twice gave different bytes"
"$MOONFORGE" unpack "$tmp/run.mfb" -o "$tmp/run" >/dev/null
cmp -s "$tmp/tiny.lua" "$tmp/run/run/recipe.lua" || fail "the recipe is not in the bundle"
cmp -s "$tmp/runs/$run_id/artifacts/model/model.safetensors" "$tmp/run/model/model.safetensors" ||
  fail "the run's model is not in the bundle"
grep -q "| eval/loss |" "$tmp/run/README.md" || fail "the card lacks the run's metrics"
grep -q "| width | 32 |" "$tmp/run/README.md" || fail "the card lacks the run's params"

# A registry entry, by name and version.
cat >"$tmp/register.lua" <<EOF
local mf = require "moonforge"
mf.registry.register("tiny", { model = "$model", tokenizer = "$tokenizer", metrics = { accuracy = 0.75 } })
EOF
"$MOONFORGE" exec "$tmp/register.lua" || fail "register"
"$MOONFORGE" pack tiny:v1 -o "$tmp/entry.mfb" >/dev/null || fail "pack a registry entry"
"$MOONFORGE" unpack "$tmp/entry.mfb" -o "$tmp/entry" >/dev/null
grep -q "^# tiny v1" "$tmp/entry/README.md" || fail "the card is not titled after the entry"
grep -q "| accuracy | 0.75 |" "$tmp/entry/README.md" || fail "the card lacks the entry's metrics"

# Refusals: nothing appears beside the target.
mkdir "$tmp/t"
head -c 100000 "$tmp/a.mfb" >"$tmp/cut.mfb"
if "$MOONFORGE" unpack "$tmp/cut.mfb" -o "$tmp/t/out" 2>"$tmp/err.txt"; then fail "a truncated bundle unpacked"; fi
grep -q "truncated" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"
if "$MOONFORGE" unpack "$tmp/a.mfb" -o "$tmp/t/out" --max-bytes 100000 2>"$tmp/err.txt"; then
  fail "--max-bytes was ignored"
fi
grep -q "more than the limit" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"
[ -z "$(ls -A "$tmp/t")" ] || fail "a refused bundle left files: $(ls -A "$tmp/t")"
if "$MOONFORGE" pack "$tmp/nowhere" -o "$tmp/x.mfb" 2>/dev/null; then fail "packing nothing succeeded"; fi
[ ! -e "$tmp/x.mfb" ] || fail "a failed pack left a file"
echo "all bundle CLI checks passed"
