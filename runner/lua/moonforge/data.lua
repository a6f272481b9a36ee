-- moonforge.data (mf.data): datasets from files to packed training rows.
--
--   local rows = mf.data.read_jsonl("train.jsonl")            -- also read_csv, read_text_folder
--   rows = mf.data.validate(rows, "CHAT_COMPLETION")
--   rows = mf.data.dedup(rows, { field = "messages" })
--   local parts = mf.data.split(rows, { train = 0.8, eval = 0.1, test = 0.1, seed = 1 })
--   local examples = mf.data.tokenize(parts.train, tok, { task_type = "CHAT_COMPLETION", context_length = 512 })
--   local tokens, targets = mf.data.pack(mf.data.shuffle(examples, 1), { length = 512 })
--
-- Every step returns its result and a report {step =, kept =, dropped =,
-- reasons = {why = count}, bad = {{where =, message =}}}; given {ctx = ctx}
-- it also prints the report into the cell's output. Steps that can meet a
-- bad row (readers, validate) raise an error naming its file and line unless
-- {strict = false}, which lists it in report.bad instead.
--
-- Task types are those of the hosted fine-tuning APIs:
--   INSTRUCTION_FINETUNE  rows {prompt =, response =}
--   CHAT_COMPLETION       rows {messages = {{role =, content =}, ...}}: roles
--                         system (first only), user, assistant; at least one
--                         assistant turn and an assistant turn last
--   CONTINUED_PRETRAIN    rows {text =}: the tokenizer's own special tokens
--                         around the text (add_special), then its eos if it
--                         has one; every token trained
-- Examples are {ids =, labels =}: labels are the ids, with -100 on tokens
-- that are not trained (prompts, system and user turns), not shifted.
local engine = require "moonforge.engine"
local json = require "moonforge.json"
local new_rng = require("moonforge.ctx").rng
local read = require "moonforge.data_read"
local shard = require "moonforge.data_shard"
local tensor = require "moonforge.tensor"

local ffi, C = engine.ffi, engine.C

local M = {
  INSTRUCTION_FINETUNE = "INSTRUCTION_FINETUNE",
  CHAT_COMPLETION = "CHAT_COMPLETION",
  CONTINUED_PRETRAIN = "CONTINUED_PRETRAIN",
  read_jsonl = read.read_jsonl,
  read_csv = read.read_csv,
  read_text_folder = read.read_text_folder,
  where = read.where,
  write_shard = shard.write_shard,
  open_shard = shard.open_shard,
}

local IGNORE = -100

------------------------------------------------------------------------
-- Validation
------------------------------------------------------------------------

local function nonempty_string(v) return type(v) == "string" and v:find("%S") ~= nil end

local ROLES = { system = true, user = true, assistant = true }

