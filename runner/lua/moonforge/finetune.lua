-- moonforge.finetune (mf.finetune): fine-tuning in one call, shaped like the
-- hosted fine-tuning APIs.
--
--   local run = mf.finetune{
--     model = "model.gguf",               -- a .gguf, an HF folder, or a model object
--     train_data = "train.jsonl",         -- a path or a list of rows
--     eval_data = "eval.jsonl",
--     task_type = "CHAT_COMPLETION",      -- or INSTRUCTION_FINETUNE, CONTINUED_PRETRAIN
--     training_duration = "3ep",          -- epochs ("0.5ep") or tokens ("200000tok")
--     learning_rate = 1e-3, context_length = 256,
--     lora = { r = 8, alpha = 16, dropout = 0.05, targets = "all-linear",   -- false: full fine-tuning
--              base_precision = "f32" },  -- or "bf16", "q8_0", "q4_0", "q4_1": the frozen base's form
--     ctx = ctx, register_to = "tickets",
--   }
--   run.model, run.tokenizer, run.adapter_path (LoRA: a PEFT folder) or
--   run.model_path (full: an HF folder), run.history (a record {step, loss, lr,
--   grad_norm, tokens, tokens_per_s, eval_loss} per step), run.final_eval_loss,
--   run.steps, run.checkpoint_dir, run.resumed_from (the step it continued from)
--
-- Other options (defaults in DEFAULTS below): tokenizer (default: loaded
-- from the model's path), batch_size, grad_accum, warmup (a fraction of the
-- steps when below 1, else a step count), schedule ("cosine", "linear",
-- "constant"), max_grad_norm, weight_decay, eval_every and checkpoint_every
-- (steps; 0: only at the end), seed (default ctx.seed), template (the chat
-- template, default the model's), adapter (a PEFT adapter folder to start
-- from instead of fresh LoRA weights), resume (default true), on_step
-- (function(record) called after every step), checkpoint_dir (the folder
-- of this run's checkpoints instead of one named by the key).
--
-- Everything that can be wrong with the input is checked before the first
-- step: the options, the data (an empty or malformed file, a chat with an
-- unknown role or no assistant turn: errors name the file and line), a
-- context length beyond the model's, the adapter against the model.
--
-- Each step's loss, learning rate, gradient norm and tokens/s, and the eval
-- loss, go to the run's metrics (train/loss, train/lr, train/grad_norm,
-- train/tokens_per_s, eval/loss) and a progress bar; the end draws the loss
-- curves. Checkpoints (moonforge.finetune_checkpoint) are written every
-- checkpoint_every steps and at the end under a key that hashes the model,
-- tokenizer and data contents, the options and the calling cell's cache
-- key; a run started again with the same key continues from the newest one
-- and ends with the same bits as a run that was never stopped.
-- With LoRA the model object gains adapters; the base weights stay as they
-- were.
local cache = require "moonforge.cache"
local checkpoint = require "moonforge.finetune_checkpoint"
local data = require "moonforge.data"
local engine = require "moonforge.engine"
local fd = require "moonforge.finetune_data"
local host = require "moonforge.host"
local json = require "moonforge.json"
local model_mod = require "moonforge.model"
local optim = require "moonforge.optim"
local progress = require "moonforge.progress"
local tokenizer = require "moonforge.tokenizer"

local ffi, C = engine.ffi, engine.C

local M = {}

local DEFAULTS = {
  task_type = "CHAT_COMPLETION", training_duration = "1ep", context_length = 512, batch_size = 8,
  grad_accum = 1, warmup = 0.1, schedule = "cosine", max_grad_norm = 1.0, weight_decay = 0,
  eval_every = 0, checkpoint_every = 50, resume = true,
}
local LORA_DEFAULTS = { r = 8, alpha = 16, dropout = 0.05, targets = "all-linear", base_precision = "f32" }
local BASE_PRECISIONS = { f32 = true, bf16 = true, q8_0 = true, q4_0 = true, q4_1 = true }
-- Learning rates that suit each kind of run when none is given.
local DEFAULT_LR = { lora = 2e-4, full = 2e-5 }
local OPTIONS = { "model", "tokenizer", "train_data", "eval_data", "task_type", "training_duration",
  "learning_rate", "context_length", "lora", "adapter", "batch_size", "grad_accum", "warmup", "schedule",
  "max_grad_norm", "weight_decay", "eval_every", "checkpoint_every", "register_to", "seed", "ctx", "template",
  "on_step", "resume", "checkpoint_dir" }
