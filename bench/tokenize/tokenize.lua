-- Encodes each line of a text file with moonforge (best of 3 runs), saves
-- the ids of all lines as .npy for the comparison, and prints MB/s on its
-- last line.
--   moonforge exec bench/tokenize/tokenize.lua TOKENIZER TEXT OUT.npy
local mf = require "moonforge"
local host = require "moonforge.host"

local tokenizer, text_path, out = arg[1], arg[2], arg[3]
local f = assert(io.open(text_path, "rb"))
local text = f:read("*a")
f:close()
local docs = {}
for line in text:gmatch("[^\n]+") do docs[#docs + 1] = line end
local tok = mf.tokenizer.load(tokenizer)
local best, parts = math.huge, nil
for _ = 1, 3 do
  local t0 = host.clock()
  parts = {}
  for i, doc in ipairs(docs) do parts[i] = tok:encode_tensor(doc) end
  best = math.min(best, host.clock() - t0)
end
local n = 0
for _, p in ipairs(parts) do n = n + p:numel() end
local all = mf.tensor.zeros({ n }, "i32")
local ffi = require "ffi"
local dst, k = ffi.cast("int32_t *", all:data()), 0
for _, p in ipairs(parts) do
  ffi.copy(dst + k, p:data(), p:numel() * 4)
  k = k + p:numel()
end
all:save_npy(out)
print(string.format("%d ids", n))
print(string.format("%.3f", (#text - #docs + 1) / 1e6 / best))
