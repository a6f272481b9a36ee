-- mf.data: readers (JSONL, RFC 4180 CSV, text folders) with file:line
-- errors, validation of the hosted task types, tokenization with loss masks,
-- packing, deterministic shuffle and split, dedup and length filtering.
local T = require "testing"
local D = require "data_testing"
local mf = require "moonforge"

local data = mf.data
local dir = T.tmpdir("data")

T.test("read_jsonl reads objects and names the file and line of a bad one", function()
  local path = D.write(dir, "train.jsonl", '{"a": 1}\n\n{"a": 2}\r\n{"a": 3 "b": 4}\n[1]\n')
  local err = T.raises(function() data.read_jsonl(path) end, "train.jsonl:4: '}' expected near '\"b\"'")
  T.truthy(not err:find("data_read"), "the message carries no Lua position: " .. err)
  local rows, report = data.read_jsonl(path, { strict = false })
  T.eq(#rows, 2)
  T.eq(rows[2].a, 2)
  T.eq(data.where(rows[2]), path .. ":3")
  T.eq(report.kept, 2)
  T.eq(report.dropped, 2)
  T.eq(report.reasons["malformed JSON"], 1)
  T.eq(report.bad[2].where, path .. ":5")
  T.eq(report.bad[2].message, "expected a JSON object, got [1]")
  T.raises(function() data.read_jsonl(D.write(dir, "empty.jsonl", "")) end, "empty.jsonl: empty file")
  T.raises(function() data.read_jsonl(dir .. "/absent.jsonl") end, "absent.jsonl")
end)

T.test("read_csv follows RFC 4180", function()
  local text = 'id,text,label\r\n1,"Hello, ""world""",a\r\n2,"two\r\nlines",b\r\n\r\n3,plain,\r\n'
  local rows = data.read_csv(D.write(dir, "t.csv", text))
  T.eq(#rows, 3)
  T.eq(rows[1].text, 'Hello, "world"')
  T.eq(rows[2].text, "two\r\nlines")
  T.eq(rows[3].text, "plain")
  T.eq(rows[3].label, "", "a trailing separator ends with an empty field")
  T.truthy(data.where(rows[3]):find("t.csv:6$"), "line numbers count the embedded line break")
  local plain = data.read_csv(D.write(dir, "semi.csv", "a;b\nc;d"), { header = false, sep = ";" })
  T.eq(#plain, 2)
  T.eq(plain[2][2], "d")
end)

T.test("read_csv reports malformed records with their line", function()
  local path = D.write(dir, "bad.csv", 'a,b\n1,2\n3\n"x"y,4\n5,"unterminated\n6,7\n')
  T.raises(function() data.read_csv(path) end, "bad.csv:3: 1 fields, the header has 2")
  local rows, report = data.read_csv(path, { strict = false })
  T.eq(#rows, 1)
  T.eq(report.dropped, 3)
  T.eq(report.bad[1].where, path .. ":3")
  T.eq(report.bad[2].message, "text after a closing quote")
  T.eq(report.bad[2].where, path .. ":4")
  T.eq(report.bad[3].message, "unterminated quoted field")
  T.raises(function() data.read_csv(D.write(dir, "dup.csv", "a,a\n1,2\n")) end, "column 'a' appears twice")
  T.raises(function() data.read_csv(D.write(dir, "latin1.csv", "a\n\233t\233\n")) end, "latin1.csv:2: not valid UTF-8")
end)

T.test("read_text_folder reads matching files in name order", function()
  local folder = dir .. "/texts"
  assert(require("moonforge.host").mkdir_p(folder))
  D.write(folder, "b.txt", "second")
  D.write(folder, "a.txt", "first")
  D.write(folder, "c.md", "ignored")
  D.write(folder, "d.txt", "")
  T.raises(function() data.read_text_folder(folder) end, "d.txt: empty file")
  local rows, report = data.read_text_folder(folder, { strict = false })
  T.eq(#rows, 2)
  T.eq(rows[1].text, "first")
  T.eq(rows[2].file, "b.txt")
  T.eq(report.reasons["empty file"], 1)
  T.raises(function() data.read_text_folder(folder, { ext = ".json" }) end, "no *.json files")
end)

T.test("validate checks each task type and names the row and message", function()
  local path = D.write(dir, "chat.jsonl", table.concat({
    '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},'
      .. ' {"role": "assistant", "content": "Hello"}]}',
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}',
    '{"messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}]}',
    '{"messages": [{"role": "user", "content": "Hi"}]}',
    '{"messages": []}',
    '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},'
      .. ' {"role": "assistant", "content": "c"}]}',
  }, "\n"))
  local rows = data.read_jsonl(path)
  T.raises(function() data.validate(rows, "CHAT_COMPLETION") end,
    "chat.jsonl:2: messages[2]: unknown role 'bot' (system, user, assistant)")
  local kept, report = data.validate(rows, "CHAT_COMPLETION", { strict = false })
  T.eq(#kept, 1)
  T.eq(report.dropped, 5)
  T.eq(report.bad[2].message, "the last message must be the assistant's")
  T.eq(report.bad[3].message, "no assistant message to train on")
  T.eq(report.bad[4].message, "'messages' must be a non-empty list")
  T.eq(report.bad[5].message, "messages[2]: a system message may only come first")
  T.raises(function() data.validate({ { prompt = "q", response = "" } }, "INSTRUCTION_FINETUNE") end,
    "row 1: 'response' must be a non-empty string")
  T.raises(function() data.validate({ { text = 3 } }, "CONTINUED_PRETRAIN") end, "'text' must be a non-empty string")
  T.raises(function() data.validate({}, "SUMMARIZE") end, "unknown task type 'SUMMARIZE'")
end)

-- ids of a string under the byte-level test tokenizer.
local function bytes(s)
  local ids = {}
  for i = 1, #s do ids[i] = s:byte(i) end
  return ids
end

T.test("tokenize masks prompts and trains on answers", function()
  local examples, report = data.tokenize({ { prompt = "2+2?", response = "4" } }, D.tokenizer,
    { task_type = "INSTRUCTION_FINETUNE" })
  local ex = examples[1]
  -- <START>user\n2+2?<END>\n<START>assistant\n4<END>\n
  T.eq(#ex.ids, 1 + 5 + 4 + 1 + 1 + 1 + 10 + 1 + 1 + 1)
  local trained = {}
  for i, label in ipairs(ex.labels) do
    if label ~= -100 then
      T.eq(label, ex.ids[i])
      trained[#trained + 1] = label
    end
  end
  T.eq(table.concat(trained, ","), "52,259", "the answer '4' and the end of its turn")
  T.eq(report.trained_tokens, 2)
  T.eq(report.tokens, #ex.ids)
end)

T.test("tokenize: continued pretraining trains on every token and ends with eos", function()
  local examples = data.tokenize({ { text = "abc" } }, D.tokenizer, { task_type = "CONTINUED_PRETRAIN" })
  T.eq(table.concat(examples[1].ids, ","), "256,97,98,99,257")
  T.eq(table.concat(examples[1].labels, ","), "256,97,98,99,257")
end)

T.test("tokenize truncates or drops long examples and counts them", function()
  local rows = { { text = "short" }, { text = string.rep("x", 50) } }
  local examples, report = data.tokenize(rows, D.tokenizer, { task_type = "CONTINUED_PRETRAIN", context_length = 10 })
  T.eq(#examples, 2)
  T.eq(#examples[2].ids, 10)
  T.eq(report.truncated, 1)
  examples, report = data.tokenize(rows, D.tokenizer,
    { task_type = "CONTINUED_PRETRAIN", context_length = 10, overflow = "drop" })
  T.eq(#examples, 1)
  T.eq(report.reasons["longer than context_length"], 1)
  T.eq(report.bad[1].message, "52 tokens > 10")
  -- A conversation cut before its answer has nothing left to train.
  local chat = { { messages = { { role = "user", content = string.rep("q", 40) }, { role = "assistant", content = "a" } } } }
  examples, report = data.tokenize(chat, D.tokenizer, { task_type = "CHAT_COMPLETION", context_length = 20 })
  T.eq(#examples, 0)
  T.eq(report.reasons["no trained tokens"], 1)
end)

-- With the real tokenizers (test files without an eos token).
local tokenizers = (os.getenv("MF_SOURCE_DIR") or ".") .. "/tests/reference/golden/tokenizers/"

T.test("tokenize with a real tokenizer follows its own special tokens", function()
  local tok = mf.tokenizer.load(tokenizers .. "llama3.json")
  local text = "Packing keeps batches full."
  local examples = data.tokenize({ { text = text } }, tok, { task_type = "CONTINUED_PRETRAIN" })
  T.eq(table.concat(examples[1].ids, ","), table.concat(tok:encode(text, { add_special = true }), ","))
  T.eq(examples[1].ids[1], tok.bos_id)
  T.eq(table.concat(examples[1].labels, ","), table.concat(examples[1].ids, ","))
end)

if pcall(require, "moonforge.chat") then
  T.test("tokenize with a real chat template trains on the answer only", function()
    local tok = mf.tokenizer.load(tokenizers .. "llama3.json")
    local rows = { { prompt = "Name a colour.", response = "Blue" } }
    local examples = data.tokenize(rows, tok, { task_type = "INSTRUCTION_FINETUNE", template = "chatml" })
    local trained = {}
    for i, label in ipairs(examples[1].labels) do
      if label ~= -100 then trained[#trained + 1] = examples[1].ids[i] end
    end
    T.truthy(tok:decode(trained):find("^Blue"), "trained tokens: " .. tok:decode(trained))
  end)
end

T.test("pack lays examples into rows with shifted, masked targets", function()
  local examples = {
    { ids = { 1, 2, 3 }, labels = { -100, 2, 3 } },
    { ids = { 4, 5, 6, 7 }, labels = { 4, 5, 6, 7 } },
    { ids = { 8 }, labels = { 8 } },
  }
  local ctx = D.ctx()
  local tokens, targets, report = data.pack(examples, { length = 4, pad_id = 9, ctx = ctx })
  T.eq(table.concat(tokens:shape(), ","), "3,4")
  T.eq(tokens:dtype(), "I32")
  local flat = function(t)
    local out = {}
    for _, row in ipairs(t:totable()) do out[#out + 1] = table.concat(row, " ") end
    return table.concat(out, " | ")
  end
  T.eq(flat(tokens), "1 2 3 9 | 4 5 6 7 | 8 9 9 9")
  T.eq(flat(targets), "2 3 -100 -100 | 5 6 7 -100 | -100 -100 -100 -100")
  T.eq(report.rows, 3)
  T.eq(ctx.tables[1].title, "pack")
  T.raises(function() data.pack(examples, { length = 3 }) end, "example 2 has 4 tokens, more than the row length 3")
end)

T.test("shuffle is a seeded permutation, split cuts it deterministically", function()
  local rows = {}
  for i = 1, 100 do rows[i] = i end
  local a, b, c = data.shuffle(rows, 7), data.shuffle(rows, 7), data.shuffle(rows, 8)
  T.eq(table.concat(a, ","), table.concat(b, ","))
  T.truthy(table.concat(a, ",") ~= table.concat(c, ","), "another seed, another order")
  T.eq(rows[1], 1, "the input is left alone")
  -- Pinned: the engine's counter-based stream for seed 7 must not drift.
  T.eq(table.concat({ a[1], a[2], a[3], a[100] }, ","), "98,18,67,82")
  local parts, report = data.split(rows, { train = 0.8, eval = 0.1, test = 0.1, seed = 3 })
  T.eq(#parts.train + #parts.eval + #parts.test, 100)
  T.eq(#parts.eval, 10)
  local seen = {}
  for _, part in pairs(parts) do for _, v in ipairs(part) do seen[v] = (seen[v] or 0) + 1 end end
  for i = 1, 100 do T.eq(seen[i], 1, "row " .. i .. " in exactly one part") end
  T.eq(report.sizes.test, 10)
  local again = data.split(rows, { train = 0.8, eval = 0.1, test = 0.1, seed = 3 })
  T.eq(table.concat(again.test, ","), table.concat(parts.test, ","))
  local odd = data.split({ 1, 2, 3 }, { train = 0.5, test = 0.5 })
  T.eq(#odd.train + #odd.test, 3)
  T.raises(function() data.split(rows, { train = 0.8, test = 0.1 }) end, "fractions add up to 0.9, not 1")
end)

T.test("dedup drops exact and normalized duplicates, keeping the first", function()
  local rows = {
    { text = "Hello, World!" }, { text = "hello   world" }, { text = "Hello, World!" },
    { text = "ÉTÉ À PARIS" }, { text = "été à Paris…" }, { text = "ПРИВЕТ мир" }, { text = "привет, МИР" },
    { text = "something else" },
  }
  local kept, report = data.dedup(rows, { field = "text" })
  T.eq(#kept, 4)
  T.eq(report.reasons["exact duplicate"], 1)
  T.eq(report.reasons["normalized duplicate"], 3)
  T.eq(report.bad[1].message, "duplicate of row 1")
  T.eq(#data.dedup(rows, { field = "text", normalize = false }), 7)
  T.eq(data.normalize_text("  Ça  VA? — Ñandú ŁÓDŹ  "), "ça va ñandú łódź")
  local chats = { { messages = { { role = "user", content = "a" } } }, { messages = { { role = "user", content = "a" } } } }
  T.eq(#data.dedup(chats, { field = "messages" }), 1, "tables compare as JSON")
end)

T.test("filter_length keeps items within bounds, by tokens or characters", function()
  local examples = { { ids = { 1 } }, { ids = { 1, 2, 3 } }, { ids = { 1, 2, 3, 4, 5, 6 } } }
  local kept, report = data.filter_length(examples, { min = 2, max = 5 })
  T.eq(#kept, 1)
  T.eq(report.reasons["too short"], 1)
  T.eq(report.reasons["too long"], 1)
  local rows = data.filter_length({ { text = "été" }, { text = "abcd" } }, { max = 3 })
  T.eq(#rows, 1, "characters, not bytes")
  T.eq(rows[1].text, "été")
end)

T.test("reports print into the cell output given a ctx", function()
  local ctx = D.ctx()
  data.dedup({ { text = "a" }, { text = "a" } }, { field = "text", ctx = ctx })
  T.eq(#ctx.tables, 2)
  T.eq(ctx.tables[1].title, "dedup")
  T.eq(ctx.tables[1].rows[2][2], 1)
  T.eq(ctx.tables[2].rows[1][2], "duplicate of row 1")
end)

return T.done()
