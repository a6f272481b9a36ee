-- moonforge.finetune_data: the data side of mf.finetune (moonforge.finetune).
--
--   local rows = fd.rows("train.jsonl", "CHAT_COMPLETION", "train_data")
--   local examples = fd.examples(rows, tok, { task_type =, context_length =, ctx = })
--   local plan = fd.plan(examples, { duration =, batch_size =, grad_accum =, length =, seed = })
--   for _, mb in ipairs(plan.steps[k]) do model:loss(fd.batch(plan.epochs[mb.epoch], mb.first, mb.count)) end
--
-- Every epoch visits the examples in its own order, drawn from the
-- counter-based stream of (seed, epoch), and packs them into rows of
-- `length` tokens (mf.data.pack). Step k takes the next batch_size x
-- grad_accum rows of its epoch; the last step of an epoch takes what is
-- left. The whole plan is a function of the examples and the options, so a
-- resumed run finds its data position from the step number alone.
-- Batches drop the trailing columns that are padding in every row: those
-- positions carry no loss and, attention being causal, change nothing else.
local data = require "moonforge.data"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local new_rng = require("moonforge.ctx").rng
local tensor = require "moonforge.tensor"

local ffi = engine.ffi

local M = {}
local IGNORE = -100

local function read_text(path) return assert(host.read_file(path)) end

-- The rows of a dataset given as rows or as a path: a .jsonl or .csv file,
-- a .txt file (one row) or a folder of .txt files. Validated for the task
-- type: a bad row is an error naming its file and line.
function M.rows(source, task_type, what, ctx)
  local rows
  if type(source) == "table" then
    rows = source
  elseif type(source) == "string" then
    local kind = host.kind(source)
    if kind == "directory" then
      rows = data.read_text_folder(source)
    elseif kind ~= "file" then
      error(what .. ": no file or folder " .. source, 0)
    elseif source:find("%.jsonl$") then
      rows = data.read_jsonl(source)
    elseif source:find("%.csv$") then
      rows = data.read_csv(source)
    elseif source:find("%.txt$") then
      local text = read_text(source)
      if text == "" then error(source .. ": empty file", 0) end
      rows = { { text = text } }
    else
      error(what .. ": " .. source .. " is not .jsonl, .csv, .txt or a folder of .txt files", 0)
    end
  else
    error(what .. " must be a path or a list of rows", 0)
  end
  if #rows == 0 then error(what .. ": no rows" .. (type(source) == "string" and (" in " .. source) or ""), 0) end
  return (data.validate(rows, task_type, { ctx = ctx }))
end

