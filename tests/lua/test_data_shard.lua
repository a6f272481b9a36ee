-- mf.data token shards from Lua: writing id lists, examples and tensors,
-- reading slices, documents and deterministic batches, refusing damage.
local T = require "testing"
local D = require "data_testing"
local mf = require "moonforge"

local data = mf.data
local dir = T.tmpdir("data-shard")

local read = T.read

T.test("id lists round-trip with document boundaries", function()
  local path = dir .. "/docs.shard"
  local report = data.write_shard(path, { { 5, 6, 7 }, { ids = { 8 } }, { 9, 10 } })
  T.eq(report.documents, 3)
  T.eq(report.tokens, 6)
  T.eq(report.dtype, "u16", "small ids take two bytes")
  local shard = data.open_shard(path)
  T.eq(shard:len(), 6)
  T.eq(shard:docs(), 3)
  T.eq(table.concat(shard:slice(2, 4):totable(), ","), "6,7,8,9")
  T.eq(table.concat(shard:doc(3):totable(), ","), "9,10")
  T.eq(shard:doc(2):dtype(), "I32")
  T.raises(function() shard:slice(5, 3) end, "tokens 4..7 are outside the shard's 6")
  T.raises(function() shard:doc(4) end, "document 4 is outside 1..3")
end)

T.test("large ids and tensors make int32 shards", function()
  local path = dir .. "/big.shard"
  T.eq(data.write_shard(path, { { 70000, 1 } }).dtype, "i32")
  T.eq(table.concat(data.open_shard(path):slice(1, 2):totable(), ","), "70000,1")
  local rows = mf.tensor.from({ { 1, 2 }, { 3, 4 } }, "i32")
  data.write_shard(path, rows)
  local shard = data.open_shard(path)
  T.eq(shard:docs(), 2)
  T.eq(shard:dtype(), "u16")
  T.raises(function() data.write_shard(path, { { 70000 } }, { dtype = "u16" }) end, "id 70000 does not fit a uint16 shard")
  T.raises(function() data.write_shard(path, { { 1, -2 } }) end, "document 1, token 2: -2 is not a token id")
  T.eq(data.open_shard(path):docs(), 2, "a failed write keeps the old file")
end)

T.test("sample_batch depends only on seed and step", function()
  local ids = {}
  for i = 1, 500 do ids[i] = i end
  local path = dir .. "/stream.shard"
  data.write_shard(path, { ids })
  local shard = data.open_shard(path)
  local a, at = shard:sample_batch(3, 8, 11, 4)
  shard:sample_batch(3, 8, 11, 9)
  local b = shard:sample_batch(3, 8, 11, 4)
  T.eq(table.concat(a:shape(), ","), "3,8")
  T.eq(table.concat(a:totable()[2], ","), table.concat(b:totable()[2], ","))
  for r = 1, 3 do
    for t = 1, 8 do T.eq(at:get(r, t), a:get(r, t) + 1, "targets follow tokens") end
  end
  T.raises(function() shard:sample_batch(1, 500, 0, 0) end, "500 tokens cannot fill a window of 500")
end)

T.test("damaged shards are refused with a clear message", function()
  local path = dir .. "/docs.shard"
  data.write_shard(path, { { 5, 6, 7 }, { 8 } })
  local good = read(path)
  D.write(dir, "cut.shard", good:sub(1, #good - 3))
  T.raises(function() data.open_shard(dir .. "/cut.shard") end, "cut.shard: truncated")
  D.write(dir, "flip.shard", good:sub(1, 64) .. "\1" .. good:sub(66))
  T.raises(function() data.open_shard(dir .. "/flip.shard") end, "flip.shard: checksum mismatch")
  T.eq(data.open_shard(dir .. "/flip.shard", { verify = false }):len(), 4)
  D.write(dir, "text.shard", "not a shard at all, but long enough to hold a header of sixty-four bytes")
  T.raises(function() data.open_shard(dir .. "/text.shard") end, "not a token shard (bad magic)")
end)

return T.done()
