-- moonforge.model: Llama-family models (llama, mistral, qwen2, SmolLM) from
-- Lua. Parameters and activations stay in C memory; these calls each do a
-- whole pass (forward, loss, backward, a generation).
--
--   local model = mf.model.new({ model_type = "llama", vocab_size = 256, ..., seed = 1 })
--   local model = mf.model.load("path/to/folder")    -- config.json + safetensors
--   local loss = model:loss(tokens, targets)          -- targets already shifted
--   model:backward()
--
-- tokens and targets are tables of rows ({{1, 2, 3}, {4, 5, 6}}) or int32
-- tensors [B, T] (a flat table or 1-D tensor is one row). A model is a cell
-- result like any other: the cache stores it as config.json + safetensors.
local ffi = require "ffi"
local engine = require "moonforge.engine"
local json = require "moonforge.json"
local host = require "moonforge.host"
local tensor = require "moonforge.tensor"
local cache = require "moonforge.cache"

local C = engine.C
local check, check_ptr = engine.check, engine.check_ptr

local M = {}
local Model = {}
Model.__index = Model

local function wrap(ptr)
  return setmetatable({ ptr = ffi.gc(ptr, C.mf_model_free) }, Model)
end

local function parse_config(text)
  local cfg = ffi.new("mf_model_config")
  check(C.mf_config_parse(text, cfg), 3)
  return cfg
end

-- mf.model.new(cfg): a randomly initialised model. cfg holds config.json
-- keys (model_type required) and optionally seed (default 0).
function M.new(cfg)
  assert(type(cfg) == "table", "mf.model.new(cfg): cfg must be a table of config.json keys")
  local keys = {}
  for k, v in pairs(cfg) do
    if k ~= "seed" then keys[k] = v end
  end
  return wrap(check_ptr(C.mf_model_new(parse_config(json.encode(keys)), cfg.seed or 0), 2))
end

-- mf.model.load(path [, opts]): a folder with config.json and
-- model.safetensors (or sharded), the path of its config.json, or a .gguf
-- file. For GGUF, opts.keep_quantized (default true) keeps Q8_0/Q4_0/Q4_1
-- weights in their blocks for inference; false dequantizes them for training.
-- A bundle (*.mfb) gives its model with its adapter (see moonforge.bundle).
function M.load(path, opts)
  local bundle = require "moonforge.bundle"
  if bundle.is_bundle(path) then return bundle.load_model(path, opts) end
  if opts and opts.keep_quantized ~= nil then
    return wrap(check_ptr(C.mf_model_load_gguf(path, opts.keep_quantized and 1 or 0), 2))
  end
  return wrap(check_ptr(C.mf_model_load(path), 2))
end

-- An int32 [B, T] buffer of ids from an int32 tensor or a table of rows.
-- The caller keeps x alive while C uses the buffer.
local function ids_of(x, what)
  if tensor.is_tensor(x) then
    local shape = tensor.shape(x)
    if tensor.dtype(x) ~= "I32" or #shape < 1 or #shape > 2 then
      error(string.format("%s: expected an I32 tensor [B, T], got %s [%s]", what, tensor.dtype(x),
        table.concat(shape, ", ")), 3)
    end
    return ffi.cast("int32_t *", tensor.data(x)), #shape == 2 and shape[1] or 1, shape[#shape]
  end
  if type(x) ~= "table" then error(what .. ": expected a table of rows or an I32 tensor", 3) end
  local rows = type(x[1]) == "table" and x or { x }
  local B, T = #rows, #rows[1]
  if B == 0 or T == 0 then error(what .. ": empty", 3) end
  local buf = ffi.new("int32_t[?]", B * T)
  for b = 1, B do
    local row = rows[b]
    if #row ~= T then error(string.format("%s: row %d has %d ids, row 1 has %d", what, b, #row, T), 3) end
    for t = 1, T do
      local id = row[t]
      if type(id) ~= "number" or id % 1 ~= 0 then
        error(string.format("%s: [%d][%d] is not an integer id", what, b, t), 3)
      end
      buf[(b - 1) * T + t - 1] = id
    end
  end
  return buf, B, T
