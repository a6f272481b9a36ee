#!/usr/bin/env bash
# recipes/pretrain_tiny.lua at tiny settings on the shipped corpus sample:
# the run succeeds, logs a train loss every step and an eval loss every
# eval_every steps, learns (eval loss well below its value at step 0), prints
# samples and saves the model; a second run is served from the cache.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=${MOONFORGE:-build/moonforge}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache"

settings=(--set data=datasets/pretrain_corpus/sample.txt --set steps=16 --set warmup=2
  --set lr=0.01 --set min_lr=0.001 --set dim=32 --set layers=1 --set heads=2 --set kv_heads=1
  --set ffn=64 --set seq=32 --set batch=4 --set eval_every=8 --set eval_batches=2
  --set sample_every=8 --set sample_tokens=8)

run_recipe() {
  if ! "$MOONFORGE" run recipes/pretrain_tiny.lua --runs "$tmp/runs-$1" "${settings[@]}" \
      >"$tmp/out-$1.txt" 2>&1; then
    cat "$tmp/out-$1.txt"
    echo "FAIL: run $1 of recipes/pretrain_tiny.lua failed"
    exit 1
  fi
  ls -d "$tmp/runs-$1"/pretrain_tiny-*
}

first=$(run_recipe 1)
grep -q '\[step 8\] And God said' "$tmp/out-1.txt" || { echo "FAIL: no samples printed"; exit 1; }
for f in config.json model.safetensors; do
  [ -s "$first/artifacts/$f" ] || { echo "FAIL: artifact $f missing"; exit 1; }
done
second=$(run_recipe 2)

cat >"$tmp/check.lua" <<'EOF'
local json = require "moonforge.json"
local first, second = arg[1], arg[2]

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function check(ok, message)
  if not ok then error("FAIL: " .. message, 0) end
end

local manifest = json.decode(read(first .. "/manifest.json"))
check(manifest.status == "success", "first run status " .. tostring(manifest.status))

local steps = { ["train/loss"] = {}, ["eval/loss"] = {} }
local final
for line in read(first .. "/metrics.jsonl"):gmatch("[^\n]+") do
  local m = json.decode(line)
  if steps[m.name] then steps[m.name][m.step] = m.value end
  if m.name == "eval/final_loss" then final = m.value end
end
for s = 1, 16 do check(steps["train/loss"][s], "no train/loss at step " .. s) end
for _, s in ipairs({ 0, 8, 16 }) do check(steps["eval/loss"][s], "no eval/loss at step " .. s) end
local start = steps["eval/loss"][0]
check(math.abs(start - math.log(256)) < 0.1, "eval loss at step 0 is " .. start .. ", not about ln 256")
check(final == steps["eval/loss"][16], "eval/final_loss differs from the last eval/loss")
check(final < start - 1, string.format("no learning: eval loss %.3f -> %.3f", start, final))

local again = json.decode(read(second .. "/manifest.json"))
check(again.status == "success", "second run status " .. tostring(again.status))
for _, cell in ipairs(again.cells) do
  check(cell.cache_hit, "second run recomputed cell '" .. cell.title .. "'")
end
print(string.format("ok: eval loss %.3f -> %.3f nats/byte; second run fully cached", start, final))
EOF
"$MOONFORGE" exec "$tmp/check.lua" "$first" "$second"
