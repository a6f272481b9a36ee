-- moonforge.tensor: building, reading and converting tensors from Lua,
-- .npy files (against numpy-written goldens) and the cache protocol.
local T = require "testing"
local mf = require "moonforge"
local tensor = require "moonforge.tensor"
local json = require "moonforge.json"
local host = require "moonforge.host"

local root = os.getenv("MF_SOURCE_DIR") or "."
local golden = root .. "/tests/reference/golden/formats/"

local read = T.read

T.test("from nested tables gives shape, dtype and values", function()
  local t = mf.tensor.from({ { 1, 2, 3 }, { 4, 5, 6 } })
  T.eq(t:dtype(), "F32")
  T.eq(table.concat(t:shape(), ","), "2,3")
  T.eq(t:numel(), 6)
  T.eq(t:get(2, 3), 6)
  T.eq(t:get(1, 2), 2)
  t:set(2, 1, 0.5)
  T.eq(t:totable()[2][1], 0.5)
  T.eq(tensor.shape(t)[1], 2, "module functions are methods too")
  T.eq(tostring(t), "tensor F32 [2, 3] {1, 2, 3, 0.5, 5, 6}")
  T.eq(tostring(mf.tensor.zeros({ 10 })), "tensor F32 [10] {0, 0, 0, 0, 0, 0, ...}")
end)

T.test("scalars, empty tensors and integer dtypes", function()
  local s = mf.tensor.from(2.5)
  T.eq(#s:shape(), 0)
  T.eq(s:get(), 2.5)
  T.eq(s:totable(), 2.5)
  T.eq(mf.tensor.from({}):numel(), 0)
  local ids = mf.tensor.from({ { 1, 2 }, { 3, 2 ^ 31 - 1 } }, "i32")
  T.eq(ids:dtype(), "I32")
  T.eq(ids:get(2, 2), 2 ^ 31 - 1)
  local big = mf.tensor.from({ 2 ^ 53, -2 ^ 62 }, "I64")
  T.eq(big:get(1), 2 ^ 53)
  T.eq(big:get(2), -2 ^ 62)
  T.eq(mf.tensor.from({ 0, 255 }, "u8"):get(2), 255)
end)

T.test("bad values, ragged tables and bounds are errors", function()
  T.raises(function() mf.tensor.from({ { 1, 2 }, { 3 } }) end, "ragged table: [2] has 1 elements, expected 2")
  T.raises(function() mf.tensor.from({ { 1, 2 }, 3 }) end, "[2] has a number")
  T.raises(function() mf.tensor.from({ 1.5 }, "i32") end, "element [1] (1.5) is not a valid I32 value")
  T.raises(function() mf.tensor.from({ 2 ^ 31 }, "i32") end, "not a valid I32 value")
  T.raises(function() mf.tensor.from({ 256 }, "u8") end, "not a valid U8 value")
  T.raises(function() mf.tensor.from({ "x" }) end, "element [1] is not a number")
  T.raises(function() mf.tensor.from({ 1 }, "f64") end, "unknown dtype 'f64'")
  T.raises(function() mf.tensor.from({ { { { { 1 } } } } }) end, "at most 4")
  T.raises(function() mf.tensor.zeros({ 2, -1 }) end, "shape[2] must be a non-negative integer")
  local t = mf.tensor.zeros({ 2, 3 })
  T.raises(function() t:get(3, 1) end, "get: index 1 is 3, outside 1..2")
  T.raises(function() t:get(1, 0) end, "index 2 is 0, outside 1..3")
  T.raises(function() t:get(1) end, "get: 1 indices for a 2-dimensional tensor")
  T.raises(function() t:set(1, 4, 1.0) end, "set: index 2 is 4")
  T.raises(function() t:set(1, 1, "a") end, "set: value is not a number")
end)

T.test("half-precision dtypes round to nearest even", function()
  local h = mf.tensor.from({ 1, 65519, 65520, 2 ^ -25, 3 * 2 ^ -25, 1 / 0 }, "f16")
  T.eq(h:dtype(), "F16")
  local v = h:totable()
  T.eq(v[1], 1); T.eq(v[2], 65504); T.eq(v[3], 1 / 0); T.eq(v[4], 0); T.eq(v[5], 2 ^ -23); T.eq(v[6], 1 / 0)
  local b = mf.tensor.from({ 1 + 2 ^ -8, 1 + 3 * 2 ^ -8 }, "bf16")
  T.eq(b:get(1), 1, "tie to even rounds down")
  T.eq(b:get(2), 1 + 2 ^ -6, "tie to even rounds up")
  local nan = mf.tensor.from({ 0 / 0 }, "bf16"):get(1)
  T.truthy(nan ~= nan, "NaN stays NaN")
  T.eq(b:to("f32"):get(2), 1 + 2 ^ -6)
  T.raises(function() b:to("i32") end, "cannot convert BF16 to I32")
end)

T.test("npy goldens load exactly and save byte-identical", function()
  local expected = json.decode(read(golden .. "expected.json")).npy
  local dir = T.tmpdir("tensor")
  for _, name in ipairs({ "f4.npy", "f2.npy", "i8.npy", "i4.npy", "u1.npy", "scalar.npy", "v2.npy" }) do
    local t = mf.tensor.load_npy(golden .. name)
    local want = expected[name]
    T.eq(t:dtype(), want.dtype, name)
    T.eq(table.concat(t:shape(), ","), table.concat(want.shape, ","), name)
    if name ~= "v2.npy" then
      t:save_npy(dir .. "/" .. name)
      T.eq(read(dir .. "/" .. name), read(golden .. name), name .. " bytes")
    end
  end
  local f4 = mf.tensor.load_npy(golden .. "f4.npy")
  T.eq(f4:get(2, 3), tonumber(require("ffi").new("float", 5 / 7)))
  T.eq(mf.tensor.load_npy(golden .. "i8.npy"):get(2, 1), 2 ^ 50)
  T.raises(function() mf.tensor.load_npy(dir .. "/missing.npy") end, "missing.npy")
  T.raises(function() mf.tensor.zeros({ 2 }, "bf16"):save_npy(dir .. "/b.npy") end, "BF16 has no .npy element type")
  require("moonforge.cache").remove_tree(dir)
end)

T.test("borrowed tensors keep their owner alive", function()
  local owner = mf.tensor.from({ 1, 2, 3 })
  local view = tensor.borrow(owner.ptr, owner)
  owner = nil
  collectgarbage(); collectgarbage()
  T.eq(view:get(3), 3)
  T.truthy(tensor.is_tensor(view))
  T.truthy(view:data() ~= nil)
end)

T.test("cache protocol stores and restores tensors", function()
  local cache = require "moonforge.cache"
  local dir = T.tmpdir("tensor-cache")
  local cases = { f32 = { { 1, 2 }, { 3, 4.5 } }, bf16 = { { 1, 2 }, { 3, 4.5 } }, i64 = { { 1, 2 }, { 3, 2 ^ 40 } } }
  for dtype, values in pairs(cases) do
    local t = mf.tensor.from(values, dtype)
    local descriptor = getmetatable(t).__mf_cache_save(t, dir)
    T.eq(descriptor.kind, "tensor")
    T.eq(descriptor.file, "tensor.npy")
    T.eq(host.kind(dir .. "/tensor.npy"), "file")
    local back = cache.deserialize(cache.serialize({ result = t }, dir), dir).result
    T.eq(back:dtype(), t:dtype())
    T.eq(json.encode(back:totable()), json.encode(t:totable()))
  end
  cache.remove_tree(dir)
end)

return T.done()