local SCHEDULES = { cosine = true, linear = true, constant = true }

local function fail(message) error("finetune: " .. message, 0) end

------------------------------------------------------------------------
-- Options
------------------------------------------------------------------------

-- "3ep", "0.5ep" -> {epochs = x}; "200000tok" -> {tokens = n}.
function M.parse_duration(text)
  if type(text) == "string" then
    local epochs = tonumber(text:match("^%s*(%d*%.?%d+)%s*ep%s*$"))
    if epochs and epochs > 0 then return { epochs = epochs } end
    local tokens = tonumber(text:match("^%s*(%d+)%s*tok%s*$"))
    if tokens and tokens > 0 then return { tokens = tokens } end
  end
  fail("training_duration must be epochs like \"3ep\" or tokens like \"200000tok\", got " .. tostring(text))
end

local function is_finite(x) return type(x) == "number" and x == x and x > -math.huge and x < math.huge end

local function check_number(o, name, lo, integer)
  local v = o[name]
  if not is_finite(v) or v < lo or (integer and v % 1 ~= 0) then
    fail(string.format("%s must be %s >= %s, got %s", name, integer and "an integer" or "a number", lo,
      tostring(v)))
  end
end

local function check_lora(lora)
  if lora == false then return false end
  if lora ~= nil and type(lora) ~= "table" then fail("lora must be a table of LoRA settings or false") end
  local out = {}
  for k, v in pairs(LORA_DEFAULTS) do out[k] = v end
  for k, v in pairs(lora or {}) do
    if LORA_DEFAULTS[k] == nil then
      fail("lora: unknown setting '" .. tostring(k) .. "' (r, alpha, dropout, targets, base_precision)")
    end
    out[k] = v
  end
  if not (is_finite(out.r) and out.r >= 1 and out.r % 1 == 0) then fail("lora.r must be a positive integer") end
  if not (is_finite(out.alpha) and out.alpha > 0) then fail("lora.alpha must be a positive number") end
  if not (is_finite(out.dropout) and out.dropout >= 0 and out.dropout < 1) then
    fail("lora.dropout must lie in [0, 1)")
  end
  if out.targets ~= "all-linear" and type(out.targets) ~= "table" then
    fail("lora.targets must be \"all-linear\" or a list of module names")
  end
  if not BASE_PRECISIONS[out.base_precision] then
    fail("lora.base_precision must be f32, bf16, q8_0, q4_0 or q4_1, got " .. tostring(out.base_precision))
  end
  return out
end

-- The options with defaults filled in and every value checked.
local function resolve(opts)
  if type(opts) ~= "table" then fail("expects a table of options") end
  local known = {}
  for _, k in ipairs(OPTIONS) do known[k] = true end
  for k in pairs(opts) do
    if not known[k] then fail("unknown option '" .. tostring(k) .. "' (" .. table.concat(OPTIONS, ", ") .. ")") end
  end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  if o.model == nil then fail("model is required (a path or a model object)") end
  if o.train_data == nil then fail("train_data is required (a path or a list of rows)") end
  if not data[o.task_type] then
    fail("unknown task_type '" .. tostring(o.task_type) .. "' (CHAT_COMPLETION, INSTRUCTION_FINETUNE, CONTINUED_PRETRAIN)")
  end
  o.duration = M.parse_duration(o.training_duration)
  o.lora = check_lora(o.lora)
  if o.adapter ~= nil and (type(o.adapter) ~= "string" or not o.lora) then
    fail("adapter must be the path of a PEFT adapter folder, and needs LoRA (lora ~= false)")
  end
  o.learning_rate = o.learning_rate or (o.lora and DEFAULT_LR.lora or DEFAULT_LR.full)
  if not (is_finite(o.learning_rate) and o.learning_rate > 0) then
    fail("learning_rate must be a finite number > 0, got " .. tostring(o.learning_rate))
  end
  check_number(o, "context_length", 2, true)
  check_number(o, "batch_size", 1, true)
  check_number(o, "grad_accum", 1, true)
  check_number(o, "warmup", 0)
  check_number(o, "max_grad_norm", 0)
  check_number(o, "weight_decay", 0)
  check_number(o, "eval_every", 0, true)
  check_number(o, "checkpoint_every", 0, true)
  if not SCHEDULES[o.schedule] then fail("schedule must be cosine, linear or constant, got " .. tostring(o.schedule)) end
  o.seed = o.seed or (o.ctx and o.ctx.seed) or 0
  check_number(o, "seed", 0, true)
  if o.register_to ~= nil and type(o.register_to) ~= "string" then fail("register_to must be a name") end
  if o.checkpoint_dir ~= nil and type(o.checkpoint_dir) ~= "string" then fail("checkpoint_dir must be a path") end
  return o
