-- moonforge.tensor (mf.tensor): tensors that live in C memory, seen from Lua.
--
--   local t = mf.tensor.from({{1, 2, 3}, {4, 5, 6}})     -- F32 [2, 3]
--   local ids = mf.tensor.from({1, 2, 3}, "i32")
--   local z = mf.tensor.zeros({4, 8}, "bf16")
--   t:shape() --> {2, 3}; t:dtype() --> "F32"; t:get(2, 3) --> 6
--   t:set(1, 1, 0.5); t:totable(); t:to("f16"); t:save_npy("t.npy")
--   mf.tensor.load_npy("t.npy")
--
-- Dtypes are F32, F16, BF16, I32, I64 and U8 (given in either case).
-- Indices are 1-based and bounds-checked. Element access goes through C one
-- element at a time: fine for inspection and tests, not for bulk work, which
-- belongs in the engine.
--
-- A tensor is a table {ptr = mf_tensor*, owner = ...}. Tensors made here own
-- their memory (freed by the garbage collector); tensor.borrow(ptr, owner)
-- wraps memory owned by something else (a model's parameters) and keeps the
-- owner alive as long as the tensor is reachable. Other library modules pass
-- t.ptr (or t:data(), the element pointer) to C while holding t.
--
-- Every function is also a method: tensor.shape(t) is t:shape().
--
-- Cache protocol: a tensor stored as a cell result is written as
-- dir/tensor.npy and described by {kind = "tensor", file = "tensor.npy"};
-- BF16, which .npy cannot hold, is stored as F32 (exactly) and the
-- descriptor's dtype restores it. tensor.cache_load(descriptor, dir) reads
-- it back.
local engine = require "moonforge.engine"
local ffi = engine.ffi
local C = engine.C

local M = {}
local mt = { __index = M }

local dtype_ids = { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4, U8 = 5 }
-- Integer dtypes: [low, high) of the values they hold.
local int_range = { I32 = { -2 ^ 31, 2 ^ 31 }, I64 = { -2 ^ 63, 2 ^ 63 }, U8 = { 0, 256 } }

local function dtype_id(name, level)
  local id = type(name) == "string" and dtype_ids[name:upper()]
  if not id then
    error("unknown dtype '" .. tostring(name) .. "' (f32, f16, bf16, i32, i64, u8)", level + 1)
  end
  return id
end

local function wrap(ptr, owner)
  return setmetatable({ ptr = ptr, owner = owner }, mt)
end

local function owned(ptr)
  return wrap(ffi.gc(engine.check_ptr(ptr, 3), C.mf_tensor_free))
end

-- Element readers and writers by dtype; writers check the value fits.
local access = {
  F32 = { "float *", function(p, i) return p[i] end, function(p, i, v) p[i] = v end },
  F16 = { "uint16_t *", function(p, i) return C.mf_f16_to_f32(p[i]) end,
    function(p, i, v) p[i] = C.mf_f32_to_f16(v) end },
  BF16 = { "uint16_t *", function(p, i) return C.mf_bf16_to_f32(p[i]) end,
    function(p, i, v) p[i] = C.mf_f32_to_bf16(v) end },
  I32 = { "int32_t *", function(p, i) return p[i] end, function(p, i, v) p[i] = v end },
  I64 = { "int64_t *", function(p, i) return tonumber(p[i]) end, function(p, i, v) p[i] = v end },
  U8 = { "uint8_t *", function(p, i) return p[i] end, function(p, i, v) p[i] = v end },
}

local function check_value(dtype, v, where)
  if type(v) ~= "number" then error(where .. " is not a number", 4) end
  local range = int_range[dtype]
  if range and (v % 1 ~= 0 or v < range[1] or v >= range[2]) then
    error(string.format("%s (%s) is not a valid %s value", where, tostring(v), dtype), 4)
  end
end

-- An accessor bound to t: get(i), set(i, v) over 0-based flat indices.
local function elements(t)
  local dtype = M.dtype(t)
  local a = access[dtype]
  local p = ffi.cast(a[1], t.ptr.data)
  return function(i) return a[2](p, i) end,
    function(i, v, where) check_value(dtype, v, where); a[3](p, i, v) end
end

------------------------------------------------------------------------
-- Making tensors
------------------------------------------------------------------------

local function new(shape, dtype, level)
  local dims = ffi.new("int64_t[4]")
  if #shape > 4 then error(#shape .. " dimensions; at most 4 are supported", level + 1) end
  for d = 1, #shape do
    local n = shape[d]
    if type(n) ~= "number" or n % 1 ~= 0 or n < 0 then
      error("shape[" .. d .. "] must be a non-negative integer", level + 1)
    end
    dims[d - 1] = n
  end
  return owned(C.mf_tensor_new(dtype_id(dtype or "f32", level + 1), #shape, dims))
end

function M.zeros(shape, dtype)
  if type(shape) ~= "table" then error("zeros: shape must be a table of sizes", 2) end
  return new(shape, dtype, 2)
end

-- The shape of a nested table, read down its first elements.
local function nested_shape(value)
  local shape, v = {}, value
  while type(v) == "table" do
    shape[#shape + 1] = #v
    v = v[1]
  end
  return shape
end

-- Copies nested tables into flat elements, refusing ragged ones.
local function fill(set, value, shape, depth, offset, path)
  if depth > #shape then
    set(offset, value, path == "" and "the value" or "element " .. path)
    return offset + 1
  end
  if type(value) ~= "table" or #value ~= shape[depth] then
    error(string.format("ragged table: %s has %s, expected %d elements", path == "" and "the table" or path,
      type(value) == "table" and (#value .. " elements") or ("a " .. type(value)), shape[depth]), depth + 2)
  end
  for i = 1, shape[depth] do offset = fill(set, value[i], shape, depth + 1, offset, path .. "[" .. i .. "]") end
  return offset
end

-- tensor.from(value, dtype): a number or nested tables of numbers; the
-- nesting gives the shape. F16 and BF16 round from the values as F32 would.
function M.from(value, dtype)
  dtype_id(dtype or "f32", 2)
  local name = (dtype or "f32"):upper()
  local staged = (name == "F16" or name == "BF16") and "F32" or name
  local shape = nested_shape(value)
  local t = new(shape, staged, 2)
  local _, set = elements(t)
  fill(set, value, shape, 1, 0, "")
  return staged == name and t or M.to(t, name)
end

function M.load_npy(path)
  return owned(C.mf_tensor_load_npy(path))
end

-- A tensor viewing memory that `owner` keeps alive (a model, a file).
function M.borrow(ptr, owner)
  return wrap(ptr, owner)
end

function M.is_tensor(v)
  return getmetatable(v) == mt
end

------------------------------------------------------------------------
-- Reading tensors
------------------------------------------------------------------------

function M.dtype(t) return ffi.string(C.mf_dtype_name(t.ptr.dtype)) end

function M.shape(t)
  local shape = {}
  for d = 1, t.ptr.ndim do shape[d] = tonumber(t.ptr.shape[d - 1]) end
  return shape
end

function M.numel(t) return tonumber(C.mf_tensor_numel(t.ptr)) end

-- The raw element pointer (void *), for other library modules.
function M.data(t) return t.ptr.data end

-- Flat 0-based offset of 1-based indices, bounds-checked.
local function offset_of(t, indices, n, what)
  local shape = M.shape(t)
  if n ~= #shape then
    error(string.format("%s: %d indices for a %d-dimensional tensor", what, n, #shape), 3)
  end
  local offset = 0
  for d = 1, n do
    local i = indices[d]
    if type(i) ~= "number" or i % 1 ~= 0 or i < 1 or i > shape[d] then
      error(string.format("%s: index %d is %s, outside 1..%d", what, d, tostring(i), shape[d]), 3)
    end
    offset = offset * shape[d] + (i - 1)
  end
  return offset
end

function M.get(t, ...)
  local get = elements(t)
  return get(offset_of(t, { ... }, select("#", ...), "get"))
end

-- t:set(i, j, ..., value)
function M.set(t, ...)
  local args, n = { ... }, select("#", ...)
  local _, set = elements(t)
  set(offset_of(t, args, n - 1, "set"), args[n], "set: value")
end

-- Nested tables of numbers (a number for a 0-dimensional tensor).
function M.totable(t)
  local get = elements(t)
  local shape = M.shape(t)
  local offset = 0
  local function build(depth)
    if depth > #shape then
      offset = offset + 1
      return get(offset - 1)
    end
    local out = {}
    for i = 1, shape[depth] do out[i] = build(depth + 1) end
    return out
  end
  return build(1)
end

-- A new tensor of another dtype (among F32/F16/BF16, or I32/I64).
function M.to(t, dtype)
  return owned(C.mf_tensor_convert(t.ptr, dtype_id(dtype, 2)))
end

function M.save_npy(t, path)
  engine.check(C.mf_tensor_save_npy(t.ptr, path), 2)
end

local SHOWN = 6

function mt.__tostring(t)
  local get = elements(t)
  local n = M.numel(t)
  local values = {}
  for i = 1, math.min(n, SHOWN) do values[i] = string.format("%.6g", get(i - 1)) end
  if n > SHOWN then values[#values + 1] = "..." end
  return string.format("tensor %s [%s] {%s}", M.dtype(t), table.concat(M.shape(t), ", "), table.concat(values, ", "))
end

------------------------------------------------------------------------
-- Cache protocol
------------------------------------------------------------------------

function mt.__mf_cache_save(t, dir)
  local dtype = M.dtype(t)
  local stored = dtype == "BF16" and M.to(t, "f32") or t
  M.save_npy(stored, dir .. "/tensor.npy")
  return { kind = "tensor", file = "tensor.npy", dtype = dtype, module = "moonforge.tensor" }
end

function M.cache_load(descriptor, dir)
  local t = M.load_npy(dir .. "/" .. descriptor.file)
  if descriptor.dtype and descriptor.dtype ~= M.dtype(t) then t = M.to(t, descriptor.dtype) end
  return t
end

require("moonforge.cache").register_loader("tensor", M.cache_load)

return M