end

function Model:forward(tokens)
  local ids, B, T = ids_of(tokens, "forward: tokens")
  local owned = ffi.gc(check_ptr(C.mf_model_forward(self.ptr, ids, B, T), 2), C.mf_tensor_free)
  return tensor.borrow(owned, owned)
end

function Model:loss(tokens, targets)
  local ids, B, T = ids_of(tokens, "loss: tokens")
  local want, B2, T2 = ids_of(targets, "loss: targets")
  if B ~= B2 or T ~= T2 then
    error(string.format("loss: tokens are [%d, %d] but targets [%d, %d]", B, T, B2, T2), 2)
  end
  local out = ffi.new("double[1]")
  check(C.mf_model_loss(self.ptr, ids, want, B, T, out), 2)
  return out[0]
end

function Model:backward() check(C.mf_model_backward(self.ptr), 2) end
function Model:zero_grad() C.mf_model_zero_grad(self.ptr) end
-- Frees what training steps keep between calls (the activations of the
-- largest batch so far); for when training is over.
function Model:free_activations() C.mf_model_free_activations(self.ptr) end

function Model:param(name)
  return tensor.borrow(check_ptr(C.mf_model_param(self.ptr, name), 2), self)
end

function Model:grad(name)
  return tensor.borrow(check_ptr(C.mf_model_grad(self.ptr, name), 2), self)
end

