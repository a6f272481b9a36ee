-- The shipped datasets: the support-ticket generator is deterministic and
-- reproduces the committed files; every committed file matches the SHA-256
-- pinned in its CARD.md; the chat forms are valid CHAT_COMPLETION data.
local T = require "testing"
local D = require "data_testing"
local mf = require "moonforge"
local engine = require "moonforge.engine"

local root = os.getenv("MF_SOURCE_DIR") or "."
local exe = os.getenv("MOONFORGE") or "moonforge"
local dir = T.tmpdir("datasets")
local FILES = { "raw/train.jsonl", "raw/eval.jsonl", "raw/test.jsonl", "chat/train.jsonl", "chat/eval.jsonl",
  "chat/test.jsonl" }

local read = T.read

-- Runs the generator into out; returns what it printed.
local function generate(out, args)
  local log = out .. ".log"
  local cmd = string.format("'%s' exec '%s/datasets/support_tickets/generate.lua' --out '%s' %s > '%s' 2>&1",
    exe, root, out, args or "", log)
  local status = os.execute(cmd)
  local printed = read(log)
  T.truthy(status == 0 or status == true, "the generator failed: " .. printed)
  return printed
end

local function hashes(folder)
  local out = {}
  for _, name in ipairs(FILES) do out[name] = engine.sha256_file(folder .. "/" .. name) end
  return out
end

T.test("the ticket generator gives the same bytes twice", function()
  generate(dir .. "/a", "--counts 20,5,5")
  generate(dir .. "/b", "--counts 20,5,5")
  generate(dir .. "/c", "--counts 20,5,5 --seed 9")
  local a, b, c = hashes(dir .. "/a"), hashes(dir .. "/b"), hashes(dir .. "/c")
  for _, name in ipairs(FILES) do
    T.eq(a[name], b[name], name)
    T.truthy(a[name] ~= c[name], name .. " should change with the seed")
  end
  T.eq(#mf.data.read_jsonl(dir .. "/a/raw/train.jsonl"), 20)
end)

T.test("the committed tickets are the generator's output", function()
  local printed = generate(dir .. "/full")
  local made, shipped = hashes(dir .. "/full"), hashes(root .. "/datasets/support_tickets")
  for _, name in ipairs(FILES) do T.eq(shipped[name], made[name], name) end
  local accuracy = tonumber(printed:match("keyword baseline accuracy on test: ([%d.]+)%%"))
  T.truthy(accuracy and accuracy < 60, "the keyword baseline should stay well below 100%: " .. tostring(accuracy))
end)

-- "HASH  FILE" lines of a card, as sha256sum prints them.
local function pinned(card)
  local out = {}
  for hash, name in read(card):gmatch("\n(%x+)  (%S+%.jsonl)") do out[name] = hash end
  return out
end

for _, set in ipairs({ "support_tickets", "debian_sections" }) do
  T.test(set .. ": files match the SHA-256 pinned in CARD.md and hold valid chats", function()
    local folder = root .. "/datasets/" .. set
    local pins = pinned(folder .. "/CARD.md")
    for _, name in ipairs(FILES) do
      T.eq(engine.sha256_file(folder .. "/" .. name), pins[name], set .. "/" .. name)
    end
    local rows = mf.data.read_jsonl(folder .. "/chat/test.jsonl")
    local valid = mf.data.validate(rows, "CHAT_COMPLETION")
    T.eq(#valid, #rows)
    local examples, report = mf.data.tokenize(valid, D.tokenizer, { task_type = "CHAT_COMPLETION" })
    T.eq(#examples, #rows)
    T.truthy(report.trained_tokens < report.tokens / 4, "only the answers are trained")
    local raw = mf.data.read_jsonl(folder .. "/raw/train.jsonl")
    T.eq(#mf.data.dedup(raw, { field = set == "support_tickets" and "ticket" or "description" }), #raw,
      "no duplicate inputs")
  end)
end

return T.done()
