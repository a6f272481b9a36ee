#!/usr/bin/env bash
# A fine-tuning run killed with SIGKILL after a checkpoint, resumed with
# `moonforge run --from finetune`, ends with weights bit-identical to those
# of a run never stopped: LoRA (with dropout) and full fine-tuning of a tiny
# random model on the golden SmolLM tokenizer.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
export MF_SOURCE_DIR=$PWD
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

cat >ft.lua <<'EOF'
-- Fine-tunes a tiny model; MF_TEST_DELAY_MS slows each step (outside the
-- cache key, so a slowed run and a fast one share checkpoints).
local mf = require "moonforge"
local engine = require "moonforge.engine"
local r = mf.recipe{ name = "ft_resume", seed = 3, params = { lora = true } }

r:cell("data", function()
  local rows = {}
  for i = 1, 24 do
    local label = ({ "alpha", "beta", "gamma" })[i % 3 + 1]
    rows[i] = { messages = { { role = "user", content = "note " .. i .. " is about " .. label },
      { role = "assistant", content = label } } }
  end
  return rows
end)

r:cell("finetune", { uses = { "data" } }, function(ctx, rows)
  local delay = tonumber(os.getenv("MF_TEST_DELAY_MS") or "0")
  local model = mf.model.new{ model_type = "llama", vocab_size = 1024, hidden_size = 32, intermediate_size = 64,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 64, seed = 5 }
  local run = mf.finetune{ model = model, train_data = rows, template = "chatml",
    tokenizer = os.getenv("MF_SOURCE_DIR") .. "/tests/reference/golden/tokenizers/smollm.json",
    lora = ctx.params.lora and { r = 4, alpha = 8, dropout = 0.1 }, training_duration = "4ep",
    learning_rate = 1e-2, context_length = 48, batch_size = 4, checkpoint_every = 5, ctx = ctx,
    on_step = function() engine.C.mf_sleep_ms(delay) end }
  local file = run.adapter_path and (run.adapter_path .. "/adapter_model.safetensors")
    or (run.model_path .. "/model.safetensors")
  print("weights sha256 " .. engine.sha256_file(file))
end)

return r
EOF

digest() { sed -n 's/^weights sha256 \([0-9a-f]*\)$/\1/p' "$1"; }

for lora in true false; do
  MOONFORGE_CACHE="$tmp/whole-$lora" "$MOONFORGE" run ft.lua --set lora=$lora >whole.txt 2>&1 ||
    { cat whole.txt; fail "lora=$lora: the uninterrupted run failed"; }
  want=$(digest whole.txt)
  [ -n "$want" ] || { cat whole.txt; fail "lora=$lora: no digest"; }

  export MOONFORGE_CACHE="$tmp/killed-$lora"
  MF_TEST_DELAY_MS=200 "$MOONFORGE" run ft.lua --set lora=$lora >killed.txt 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    compgen -G "$MOONFORGE_CACHE/checkpoints/*/latest" >/dev/null && break
    sleep 0.05
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  latest=$(cat "$MOONFORGE_CACHE"/checkpoints/*/latest) || fail "lora=$lora: no checkpoint before the kill"
  [ "$latest" != step-000024 ] || fail "lora=$lora: the run ended before the kill"

  "$MOONFORGE" run ft.lua --set lora=$lora --from finetune >resumed.txt 2>&1 ||
    { cat resumed.txt; fail "lora=$lora: the resumed run failed"; }
  grep -q "resuming from the checkpoint of step $((10#${latest#step-})) of 24" resumed.txt ||
    { cat resumed.txt; fail "lora=$lora: did not resume from $latest"; }
  [ "$(digest resumed.txt)" = "$want" ] || fail "lora=$lora: resumed weights differ from the uninterrupted run's"
  unset MOONFORGE_CACHE
done
echo "ok"