end

------------------------------------------------------------------------
-- Schedule
------------------------------------------------------------------------

-- Warmup steps: a fraction of the run when below 1, else a count.
function M.warmup_steps(warmup, total)
  if warmup < 1 then return math.floor(warmup * total + 0.5) end
  return math.min(math.floor(warmup), total)
end

-- The learning rate of step k (1-based) of total: linear warmup to lr over
-- the warmup steps, then constant, linear or cosine decay that would reach
-- 0 one step after the last.
function M.lr_at(lr, schedule, warmup, k, total)
  if k <= warmup then return lr * k / warmup end
  if schedule == "constant" then return lr end
  local done = (k - warmup - 1) / math.max(1, total - warmup)
  if schedule == "linear" then return lr * (1 - done) end
  return lr * 0.5 * (1 + math.cos(math.pi * done))
end

------------------------------------------------------------------------
-- Model, tokenizer, adapter
------------------------------------------------------------------------

-- A base model from a path, in f32 for training.
local function load_base(path)
  if not host.kind(path) then fail("no model at " .. path) end
  if path:find("%.gguf$") then return model_mod.load(path, { keep_quantized = false }) end
  return model_mod.load(path)
end

local function load_model(o)
  if model_mod.is_model(o.model) then
    if not o.tokenizer then fail("a model object needs tokenizer = (a path or a tokenizer)") end
    return o.model
  end
  if type(o.model) ~= "string" then fail("model must be a path or a model object") end
  return load_base(o.model)
end

local function load_tokenizer(o)
  local t = o.tokenizer or o.model
  if type(t) == "string" then return tokenizer.load(t) end
  if type(t) == "table" and t.ptr and t.encode then return t end
  fail("tokenizer must be a path or a tokenizer")
end

local function check_model(o, model, tok)
  local cfg = model:config()
  if o.context_length > cfg.max_position_embeddings then
    fail(string.format("context_length %d exceeds the model's max_position_embeddings %d", o.context_length,
      cfg.max_position_embeddings))
  end
  if tok.vocab_size > cfg.vocab_size then
    fail(string.format("the tokenizer has %d tokens but the model's vocabulary only %d", tok.vocab_size,
      cfg.vocab_size))
  end
end

local function read_json(path)
  local text = host.read_file(path)
  local ok, v = pcall(json.decode, text or "")
  return text and ok and v or nil
end

-- Adds fresh LoRA weights, or the adapter o.adapter, and returns the names
-- of the parameters to train. An adapter made for another base is refused
-- before any training, naming the adapter and what does not match.
local function attach(o, model)
  if not o.lora then return model:params() end
  if o.adapter then
    if not read_json(o.adapter .. "/adapter_config.json") then
      fail("adapter " .. o.adapter .. ": no readable adapter_config.json")
    end
    local ok, err = pcall(model.load_adapter, model, o.adapter)
    if not ok then fail("adapter " .. o.adapter .. " does not fit this model: " .. tostring(err)) end
  else
    local l = o.lora
    model:add_lora{ r = l.r, alpha = l.alpha, dropout = l.dropout, targets = l.targets, seed = o.seed }
  end
  if o.lora.base_precision ~= "f32" then model:set_base_precision(o.lora.base_precision) end
  return model:trainable_params()
end

local function set_train(model, on)
  if model.set_train then model:set_train(on) end
end

------------------------------------------------------------------------
-- The checkpoint key
------------------------------------------------------------------------