function Model:params()
  local names = {}
  for i = 0, C.mf_model_param_count(self.ptr) - 1 do
    names[#names + 1] = ffi.string(C.mf_model_param_name(self.ptr, i))
  end
  return names
end

function Model:config()
  local text = check_ptr(C.mf_config_to_json(C.mf_model_get_config(self.ptr)), 2)
  local s = ffi.string(text)
  C.mf_free(text)
  return json.decode(s)
end

-- model:set_base_precision("bf16" | "q8_0" | "q4_0" | "q4_1" | "f32") holds
-- the layers' linear weights in that form (frees the previous one); they can
-- then be adapted with LoRA but not trained themselves.
function Model:set_base_precision(precision) check(C.mf_model_set_base_precision(self.ptr, precision), 2) end
function Model:base_precision() return ffi.string(C.mf_model_base_precision(self.ptr)) end
-- Bytes held for the parameters' values, in every form.
function Model:weight_bytes() return tonumber(C.mf_model_weight_bytes(self.ptr)) end

local gguf_types = { f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, bf16 = 30 }

-- model:save(path, {format = "gguf", dtype = "f16", tokenizer_from = "x.gguf"}):
-- one GGUF file (dtype f32, f16, bf16, q8_0, q4_0 or q4_1; default f16), with
-- the tokenizer.* entries of tokenizer_from when given.
local function save_gguf(self, path, opts)
  local dtype = opts.dtype or "f16"
  local t = gguf_types[dtype]
  if not t then
    error("save: unsupported GGUF dtype '" .. tostring(dtype) .. "' (f32, f16, bf16, q8_0, q4_0, q4_1)", 3)
  end
  local src = opts.tokenizer_from and ffi.gc(check_ptr(C.mf_gguf_open(opts.tokenizer_from), 3), C.mf_gguf_close)
  check(C.mf_model_save_gguf(self.ptr, path, t, src), 3)
end

-- model:save(dir [, {format = "safetensors"}]): config.json + model.safetensors.
function Model:save(dir, opts)
  local format = opts and opts.format or "safetensors"
  if format == "gguf" then return save_gguf(self, dir, opts) end
  if format ~= "safetensors" then error("save: unsupported format '" .. tostring(format) .. "'", 2) end
  local ok, err = host.mkdir_p(dir)
  if not ok then error("save: " .. tostring(err), 2) end
  check(C.mf_model_save(self.ptr, dir), 2)
end

-- Lua errors must not unwind through the engine's C frames, so on_token
-- runs under pcall and its error is raised once generation has returned.
local function run_generate(self, flat, offsets, nseq, o, out, counts, on_token)
  local failure
  local cb
  if on_token then
    cb = ffi.cast("mf_token_fn", function(_, seq, id)
      local ok, res = pcall(on_token, id, tonumber(seq) + 1)
      if not ok then failure = res end
      return (not ok or res == false) and 1 or 0
    end)
    o.on_token = cb
  end
  local rc = C.mf_model_generate_batch(self.ptr, flat, offsets, nseq, o, out, counts)
  if cb then cb:free() end
  if failure then error(failure, 0) end
  return rc
end
-- A callback must not be entered from compiled code.
jit.off(run_generate)

-- Generates from nseq prompts laid out as flat[offsets[s], offsets[s + 1])
-- and returns one list of new ids per prompt.
local function generate(self, flat, offsets, nseq, opts, level)
  local o = ffi.new("mf_generate_opts")
  o.max_tokens = opts.max_tokens or 16
  o.temperature = opts.temperature or 0
  o.top_k = opts.top_k or 0
  o.top_p = opts.top_p or 1
  o.repetition_penalty = opts.repetition_penalty or 1
  o.seed = opts.seed or 0
  o.ignore_eos = opts.ignore_eos and 1 or 0
  o.max_len = opts.max_len or 0
  o.max_batch = opts.batch_size or 0
  local stop = opts.stop or {}
  local stop_ids = ffi.new("int32_t[?]", #stop + 1)
  for i, id in ipairs(stop) do stop_ids[i - 1] = id end
  o.stop_ids, o.nstop = stop_ids, #stop
  local out = ffi.new("int32_t[?]", nseq * o.max_tokens + 1)
  local counts = ffi.new("int32_t[?]", nseq)
  check(run_generate(self, flat, offsets, nseq, o, out, counts, opts.on_token), level + 1)
  local results = {}
  for s = 0, nseq - 1 do
    local new = {}
    for i = 0, counts[s] - 1 do new[i + 1] = out[s * o.max_tokens + i] end
    results[s + 1] = new
  end
  return results
end

-- model:generate(ids, opts) -> list of new ids. opts: max_tokens (16),
-- temperature (0: greedy), top_k (0: all), top_p (1), repetition_penalty
-- (1: off), seed (0), stop (ids that end generation, kept in the output),
-- ignore_eos, max_len (KV cache length, default prompt + max_tokens),
-- on_token(id) (return false to stop).
function Model:generate(prompt, opts)
  local ids, B, T = ids_of(prompt, "generate: prompt")
  if B ~= 1 then error("generate: one prompt at a time (model:generate_batch takes several)", 2) end
  return generate(self, ids, ffi.new("int64_t[2]", 0, T), 1, opts or {}, 2)[1]
end

-- model:generate_batch(prompts, opts) -> one list of new ids per prompt.
-- prompts is a list of id lists of any lengths; opts as for generate, plus
-- batch_size (sequences decoded together, default 16), and on_token(id, i)
-- names the prompt. Sampling follows each prompt's own stream of (seed, i).
function Model:generate_batch(prompts, opts)
  if type(prompts) ~= "table" or #prompts == 0 then
    error("generate_batch: prompts must be a non-empty list of id lists", 2)
  end
  local offsets = ffi.new("int64_t[?]", #prompts + 1)
  for i, p in ipairs(prompts) do
    if type(p) ~= "table" or #p == 0 then error(string.format("generate_batch: prompt %d is not a non-empty list of ids", i), 2) end
    offsets[i] = offsets[i - 1] + #p
  end
  local flat = ffi.new("int32_t[?]", tonumber(offsets[#prompts]))
  for i, p in ipairs(prompts) do
    for t, id in ipairs(p) do
      if type(id) ~= "number" or id % 1 ~= 0 then
        error(string.format("generate_batch: prompt %d position %d is not an integer id", i, t), 2)
      end
      flat[offsets[i - 1] + t - 1] = id
    end
  end
  return generate(self, flat, offsets, #prompts, opts or {}, 2)
end

-- model:chat(tok, messages, opts) -> reply, info and model:chat_batch(tok,
-- conversations, opts) -> replies, infos: see moonforge.generate.
function Model:chat(tok, messages, opts)
  return require("moonforge.generate").chat(self, tok, messages, opts)
end

function Model:chat_batch(tok, conversations, opts)
  return require("moonforge.generate").chat_batch(self, tok, conversations, opts)
end

-- ---- LoRA ----
-- model:add_lora{ r = 8, alpha = 8, dropout = 0, targets = {"q_proj", "v_proj"} | "all-linear",
-- rslora = false, seed = 0 } adds PEFT-style adapters, freezes the base and
-- turns training mode on; returns the adapter parameter names.

local function lora_names(self)
  local names = {}
  for i = 0, C.mf_model_lora_count(self.ptr) - 1 do
    names[#names + 1] = ffi.string(C.mf_model_lora_name(self.ptr, i))
  end
  return names
end

function Model:add_lora(opts)
  opts = opts or {}
  local targets = opts.targets or { "q_proj", "v_proj" }
  if type(targets) == "string" then targets = { targets } end
  if type(targets) ~= "table" or #targets == 0 then
    error("add_lora: targets must be a list of module names or \"all-linear\"", 2)
  end
  local names = ffi.new("const char *[?]", #targets)
  for i, t in ipairs(targets) do names[i - 1] = tostring(t) end
  local o = ffi.new("mf_lora_opts")
  o.r = opts.r or 8
  o.alpha = opts.alpha or 8
  o.dropout = opts.dropout or 0
  o.rslora = opts.rslora and 1 or 0
  o.seed = opts.seed or 0
  o.targets, o.ntargets = names, #targets
  check(C.mf_model_add_lora(self.ptr, o), 2)
  return lora_names(self)
end

-- The adapter parameters (lora_A, lora_B per adapted weight, layer by layer).
function Model:lora_params() return lora_names(self) end

-- Every parameter that receives gradients: the base's unless frozen, then the adapters'.
function Model:trainable_params()
  local names = {}
  for _, name in ipairs(self:params()) do
    if C.mf_model_is_trainable(self.ptr, name) == 1 then names[#names + 1] = name end
  end
  for _, name in ipairs(lora_names(self)) do names[#names + 1] = name end
  return names
end

-- The base is frozen by add_lora already; this is for reading code that says so.
function Model:freeze_base()
  if C.mf_model_lora_count(self.ptr) == 0 then error("freeze_base: add LoRA adapters first (add_lora)", 2) end
end

-- Training mode: adapter dropout on (true) or off (false).
function Model:set_train(on) C.mf_model_set_train(self.ptr, on and 1 or 0) end

function Model:merge_lora() check(C.mf_model_merge_lora(self.ptr), 2) end
function Model:unmerge_lora() check(C.mf_model_unmerge_lora(self.ptr), 2) end

-- model:save_adapter(dir, {format = "peft", base_model = "name"}) writes PEFT's
-- adapter_model.safetensors + adapter_config.json into dir;
-- model:save_adapter(path, {format = "gguf"}) one llama.cpp LoRA file.
function Model:save_adapter(path, opts)
  opts = opts or {}
  local format = opts.format or "peft"
  if format == "gguf" then
    check(C.mf_model_save_adapter_gguf(self.ptr, path), 2)
  elseif format == "peft" then
    local ok, err = host.mkdir_p(path)
    if not ok then error("save_adapter: " .. tostring(err), 2) end
    check(C.mf_model_save_adapter(self.ptr, path, opts.base_model), 2)
  else
    error("save_adapter: unsupported format '" .. tostring(format) .. "' (peft or gguf)", 2)
  end
end

-- A PEFT adapter folder or a GGUF LoRA file (*.gguf); returns the adapter names.
function Model:load_adapter(path)
  check(C.mf_model_load_adapter(self.ptr, path), 2)
  return lora_names(self)
end

-- The cache protocol (see moonforge.cache).
function Model.__mf_cache_save(model, dir)
  model:save(dir)
  return { kind = "model", module = "moonforge.model" }
end

function M.cache_load(_, dir) return M.load(dir) end
cache.register_loader("model", M.cache_load)

function M.is_model(v) return getmetatable(v) == Model end

return M
