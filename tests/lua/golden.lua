-- Reading golden safetensors files written by tests/reference/*.py:
--   local G = require "golden"
--   local ref = G.open(path)          -- ref(key) -> mf_tensor* (asserts it exists)
--   G.floats(t) -> const float *, n   G.rows(t) -> Lua rows of an int32 [B, T] tensor
--   G.relerr(a, b, n) -> max|a - b| / max|b| over n floats
local ffi = require "ffi"
local engine = require "moonforge.engine"

local C = engine.C
local G = {}

function G.open(path)
  local st = ffi.gc(engine.check_ptr(C.mf_st_open(path)), C.mf_st_close)
  return function(key)
    local t = C.mf_st_get(st, key)
    assert(t ~= nil, "golden tensor " .. key)
    return t, st
  end
end

function G.floats(t) return ffi.cast("const float *", t.data), tonumber(C.mf_tensor_numel(t)) end

function G.rows(t)
  local B, n = tonumber(t.shape[0]), tonumber(t.shape[1])
  local p = ffi.cast("const int32_t *", t.data)
  local rows = {}
  for b = 1, B do
    rows[b] = {}
    for i = 1, n do rows[b][i] = p[(b - 1) * n + i - 1] end
  end
  return rows
end

function G.relerr(a, b, n)
  local diff, scale = 0, 0
  for i = 0, n - 1 do
    diff = math.max(diff, math.abs(a[i] - b[i]))
    scale = math.max(scale, math.abs(b[i]))
  end
  return diff / scale
end

return G