-- SHA-256 of a file, or of a folder's files (names and contents).
local function path_digest(path)
  if host.kind(path) == "file" then return engine.sha256_file(path) end
  local names = host.listdir(path) or {}
  table.sort(names)
  local parts = {}
  for _, name in ipairs(names) do
    if host.kind(path .. "/" .. name) == "file" then
      parts[#parts + 1] = name .. "=" .. engine.sha256_file(path .. "/" .. name)
    end
  end
  return engine.sha256(table.concat(parts, "\n"))
end

-- SHA-256 over every parameter's bytes, without copying them into Lua.
local function params_digest(model)
  local hex, parts = ffi.new("char[65]"), {}
  for i, name in ipairs(model:params()) do
    local t = model:param(name)
    engine.check(C.mf_sha256_bytes(t.ptr.data, C.mf_tensor_nbytes(t.ptr), hex))
    parts[i] = name .. "=" .. ffi.string(hex, 64)
  end
  return engine.sha256(table.concat(parts, "\n"))
end

-- Text that equal values always give: table keys in sorted order, since
-- the order of pairs() differs between a table built and the same table
-- loaded from the cache.
local function canonical(v, out)
  if type(v) ~= "table" then
    out[#out + 1] = type(v) == "number" and string.format("%.17g", v) or string.format("%q", tostring(v))
    return
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) < type(b) end
    return a < b
  end)
  out[#out + 1] = "{"
  for _, k in ipairs(keys) do
    canonical(k, out)
    out[#out + 1] = "="
    canonical(v[k], out)
    out[#out + 1] = ","
  end
  out[#out + 1] = "}"
end

local function value_text(v)
  local out = {}
  canonical(v, out)
  return table.concat(out)
end

local function data_digest(source)
  if type(source) == "string" then return path_digest(source) end
  return engine.sha256(value_text(source))
end

-- Everything the trained weights depend on. checkpoint_every, register_to,
-- resume and on_step do not change them, so they are left out.
local function checkpoint_key(o, model, tok)
  local parts = { "moonforge-finetune-1", "cell=" .. (o.ctx and o.ctx.key or ""),
    "model=" .. (type(o.model) == "string" and path_digest(o.model) or params_digest(model)),
    "tokenizer=" .. (tok.path and path_digest(tok.path) or ""),
    "train=" .. data_digest(o.train_data), "eval=" .. (o.eval_data and data_digest(o.eval_data) or ""),
    "adapter=" .. (o.adapter and path_digest(o.adapter) or "") }
  for _, k in ipairs({ "task_type", "training_duration", "learning_rate", "context_length", "lora", "batch_size",
    "grad_accum", "warmup", "schedule", "max_grad_norm", "weight_decay", "eval_every", "seed", "template" }) do
    parts[#parts + 1] = k .. "=" .. value_text(o[k])
  end
  return engine.sha256(table.concat(parts, "\n"))
end

------------------------------------------------------------------------
-- Training
------------------------------------------------------------------------

local function emit_metrics(ctx, record)
  if not ctx then return end
  ctx:metric("train/loss", record.loss, record.step)
  ctx:metric("train/lr", record.lr, record.step)
  ctx:metric("train/grad_norm", record.grad_norm, record.step)
  ctx:metric("train/tokens_per_s", record.tokens_per_s, record.step, { timing = true })
  if record.eval_loss then ctx:metric("eval/loss", record.eval_loss, record.step) end
end

local function eval_loss(run)
  set_train(run.model, false)
  local loss = fd.mean_loss(run.model, run.eval, run.o.batch_size)
  set_train(run.model, true)
  return loss
end

-- One optimizer step over the micro-batches of plan step k.
local function train_step(run, k)
  local o, opt, step = run.o, run.opt, run.plan.steps[k]
  local started = host.clock()
  local lr = M.lr_at(o.learning_rate, o.schedule, run.warmup, k, #run.plan.steps)
  opt:set_lr(lr)
  opt:zero_grad()
  -- The step's gradient is that of the mean loss over all its counted
  -- targets, as one batch of all its rows would give: after micro-batch j
  -- the gradients hold (sum over i <= j of c_i g_i) / c_j, c_i counted
  -- targets and g_i the gradient of micro-batch i's mean loss.
  local sum, total, last = 0, 0, nil
  for _, mb in ipairs(step) do
    local tokens, targets, counted = fd.batch(run.plan.epochs[mb.epoch], mb.first, mb.count)
    if counted > 0 then
      sum = sum + run.model:loss(tokens, targets) * counted
      if last then opt:scale_grad(last / counted) end
      run.model:backward()
      total, last = total + counted, counted
    end
  end
  if total == 0 then error(string.format("finetune: step %d has no target to learn (every one is masked)", k), 0) end
  if last ~= total then opt:scale_grad(last / total) end
  local norm = opt:clip_grad_norm(o.max_grad_norm)
  opt:step()
  local record = { step = k, loss = sum / total, lr = lr, grad_norm = norm, tokens = run.plan.tokens[k] }
  record.tokens_per_s = record.tokens / math.max(host.clock() - started, 1e-9)
  return record
end

local function due(every, k, total) return k == total or (every > 0 and k % every == 0) end

local function loop(run)
  local o, total = run.o, #run.plan.steps
  local bar = o.ctx and o.ctx:progress(total, "finetune")
    or progress.new({ total = total, label = "finetune", stream = io.stderr })
  bar:update(run.state.step)
  for k = run.state.step + 1, total do
    local record = train_step(run, k)
    if run.eval and due(o.eval_every, k, total) then record.eval_loss = eval_loss(run) end
    run.state.history[k] = record
    run.state.step = k
    emit_metrics(o.ctx, record)
    if due(o.checkpoint_every, k, total) then
      checkpoint.save(run.folder, run.model, run.trainable, run.opt, run.state)
    end
    bar:update(k, string.format("loss %.4f  lr %.2e  %.0f tok/s%s", record.loss, record.lr, record.tokens_per_s,
      record.eval_loss and string.format("  eval %.4f", record.eval_loss) or ""))
    if o.on_step then o.on_step(record) end
  end
  bar:finish()
end

-- Continues from the newest checkpoint of this run (the same key), if any;
-- its steps' metrics are logged again so the run's record is whole.
local function resume(run)
  local latest = run.o.resume and checkpoint.latest(run.folder)
  if not latest or latest.key ~= run.key then return end
  checkpoint.restore(latest, run.model, run.trainable, run.opt)
  run.state = { step = latest.step, total_steps = latest.total_steps, key = run.key, history = latest.history }
  run.resumed_from = latest.step
  print(string.format("finetune: resuming from the checkpoint of step %d of %d (%s)", latest.step,
    latest.total_steps, latest.dir))
  for k = 1, latest.step do emit_metrics(run.o.ctx, latest.history[k]) end
end

local function plot_losses(ctx, history)
  local train, eval = { x = {}, y = {} }, { x = {}, y = {} }
  for _, r in ipairs(history) do
    train.x[#train.x + 1], train.y[#train.y + 1] = r.step, r.loss
    if r.eval_loss then eval.x[#eval.x + 1], eval.y[#eval.y + 1] = r.step, r.eval_loss end
  end
  local series = { { name = "train", x = train.x, y = train.y } }
  if #eval.x > 0 then series[2] = { name = "eval", x = eval.x, y = eval.y } end
  ctx:plot({ kind = "line", title = "fine-tuning loss", xlabel = "step", ylabel = "cross-entropy", series = series })
end

------------------------------------------------------------------------
-- The result
------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

-- A handle is a cell result like any other: its adapters, and its model
-- through the model's own cache protocol, or as the path of its base when
-- the run loaded it from one (a LoRA run leaves the base as it was); its
-- tokenizer is reloaded from its path.
function Handle.__mf_cache_save(h, dir)
  local descriptor = { kind = "finetune", module = "moonforge.finetune", tokenizer_path = h.tokenizer.path }
  local lora = #h.model:lora_params() > 0
  if lora then
    h.model:save_adapter(dir .. "/adapter")
    descriptor.cached_adapter = true
  end
  if lora and h.base_path then
    descriptor.base_path = h.base_path
  else
    assert(host.mkdir_p(dir .. "/model"))
    descriptor.model = getmetatable(h.model).__mf_cache_save(h.model, dir .. "/model")
  end
  for _, k in ipairs({ "adapter_path", "model_path", "history", "final_eval_loss", "steps", "checkpoint_dir" }) do
    descriptor[k] = h[k]
  end
  return descriptor
end

cache.register_loader("finetune", function(descriptor, dir)
  local h = {}
  for k, v in pairs(descriptor) do h[k] = v end
  h.kind, h.module, h.tokenizer_path, h.cached_adapter = nil, nil, nil, nil
  h.model = descriptor.base_path and load_base(descriptor.base_path) or cache.restore(descriptor.model, dir .. "/model")
  if descriptor.cached_adapter then h.model:load_adapter(dir .. "/adapter") end
  h.tokenizer = descriptor.tokenizer_path and tokenizer.load(descriptor.tokenizer_path)
  return setmetatable(h, Handle)
end)

local function final_files(run)
  set_train(run.model, false)
  if run.o.lora then
    local path = run.folder .. "/adapter"
    run.model:save_adapter(path, { format = "peft" })
    return { adapter_path = path }
  end
  local path = run.folder .. "/model"
  run.model:save(path)
  return { model_path = path }
end

local function register(run, handle)
  local registry = require "moonforge.registry"
  local o = run.o
  local entry = registry.register(o.register_to, {
    model = not o.lora and handle.model_path or nil, adapter = handle.adapter_path,
    base = type(o.model) == "string" and o.model or nil, tokenizer = handle.tokenizer.path,
    metrics = { final_eval_loss = handle.final_eval_loss, final_train_loss = handle.history[#handle.history].loss,
      steps = handle.steps },
  })
  print(string.format("finetune: registered %s v%d (%s)", entry.name, entry.version, entry.path))
end

------------------------------------------------------------------------
-- mf.finetune
------------------------------------------------------------------------

local function prepare(o)
  local model = load_model(o)
  local tok = load_tokenizer(o)
  check_model(o, model, tok)
  local function examples(source, what)
    local rows = fd.rows(source, o.task_type, what, o.ctx)
    return fd.examples(rows, tok, { task_type = o.task_type, context_length = o.context_length,
      template = o.template, what = what, ctx = o.ctx })
  end
  local pad_id = tok.pad_id or 0
  local run = { o = o, model = model, tokenizer = tok }
  run.plan = fd.plan(examples(o.train_data, "train_data"), { duration = o.duration, batch_size = o.batch_size,
    grad_accum = o.grad_accum, length = o.context_length, pad_id = pad_id, seed = o.seed })
  if o.eval_data then run.eval = fd.pack(examples(o.eval_data, "eval_data"), o.context_length, pad_id) end
  run.key = checkpoint_key(o, model, tok)
  run.folder = o.checkpoint_dir or checkpoint.folder(run.key)
  run.trainable = attach(o, model)
  run.warmup = M.warmup_steps(o.warmup, #run.plan.steps)
  run.opt = optim.adamw(model, { lr = o.learning_rate, weight_decay = o.weight_decay, params = run.trainable })
  run.state = { step = 0, total_steps = #run.plan.steps, key = run.key, history = {} }
  return run
end

local function finetune(_, opts)
  local o = resolve(opts)
  local run = prepare(o)
  print(string.format("finetune: %d steps of %d x %d rows of up to %d tokens, %s, %d trainable tensors", #run.plan.steps,
    o.batch_size, o.grad_accum, o.context_length,
    o.lora and string.format("LoRA r=%d, base in %s", o.lora.r, o.lora.base_precision) or "full fine-tuning",
    #run.trainable))
  resume(run)
  set_train(run.model, true)
  loop(run)
  run.model:free_activations()  -- the tuned model lives on; a step's activations need not
  local history = run.state.history
  local handle = setmetatable({ model = run.model, tokenizer = run.tokenizer, history = history,
    base_path = type(o.model) == "string" and o.model or nil,
    steps = #history, checkpoint_dir = run.folder, resumed_from = run.resumed_from }, Handle)
  for _, r in ipairs(history) do handle.final_eval_loss = r.eval_loss or handle.final_eval_loss end
  for k, v in pairs(final_files(run)) do handle[k] = v end
  if o.ctx then plot_losses(o.ctx, history) end
  if o.register_to then register(run, handle) end
  return handle
end

return setmetatable(M, { __call = finetune })
