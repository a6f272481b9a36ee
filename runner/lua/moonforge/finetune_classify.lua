-- moonforge.finetune_classify: the steps that classification fine-tuning
-- recipes share (recipes/finetune_tutorial.lua, finetune_debian_sections.lua).
-- Rows are CHAT_COMPLETION rows {messages = {system, user, assistant}}
-- whose assistant answer is the label.
--
--   local splits = fc.read_splits(ctx, "datasets/x/chat", { train = 320, eval = 40, test = 100 })
--   splits.train, splits.eval, splits.test, splits.labels  -- labels: the distinct answers, sorted
--   local shots = fc.shots(splits.train, splits.labels, 3) -- solved examples for a few-shot prompt
--   local scores = fc.evaluate(ctx, model, tok, splits.test, { labels =, prefix = "base", shots =, max_tokens = })
--   fc.compare(ctx, { { name = "base", metrics = base }, { name = "tuned", metrics = tuned } })
--   fc.publish(ctx, run, { name = "x", base = "base.gguf", metrics =, card = })  -- merge, save, register
local mf = require "moonforge"

local M = {}

-- The question of a row cut to at most max_chars bytes, on a character
-- boundary.
local function shortened(row, max_chars)
  local m = row.messages
  local q = m[#m - 1].content
  if #q <= max_chars then return row end
  local cut = q:sub(1, max_chars):gsub("[\192-\255][\128-\191]*$", "")
  local copy = { messages = {} }
  for i, msg in ipairs(m) do copy.messages[i] = msg end
  copy.messages[#m - 1] = { role = m[#m - 1].role, content = cut }
  return copy
end

-- The first counts[split] rows of each split's <dir>/<split>.jsonl (all of
-- a split whose count is 0), validated as chats, and `labels`: every answer
-- found in the three files. With counts.max_chars, questions are cut to that
-- many bytes so the answer fits the context.
function M.read_splits(ctx, dir, counts)
  local splits, shown, all = {}, {}, {}
  for _, name in ipairs({ "train", "eval", "test" }) do
    local rows = mf.data.validate(mf.data.read_jsonl(dir .. "/" .. name .. ".jsonl"), "CHAT_COMPLETION")
    for _, row in ipairs(rows) do all[#all + 1] = row end
    local n = counts[name] == 0 and #rows or math.min(counts[name], #rows)
    local part = {}
    for i = 1, n do part[i] = counts.max_chars and shortened(rows[i], counts.max_chars) or rows[i] end
    splits[name] = part
    shown[#shown + 1] = { name, n, #rows }
  end
  ctx:table({ title = "rows used", columns = { "split", "rows", "of" }, rows = shown })
  splits.labels = M.labels(all)
  return splits
end

local function answer(row) return row.messages[#row.messages].content end

-- The distinct answers of rows, sorted.
function M.labels(rows)
  local seen, labels = {}, {}
  for _, row in ipairs(rows) do
    local label = answer(row)
    if not seen[label] then
      seen[label] = true
      labels[#labels + 1] = label
    end
  end
  table.sort(labels)
  return labels
end

-- The user and assistant messages of the shortest example of each of the
-- first n labels that rows hold: short shots keep the prompt cheap.
function M.shots(rows, labels, n)
  local best = {}
  for _, row in ipairs(rows) do
    local label, question = answer(row), row.messages[#row.messages - 1].content
    if not best[label] or #question < #best[label].messages[#row.messages - 1].content then best[label] = row end
  end
  local messages = {}
  for _, label in ipairs(labels) do
    if #messages == 2 * n then break end
    local m = best[label] and best[label].messages
    if m then
      messages[#messages + 1] = m[#m - 1]
      messages[#messages + 1] = m[#m]
    end
  end
  return messages
end

-- The conversation of a row up to its question, with the shots after the
-- system message.
local function prompt(row, shots)
  local m = row.messages
  local conv = { m[1] }
  for _, s in ipairs(shots or {}) do conv[#conv + 1] = s end
  conv[#conv + 1] = m[#m - 1]
  return conv
end

-- Greedy answers to every row, parsed into labels and scored; the report,
-- the confusion matrix and a few answers go into the cell's output, and
-- <prefix>/accuracy, <prefix>/macro_f1 and <prefix>/invalid into its metrics.
function M.evaluate(ctx, model, tok, rows, opts)
  local conversations, truths = {}, {}
  for i, row in ipairs(rows) do conversations[i], truths[i] = prompt(row, opts.shots), answer(row) end
  local replies = model:chat_batch(tok, conversations, { max_tokens = opts.max_tokens,
    progress = ctx:progress(#rows, opts.prefix .. " answers") })
  local result = mf.eval.classify(replies, truths, opts.labels)
  mf.eval.report(result, { ctx = ctx, prefix = opts.prefix })
  local examples = {}
  for i = 1, math.min(3, #rows) do
    examples[i] = { rows[i].messages[#rows[i].messages - 1].content, truths[i], replies[i] }
  end
  ctx:table({ title = opts.prefix .. ": first answers", columns = { "question", "truth", "reply" }, rows = examples })
  return { accuracy = result.accuracy, macro_f1 = result.macro_f1 }
end

-- The comparison table and bar plot of accuracy and macro-F1.
function M.compare(ctx, results)
  local tbl, plot = mf.eval.compare(results, { metrics = { "accuracy", "macro_f1" }, title = "test split" })
  ctx:table(tbl)
  ctx:plot(plot)
  local first, last = results[1].metrics, results[#results].metrics
  print(string.format("accuracy %.1f%% -> %.1f%%, macro-F1 %.3f -> %.3f", 100 * first.accuracy, 100 * last.accuracy,
    first.macro_f1, last.macro_f1))
end

-- Saves the adapter, merges it into the weights, writes the model as one
-- f16 GGUF file with the base's tokenizer (llama.cpp, Ollama) and registers
-- both under opts.name with opts.metrics and opts.card. Returns the entry.
function M.publish(ctx, run, opts)
  local dir = ctx:tmpdir()
  run.model:save_adapter(dir .. "/adapter")
  run.model:merge_lora()
  local path = dir .. "/" .. opts.name .. ".f16.gguf"
  run.model:save(path, { format = "gguf", dtype = "f16", tokenizer_from = opts.base })
  local entry = mf.registry.register(opts.name, { model = path, adapter = dir .. "/adapter", base = opts.base,
    metrics = opts.metrics, card = opts.card })
  print(string.format("registered %s v%d in %s", entry.name, entry.version, entry.path))
  return entry
end

return M