-- nil when msgs is a valid conversation, else what is wrong with it.
local function conversation_problem(msgs)
  if type(msgs) ~= "table" or #msgs == 0 then return "'messages' must be a non-empty list" end
  local assistant = false
  for i, m in ipairs(msgs) do
    local at = "messages[" .. i .. "]"
    if type(m) ~= "table" then return at .. " is not an object" end
    if not ROLES[m.role] then
      return string.format("%s: unknown role '%s' (system, user, assistant)", at, tostring(m.role))
    end
    if m.role == "system" and i > 1 then return at .. ": a system message may only come first" end
    if not nonempty_string(m.content) then return at .. ": 'content' must be a non-empty string" end
    assistant = assistant or m.role == "assistant"
  end
  if not assistant then return "no assistant message to train on" end
  if msgs[#msgs].role ~= "assistant" then return "the last message must be the assistant's" end
end

-- Per task type: nil for a valid row, else what is wrong with it.
local problems = {
  INSTRUCTION_FINETUNE = function(row)
    if not nonempty_string(row.prompt) then return "'prompt' must be a non-empty string" end
    if not nonempty_string(row.response) then return "'response' must be a non-empty string" end
  end,
  CHAT_COMPLETION = function(row) return conversation_problem(row.messages) end,
  CONTINUED_PRETRAIN = function(row)
    if not nonempty_string(row.text) then return "'text' must be a non-empty string" end
  end,
}

local function task_problems(task_type, level)
  local p = problems[task_type]
  if not p then
    error("unknown task type '" .. tostring(task_type)
      .. "' (INSTRUCTION_FINETUNE, CHAT_COMPLETION, CONTINUED_PRETRAIN)", level + 1)
  end
  return p
end

function M.validate(rows, task_type, opts)
  local problem = task_problems(task_type, 2)
  local strict = not (opts and opts.strict == false)
  local kept, report = {}, read.report("validate " .. task_type)
  for i, row in ipairs(rows) do
    local why = type(row) ~= "table" and "not an object" or problem(row)
    if why then
      read.drop(report, "invalid " .. task_type, read.where(row, i), why, strict)
    else
      kept[#kept + 1] = row
      report.kept = report.kept + 1
    end
  end
  return kept, read.show(report, opts)
end

------------------------------------------------------------------------
-- Tokenization
------------------------------------------------------------------------

-- ids and the 0/1 train mask of one row.
local encoders = {
  INSTRUCTION_FINETUNE = function(row, tok, template)
    return tok:chat({ { role = "user", content = row.prompt }, { role = "assistant", content = row.response } },
      { template = template })
  end,
  CHAT_COMPLETION = function(row, tok, template)
    return tok:chat(row.messages, { template = template })
  end,
  CONTINUED_PRETRAIN = function(row, tok)
    local ids = tok:encode(row.text, { add_special = true })
    if tok.eos_id and ids[#ids] ~= tok.eos_id then ids[#ids + 1] = tok.eos_id end
    local mask = {}
    for i = 1, #ids do mask[i] = 1 end
    return ids, mask
  end,
}

-- An example {ids, labels} of at most limit tokens, the trained-token count,
-- and whether it was cut.
local function example(ids, mask, limit)
  local n = math.min(#ids, limit)
  local kept, labels, trained = {}, {}, 0
  for i = 1, n do
    kept[i] = ids[i]
    if mask[i] == 1 then
      labels[i] = ids[i]
      trained = trained + 1
    else
      labels[i] = IGNORE
    end
  end
  return { ids = kept, labels = labels }, trained, n < #ids
end

-- opts: task_type (required), context_length (no limit when absent),
-- template (for the tokenizer's chat), overflow = "truncate" (default: keep
-- the first context_length tokens) or "drop".
function M.tokenize(rows, tok, opts)
  opts = opts or {}
  local task_type = opts.task_type
  task_problems(task_type, 2)
  local overflow = opts.overflow or "truncate"
  if overflow ~= "truncate" and overflow ~= "drop" then
    error("tokenize: overflow must be 'truncate' or 'drop', not " .. tostring(overflow), 2)
  end
  rows = M.validate(rows, task_type)
  local encode, limit = encoders[task_type], opts.context_length or math.huge
  local examples, report = {}, read.report("tokenize " .. task_type)
  report.tokens, report.trained_tokens, report.truncated = 0, 0, 0
  for i, row in ipairs(rows) do
    local ids, mask = encode(row, tok, opts.template)
    local where = read.where(row, i)
    if #ids > limit and overflow == "drop" then
      read.drop(report, "longer than context_length", where, string.format("%d tokens > %d", #ids, limit))
    else
      local ex, trained, cut = example(ids, mask, limit)
      if trained == 0 then
        read.drop(report, "no trained tokens", where, cut and "nothing left to train after truncation"
          or "no token to train on")
      else
        examples[#examples + 1] = ex
        report.kept = report.kept + 1
        report.tokens = report.tokens + #ex.ids
        report.trained_tokens = report.trained_tokens + trained
        if cut then report.truncated = report.truncated + 1 end
      end
    end
  end
  return examples, read.show(report, opts)
end

------------------------------------------------------------------------
-- Packing
------------------------------------------------------------------------

-- Examples laid out flat for C: ids, labels, offsets and the count.
local function flatten(examples)
  local total = 0
  for _, ex in ipairs(examples) do total = total + #ex.ids end
  local ids, labels = ffi.new("int32_t[?]", math.max(total, 1)), ffi.new("int32_t[?]", math.max(total, 1))
  local offsets = ffi.new("int64_t[?]", #examples + 1)
  local at = 0
  for e, ex in ipairs(examples) do
    for i = 1, #ex.ids do
      ids[at], labels[at] = ex.ids[i], ex.labels[i]
      at = at + 1
    end
    offsets[e] = at
  end
  return ids, labels, offsets, #examples
end

-- Packs examples into rows of opts.length tokens (see engine/packing.c: no
-- example is split, targets are shifted within each example and -100 on
-- padding, masked labels and each example's last token). Examples in a row
-- attend to each other: the usual packing trade of a little cross-example
-- context for far less padding. Returns tokens, targets (I32 [rows, length]).
function M.pack(examples, opts)
  local length, pad_id = opts and opts.length, opts and opts.pad_id or 0
  if type(length) ~= "number" or length % 1 ~= 0 or length < 1 then
    error("pack: opts.length must be a positive integer", 2)
  end
  local ids, labels, offsets, n = flatten(examples)
  local rows = tonumber(engine.check(C.mf_pack_rows(ids, labels, offsets, n, length, pad_id, nil, nil), 2))
  local tokens, targets = tensor.zeros({ rows, length }, "i32"), tensor.zeros({ rows, length }, "i32")
  engine.check(C.mf_pack_rows(ids, labels, offsets, n, length, pad_id, tensor.data(tokens), tensor.data(targets)), 2)
  local report = read.report("pack")
  report.kept, report.rows, report.tokens = n, rows, tonumber(offsets[n])
  return tokens, targets, read.show(report, opts)
end

------------------------------------------------------------------------
-- Shuffle and split
------------------------------------------------------------------------

-- A shuffled copy (Fisher-Yates over the engine's counter-based stream of
-- seed), the same for the same seed on any machine.
function M.shuffle(rows, seed, opts)
  local copy = {}
  for i, row in ipairs(rows) do copy[i] = row end
  new_rng(seed or 0, "mf.data.shuffle"):shuffle(copy)
  local report = read.report("shuffle")
  report.kept = #copy
  return copy, read.show(report, opts)
end

local SPLIT_ORDER = { train = 1, eval = 2, test = 3 }

local function split_names(fractions)
  local names, total = {}, 0
  for name, f in pairs(fractions) do
    if name ~= "seed" and name ~= "ctx" then
      if type(f) ~= "number" or f < 0 then error("split: fraction '" .. tostring(name) .. "' must be >= 0", 3) end
      names[#names + 1], total = name, total + f
    end
  end
  if math.abs(total - 1) > 1e-9 then error(string.format("split: fractions add up to %g, not 1", total), 3) end
  table.sort(names, function(a, b)
    local ra, rb = SPLIT_ORDER[a] or 4, SPLIT_ORDER[b] or 4
    if ra ~= rb then return ra < rb end
    return a < b
  end)
  return names
end

-- Deterministic parts: the rows shuffled by seed and cut at rounded
-- cumulative fractions (train, eval, test first, then other names in
-- alphabetical order), so the part sizes always add up to #rows.
function M.split(rows, opts)
  opts = opts or { train = 0.8, eval = 0.1, test = 0.1 }
  local names = split_names(opts)
  local shuffled = M.shuffle(rows, opts.seed or 0)
  local parts, report = {}, read.report("split")
  report.sizes = {}
  local done, cumulative = 0, 0
  for _, name in ipairs(names) do
    cumulative = cumulative + opts[name]
    local stop = math.floor(#shuffled * cumulative + 0.5)
    local part = {}
    for i = done + 1, stop do part[#part + 1] = shuffled[i] end
    parts[name], done = part, stop
    report.sizes[name] = #part
  end
  report.kept = #shuffled
  return parts, read.show(report, opts)
end

------------------------------------------------------------------------
-- Deduplication and length filtering
------------------------------------------------------------------------

-- Lower case for the letters of Latin-1, Latin Extended-A, Greek and
-- Cyrillic: enough to make "ÉTÉ" and "été" one key. Unicode's full case
-- folding is not needed for duplicates.
local function lower_codepoint(c)
  if (c >= 0xC0 and c <= 0xDE and c ~= 0xD7) or (c >= 0x391 and c <= 0x3AB and c ~= 0x3A2)
      or (c >= 0x410 and c <= 0x42F) then
    return c + 0x20
  end
  if c >= 0x400 and c <= 0x40F then return c + 0x50 end
  if c == 0x178 then return 0xFF end
  -- Latin Extended-A pairs capital and small as even/odd, except in
  -- 0x139..0x148 and 0x179..0x17E where the capital is odd.
  if c >= 0x100 and c <= 0x17F and c ~= 0x130 and c ~= 0x138 and c ~= 0x149 then
    local odd_capital = (c >= 0x139 and c <= 0x148) or (c >= 0x179 and c <= 0x17E)
    if (c % 2 == 1) == odd_capital then return c + 1 end
  end
  return c
end

-- Punctuation and symbols outside ASCII: Latin-1's, general punctuation
-- (dashes, quotes, ellipsis), CJK punctuation.
local function is_punctuation(c)
  return (c >= 0xA1 and c <= 0xBF) or c == 0xD7 or c == 0xF7 or (c >= 0x2010 and c <= 0x205E)
    or (c >= 0x3001 and c <= 0x303F)
end

local function is_space(c)
  return c == 0xA0 or (c >= 0x2000 and c <= 0x200B) or c == 0x202F or c == 0x205F or c == 0x3000
end

local function utf8_char(c)
  if c < 0x80 then return string.char(c) end
  if c < 0x800 then return string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64) end
  return string.char(0xE0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
end

-- The normalized form of one UTF-8 character (memoized: texts reuse few).
local normalized_char = setmetatable({}, { __index = function(t, ch)
  local b1, b2, b3 = ch:byte(1, 3)
  local c
  if #ch == 2 then
    c = (b1 - 0xC0) * 64 + (b2 - 0x80)
  elseif #ch == 3 then
    c = (b1 - 0xE0) * 4096 + (b2 - 0x80) * 64 + (b3 - 0x80)
  end
  local out = ch
  if c then out = is_punctuation(c) and "" or is_space(c) and " " or utf8_char(lower_codepoint(c)) end
  t[ch] = out
  return out
end })

-- Case-folded, punctuation stripped, whitespace collapsed.
function M.normalize_text(s)
  s = s:lower():gsub("%p", ""):gsub("[\194-\239][\128-\191]+", normalized_char)
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

local function field_text(row, field)
  local v = row
  if field then v = row[field] end
  if type(v) == "string" then return v end
  return json.encode(v)
end

-- Keeps the first of rows whose field (the whole row when absent; tables
-- as JSON) is the same exactly or, with normalize (default), once
-- normalized. Keys are SHA-256 digests, so memory stays small.
function M.dedup(rows, opts)
  opts = opts or {}
  local normalize = opts.normalize ~= false
  local exact, near = {}, {}
  local kept, report = {}, read.report("dedup")
  for i, row in ipairs(rows) do
    local text = field_text(row, opts.field)
    local key = engine.sha256(text)
    local norm_key = normalize and engine.sha256(M.normalize_text(text))
    local first = exact[key] or (norm_key and near[norm_key])
    if first then
      read.drop(report, exact[key] and "exact duplicate" or "normalized duplicate", read.where(row, i),
        "duplicate of " .. first)
    else
      exact[key] = read.where(row, i)
      if norm_key then near[norm_key] = exact[key] end
      kept[#kept + 1] = row
      report.kept = report.kept + 1
    end
  end
  return kept, read.show(report, opts)
end

-- The length of an item: tokens of an example, characters of a row's field.
local function item_length(item, field)
  if item.ids then return #item.ids end
  local text = item[field]
  if type(text) ~= "string" then error("filter_length: the row has no string '" .. field .. "'", 3) end
  return select(2, text:gsub("[^\128-\191]", ""))
end

-- Keeps items whose length lies in [opts.min, opts.max]: examples by token
-- count, rows by the characters of opts.field (default "text").
function M.filter_length(items, opts)
  opts = opts or {}
  local lo, hi, field = opts.min or 0, opts.max or math.huge, opts.field or "text"
  local kept, report = {}, read.report("filter_length")
  for i, item in ipairs(items) do
    local n = item_length(item, field)
    if n < lo or n > hi then
      read.drop(report, n < lo and "too short" or "too long", read.where(item, i),
        string.format("length %d outside %s..%s", n, lo, hi))
    else
      kept[#kept + 1] = item
      report.kept = report.kept + 1
    end
  end
  return kept, read.show(report, opts)
end

return M
