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

-- mf.model.load(path): a folder with config.json and model.safetensors (or
-- sharded), or the path of its config.json.
function M.load(path)
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

-- model:save(dir [, {format = "safetensors"}]): config.json + model.safetensors.
function Model:save(dir, opts)
  local format = opts and opts.format or "safetensors"
  if format ~= "safetensors" then error("save: unsupported format '" .. tostring(format) .. "'", 2) end
  local ok, err = host.mkdir_p(dir)
  if not ok then error("save: " .. tostring(err), 2) end
  check(C.mf_model_save(self.ptr, dir), 2)
end

-- Lua errors must not unwind through the engine's C frames, so on_token
-- runs under pcall and its error is raised once generation has returned.
local function run_generate(self, ids, n, o, out, on_token)
  local failure
  local cb
  if on_token then
    cb = ffi.cast("mf_token_fn", function(_, id)
      local ok, res = pcall(on_token, id)
      if not ok then failure = res end
      return (not ok or res == false) and 1 or 0
    end)
    o.on_token = cb
  end
  local count = C.mf_model_generate(self.ptr, ids, n, o, out)
  if cb then cb:free() end
  if failure then error(failure, 0) end
  return count
end
-- A callback must not be entered from compiled code.
jit.off(run_generate)

-- model:generate(ids, opts) -> list of new ids. opts: max_tokens (16),
-- temperature (0: greedy), top_k (0: all), top_p (1), seed (0), stop (ids
-- that end generation, kept in the output), ignore_eos, max_len (KV cache
-- length, default prompt + max_tokens), on_token(id) (return false to stop).
function Model:generate(prompt, opts)
  opts = opts or {}
  local ids, B, T = ids_of(prompt, "generate: prompt")
  if B ~= 1 then error("generate: one prompt at a time", 2) end
  local o = ffi.new("mf_generate_opts")
  o.max_tokens = opts.max_tokens or 16
  o.temperature = opts.temperature or 0
  o.top_k = opts.top_k or 0
  o.top_p = opts.top_p or 1
  o.seed = opts.seed or 0
  o.ignore_eos = opts.ignore_eos and 1 or 0
  o.max_len = opts.max_len or 0
  local stop = opts.stop or {}
  local stop_ids = ffi.new("int32_t[?]", #stop + 1)
  for i, id in ipairs(stop) do stop_ids[i - 1] = id end
  o.stop_ids, o.nstop = stop_ids, #stop
  local out = ffi.new("int32_t[?]", o.max_tokens + 1)
  local count = run_generate(self, ids, T, o, out, opts.on_token)
  check(count, 2)
  local new = {}
  for i = 0, count - 1 do new[i + 1] = out[i] end
  return new
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
