-- moonforge.finetune_checkpoint: checkpoints of mf.finetune that survive a
-- kill.
--
-- A run's checkpoints live in $MOONFORGE_CACHE/checkpoints/<key>/, where the
-- key hashes everything the training depends on (see moonforge.finetune),
-- so a resumed run finds them and a different run never does:
--   step-000050/weights.safetensors    the trained parameters (f32, their names)
--   step-000050/optimizer.safetensors  AdamW's step count and moments
--   step-000050/state.json             {step =, total_steps =, key =, history =}
--   latest                             the name of the newest complete checkpoint
-- A checkpoint is written under a temporary name and renamed into place,
-- then `latest` is replaced atomically, then older checkpoints are removed:
-- killed at any moment, the folder holds at least one complete checkpoint
-- (or none yet). Data position and random state need no storing: the data
-- order and every random draw are functions of the seed and the step.
local cache = require "moonforge.cache"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local tensor = require "moonforge.tensor"

local ffi, C = engine.ffi, engine.C

local M = {}

function M.folder(key)
  return cache.default_root() .. "/checkpoints/" .. key
end

local read_file = host.read_file

-- The newest complete checkpoint: its state table with `dir` set, or nil.
function M.latest(folder)
  local name = read_file(folder .. "/latest")
  local text = name and read_file(folder .. "/" .. name .. "/state.json")
  if not text then return nil end
  local state = json.decode(text)
  state.dir = folder .. "/" .. name
  return state
end

local function save_weights(model, names, path)
  local n = #names
  local cnames, tensors, keep = ffi.new("const char *[?]", n), ffi.new("const mf_tensor *[?]", n), {}
  for i, name in ipairs(names) do
    keep[i] = model:param(name)
    cnames[i - 1], tensors[i - 1] = name, keep[i].ptr
  end
  engine.check(C.mf_st_save(path, n, cnames, tensors, nil), 3)
end

-- Copies the saved weights into the model's parameters of the same names,
-- after checking that every one is present with its shape.
local function load_weights(model, names, path)
  local file = ffi.gc(engine.check_ptr(C.mf_st_open(path), 3), C.mf_st_close)
  local checked = {}
  for i, name in ipairs(names) do
    local saved = C.mf_st_get(file, name)
    if saved == nil then error(path .. ": no tensor '" .. name .. "' in the checkpoint", 3) end
    local param = model:param(name)
    if saved.dtype ~= C.MF_F32 or C.mf_tensor_nbytes(saved) ~= C.mf_tensor_nbytes(param.ptr) then
      error(string.format("%s: '%s' does not match the model's shape [%s]", path, name,
        table.concat(tensor.shape(param), ", ")), 3)
    end
    checked[i] = { param, saved }
  end
  for _, p in ipairs(checked) do ffi.copy(tensor.data(p[1]), p[2].data, C.mf_tensor_nbytes(p[2])) end
end

-- Writes the checkpoint of `state.step`: the parameters `names`, the
-- optimizer and the state table (plain values).
function M.save(folder, model, names, opt, state)
  local name = string.format("step-%06d", state.step)
  local final = folder .. "/" .. name
  local tmp = final .. ".tmp." .. host.getpid()
  cache.remove_tree(tmp)
  assert(host.mkdir_p(tmp))
  save_weights(model, names, tmp .. "/weights.safetensors")
  opt:save(tmp .. "/optimizer.safetensors")
  assert(host.write_atomic(tmp .. "/state.json", json.encode(state)))
  cache.remove_tree(final)
  assert(os.rename(tmp, final))
  assert(host.write_atomic(folder .. "/latest", name))
  for _, old in ipairs(host.listdir(folder) or {}) do
    if old:find("^step%-") and old ~= name then cache.remove_tree(folder .. "/" .. old) end
  end
end

-- Puts the checkpoint's weights and optimizer state back.
function M.restore(checkpoint, model, names, opt)
  load_weights(model, names, checkpoint.dir .. "/weights.safetensors")
  opt:load(checkpoint.dir .. "/optimizer.safetensors")
end

return M
