-- Encodes each line of a text file with mf.embed (best of 3 runs) at the
-- given precision ("f32" or "int8"), saves the embeddings as .npy for the
-- comparison, and prints sentences/s on its last line.
--   moonforge exec bench/embed/embed.lua MODEL TEXT OUT.npy [PRECISION]
local mf = require "moonforge"
local host = require "moonforge.host"

local model, text_path, out, precision = arg[1], arg[2], arg[3], arg[4] or "f32"
local texts = {}
for line in assert(io.open(text_path, "rb")):lines() do texts[#texts + 1] = line end
local enc = mf.embed.load(model, { precision = precision })
local best, e = math.huge, nil
for _ = 1, 3 do
  local t0 = host.clock()
  e = enc:encode(texts, { batch_size = 32 })
  best = math.min(best, host.clock() - t0)
end
e:save_npy(out)
print(string.format("%.3f", #texts / best))
