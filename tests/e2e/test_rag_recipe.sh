#!/usr/bin/env bash
# The Debian FAQ dataset script and the RAG chatbot recipe.
#
# Always: the dataset script refuses a missing FAQ with the apt-get line.
# With the debian-faq package installed: its output has the FAQ's chapters
# and more than 50 questions, none with an empty answer. With SmolLM2 and
# all-MiniLM-L6-v2 fetched too: recipes/rag_chatbot.lua runs at tiny
# settings on two FAQ chapters and records sane metrics (recall and
# ROUGE-L in [0, 1], hybrid recall no worse than the worse of BM25 and
# dense, no chunk holding its own question heading, judge scores from
# tests/e2e/fake_openai.py on loopback) and a whole RAG store. Each missing
# piece skips, saying so, the parts that need it.
source "$(dirname "$0")/loopback.sh"
src=$root
export MOONFORGE_HOME="$tmp/home"

if "$MOONFORGE" exec datasets/debian_faq/extract.lua --faq "$tmp/absent" --out "$tmp/none" 2>"$tmp/err.txt"; then
  fail "extract.lua accepted a missing FAQ"
fi
grep -q "apt-get install debian-faq" "$tmp/err.txt" || { cat "$tmp/err.txt"; fail "no install hint"; }

faq=/usr/share/doc/debian/FAQ
if [ ! -d "$faq" ]; then
  echo "skipped: the debian-faq package is not installed (apt-get install debian-faq)"
  echo "ok"
  exit 0
fi
"$MOONFORGE" exec datasets/debian_faq/extract.lua --out "$tmp/faq" >"$tmp/extract.txt" ||
  { cat "$tmp/extract.txt"; fail "extract.lua failed"; }

# check.lua WHAT ARGS...: the Lua checks below, run by moonforge exec.
cat >"$tmp/check.lua" <<'EOF'
local json = require "moonforge.json"
local what, a, b = ...
local function rows(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = json.decode(line) end
  return out
end
local function check(ok, message) if not ok then error(message, 0) end end

if what == "dataset" then
  local qa = rows(a .. "/qa.jsonl")
  check(#qa > 50, #qa .. " questions, expected more than 50")
  local seen = {}
  for i, q in ipairs(qa) do
    check(type(q.answer) == "string" and q.answer:find("%S"), "question " .. i .. " has an empty answer")
    check(q.question:find("?", 1, true), "question " .. i .. " asks nothing: " .. q.question)
    check(not seen[q.id], "question id " .. q.id .. " twice")
    seen[q.id] = true
  end
  local docs = io.popen("ls " .. a .. "/docs"):read("*a")
  local _, n = docs:gsub("%.md\n", "")
  check(n >= 14, n .. " chapter documents")
elseif what == "run" then
  local m = {}
  for _, r in ipairs(rows(a .. "/metrics.jsonl")) do m[r.name] = r.value end
  local function metric(name)
    check(type(m[name]) == "number", "no metric " .. name)
    return m[name]
  end
  for _, method in ipairs({ "bm25", "dense", "hybrid" }) do
    for _, name in ipairs({ "recall@1", "recall@3", "recall@5", "mrr" }) do
      local v = metric(method .. "/" .. name)
      check(v >= 0 and v <= 1, method .. "/" .. name .. " = " .. v)
    end
  end
  for _, k in ipairs({ "3", "5" }) do
    local worse = math.min(metric("bm25/recall@" .. k), metric("dense/recall@" .. k))
    check(metric("hybrid/recall@" .. k) >= worse, "hybrid recall@" .. k .. " below both BM25's and dense's")
  end
  check(metric("dense/recall@5") > 0, "dense retrieval found nothing")
  for _, c in ipairs({ "none", "bm25", "dense", "hybrid", "tuned_hybrid" }) do
    local v = metric(c .. "/rouge_l")
    check(v >= 0 and v <= 1, c .. "/rouge_l = " .. v)
    metric(c .. "/citation_rate")
  end
  metric("train/loss")
  check(metric("tuned_hybrid/judge_mean") == 5, "the fake judge's 5 was not recorded")
  -- The store: three files that agree, and no chunk holding its heading.
  local store_dir = a .. "/artifacts/debian_faq.mfrag"
  local store = json.decode(io.open(store_dir .. "/store.json"):read("*a"))
  check(store.format == "moonforge-rag-store" and store.count == metric("chunks"), "store.json disagrees")
  check(io.open(store_dir .. "/index.mfvi"), "no index.mfvi")
  local chunks = rows(store_dir .. "/chunks.jsonl")
  check(#chunks == store.count, #chunks .. " chunks for a count of " .. store.count)
  for _, q in ipairs(rows(b .. "/qa.jsonl")) do
    for _, c in ipairs(chunks) do
      check(not c.text:find(q.question, 1, true), "chunk " .. c.id .. " holds the question " .. q.question)
    end
  end
end
EOF
"$MOONFORGE" exec "$tmp/check.lua" dataset "$tmp/faq" || fail "dataset check"

model=$src/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
encoder=$src/datasets/cache/minilm/all-MiniLM-L6-v2
for need in "$model:bash datasets/smollm2/fetch.sh" "$encoder:bash datasets/minilm/fetch.sh"; do
  if [ ! -e "${need%%:*}" ]; then
    echo "skipped the recipe: ${need%%:*} is absent (${need#*:} fetches it)"
    echo "ok"
    exit 0
  fi
done

# Two chapters and their questions keep the run short.
mkdir -p "$tmp/small/docs"
cp "$tmp/faq/docs/01-"*.md "$tmp/faq/docs/10-"*.md "$tmp/small/docs/"
grep -e '"section":"1\.' -e '"section":"10\.' "$tmp/faq/qa.jsonl" >"$tmp/small/qa.jsonl"
start_port_server tests/e2e/fake_openai.py --timeout 300
cd "$tmp"
"$MOONFORGE" run "$src/recipes/rag_chatbot.lua" --set faq="$tmp/small" --set repo_docs=false \
  --set test_questions=2 --set max_tokens=8 --set duration=0.25ep --set batch_size=2 --set chunk_tokens=64 \
  --set judge_url="http://127.0.0.1:$port" --set judge_model=fake-judge >out.txt 2>&1 ||
  { cat out.txt; fail "rag_chatbot.lua failed"; }
dir=$(sed -n '1s/^run [^ ]* (\(.*\))$/\1/p' out.txt)
"$MOONFORGE" exec "$tmp/check.lua" run "$dir" "$tmp/small" || { cat out.txt; fail "run check"; }
grep -q "moonforge serve .* --index .*debian_faq.mfrag" out.txt || fail "no serve command printed"
echo "ok"