-- Cuts one long pretraining example into pieces of at most `length` tokens.
local function chunks(ex, length, out)
  for first = 1, #ex.ids, length do
    local piece = { ids = {}, labels = {} }
    for i = first, math.min(first + length - 1, #ex.ids) do
      piece.ids[#piece.ids + 1] = ex.ids[i]
      piece.labels[#piece.labels + 1] = ex.labels[i]
    end
    -- A single token has nothing to predict.
    if #piece.ids > 1 then out[#out + 1] = piece end
  end
end

-- Tokenized examples. Chats and instructions longer than context_length
-- keep their beginning (counted in the report); pretraining text is cut into
-- consecutive pieces, so none of it is lost.
function M.examples(rows, tok, opts)
  local pretrain = opts.task_type == data.CONTINUED_PRETRAIN
  local examples = data.tokenize(rows, tok, { task_type = opts.task_type, template = opts.template,
    context_length = not pretrain and opts.context_length or nil, ctx = opts.ctx })
  if pretrain then
    local pieces = {}
    for _, ex in ipairs(examples) do chunks(ex, opts.context_length, pieces) end
    examples = pieces
  end
  if #examples == 0 then error(opts.what .. ": no example left to train on after tokenization", 0) end
  return examples
end

-- Packed rows, with each row's used length (up to its last counted target,
-- plus the token after it) and counted targets.
function M.pack(examples, length, pad_id)
  local tokens, targets = data.pack(examples, { length = length, pad_id = pad_id })
  local rows = tensor.shape(tokens)[1]
  local t = ffi.cast("int32_t *", tensor.data(targets))
  local used, counted = {}, {}
  for r = 1, rows do
    local base, last, c = (r - 1) * length, 0, 0
    for i = 0, length - 1 do
      if t[base + i] ~= IGNORE then
        last, c = i + 1, c + 1
      end
    end
    used[r], counted[r] = math.min(last + 1, length), c
  end
  return { tokens = tokens, targets = targets, rows = rows, length = length, used = used, counted = counted }
end

local function pack_epoch(examples, opts, epoch)
  local order = {}
  for i, ex in ipairs(examples) do order[i] = ex end
  new_rng(opts.seed, "finetune epoch " .. epoch):shuffle(order)
  return M.pack(order, opts.length, opts.pad_id)
end

-- The steps of one epoch: lists of micro-batches {epoch, first, count}.
local function epoch_steps(packed, epoch, opts)
  local steps, per_step = {}, opts.batch_size * opts.grad_accum
  for first = 1, packed.rows, per_step do
    local step = {}
    local stop = math.min(first + per_step, packed.rows + 1)
    for mb = first, stop - 1, opts.batch_size do
      step[#step + 1] = { epoch = epoch, first = mb, count = math.min(opts.batch_size, stop - mb) }
    end
    steps[#steps + 1] = step
  end
  return steps
end

local function step_tokens(plan, step)
  local n = 0
  for _, mb in ipairs(step) do
    local used = plan.epochs[mb.epoch].used
    for r = mb.first, mb.first + mb.count - 1 do n = n + used[r] end
  end
  return n
end

-- The plan of a run. opts: duration ({epochs = x} or {tokens = n}),
-- batch_size, grad_accum, length, pad_id, seed. Returns { epochs = {packed
-- rows of each epoch}, steps = {...}, tokens = {tokens fed by each step} }.
-- A fractional epoch count ends the last epoch early (its steps rounded up);
-- a token count ends at the first step that reaches it.
function M.plan(examples, opts)
  local plan = { epochs = {}, steps = {}, tokens = {} }
  local want, fed, epoch = opts.duration, 0, 0
  while true do
    epoch = epoch + 1
    if want.epochs and epoch > math.ceil(want.epochs) then break end
    plan.epochs[epoch] = pack_epoch(examples, opts, epoch)
    local steps = epoch_steps(plan.epochs[epoch], epoch, opts)
    local take = #steps
    if want.epochs and epoch > want.epochs then take = math.ceil((want.epochs - epoch + 1) * #steps) end
    for i = 1, take do
      local k = #plan.steps + 1
      plan.steps[k] = steps[i]
      plan.tokens[k] = step_tokens(plan, steps[i])
      fed = fed + plan.tokens[k]
      if want.tokens and fed >= want.tokens then return plan end
    end
  end
  return plan
end

-- Rows [first, first + count) of packed rows as I32 tensors, cut after the
-- longest used length among them; and their counted targets.
function M.batch(packed, first, count)
  local width, counted = 1, 0
  for r = first, first + count - 1 do
    width = math.max(width, packed.used[r])
    counted = counted + packed.counted[r]
  end
  local tokens, targets = tensor.zeros({ count, width }, "i32"), tensor.zeros({ count, width }, "i32")
  local L = packed.length
  for _, pair in ipairs({ { tokens, packed.tokens }, { targets, packed.targets } }) do
    local dst, src = ffi.cast("int32_t *", tensor.data(pair[1])), ffi.cast("int32_t *", tensor.data(pair[2]))
    for i = 0, count - 1 do ffi.copy(dst + i * width, src + (first - 1 + i) * L, width * 4) end
  end
  return tokens, targets, counted
end

-- Mean loss over every counted target of packed rows, batch losses weighted
-- by their counted targets.
function M.mean_loss(model, packed, batch_size)
  local sum, total = 0, 0
  for first = 1, packed.rows, batch_size do
    local tokens, targets, counted = M.batch(packed, first, math.min(batch_size, packed.rows - first + 1))
    if counted > 0 then
      sum = sum + model:loss(tokens, targets) * counted
      total = total + counted
    end
  end
  return sum / total
end

return M
