#!/usr/bin/env bash
# datasets/pretrain_corpus/tokenize.lua on the shipped sample: a BPE
# vocabulary is trained, both splits become shards with one document per
# paragraph, and the shards decode back to the text they came from.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

head -n 120 datasets/pretrain_corpus/sample.txt >"$tmp/train.txt"
tail -n +121 datasets/pretrain_corpus/sample.txt >"$tmp/eval.txt"
"$MOONFORGE" exec datasets/pretrain_corpus/tokenize.lua 700 "$tmp" >"$tmp/out.txt" || { cat "$tmp/out.txt"; fail "tokenize.lua"; }
cat >"$tmp/check.lua" <<'LUA'
local mf = require "moonforge"
local dir = arg[1]
local tok = mf.tokenizer.load(dir .. "/tokenizer.json")
assert(tok.vocab_size == 700, "vocab size " .. tok.vocab_size)
local eot = tok:id("<|endoftext|>")
for _, split in ipairs({ "train", "eval" }) do
  local shard = mf.data.open_shard(dir .. "/" .. split .. ".shard")
  local lines = {}
  for line in io.lines(dir .. "/" .. split .. ".txt") do lines[#lines + 1] = line end
  assert(shard:docs() == #lines, split .. ": " .. shard:docs() .. " documents for " .. #lines .. " lines")
  for i = 1, #lines do
    local ids = shard:doc(i):totable()
    assert(ids[#ids] == eot, split .. " document " .. i .. " does not end with <|endoftext|>")
    table.remove(ids)
    assert(tok:decode(ids) == lines[i], split .. " document " .. i .. " does not decode to its line")
  end
end
print("ok")
LUA
[ "$("$MOONFORGE" exec "$tmp/check.lua" "$tmp")" = ok ] || fail "the shards do not hold the corpus"
grep -q "train.shard .* 120 documents" "$tmp/out.txt" || { cat "$tmp/out.txt"; fail "no train shard report"; }
echo ok
