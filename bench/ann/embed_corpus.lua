-- Real-text data for bench/ann: all-MiniLM-L6-v2 embeddings (int8 path,
-- unit length) of the pretraining corpus's paragraphs — KJV chapters, Jargon
-- File entries, WordNet glosses, one a line. The first N lines of
-- train.txt are the base, the first NQ of eval.txt (held out) the queries.
--   moonforge exec bench/ann/embed_corpus.lua OUT_DIR N NQ
-- Writes OUT_DIR/base.npy [N, 384] and OUT_DIR/queries.npy [NQ, 384].
local mf = require "moonforge"
local ffi = require "ffi"
local host = require "moonforge.host"

local out, n, nq = arg[1], tonumber(arg[2]), tonumber(arg[3])
assert(out and n and nq, "usage: embed_corpus.lua OUT_DIR N NQ")
local corpus, model = "datasets/cache/pretrain_corpus", "datasets/cache/minilm/all-MiniLM-L6-v2"

local function lines(path, count)
  local f = assert(io.open(path, "rb"), path .. " is missing: run `bash datasets/pretrain_corpus/build.sh`")
  local list = {}
  for line in f:lines() do
    if #list == count then break end
    if line:find("%S") then list[#list + 1] = line end
  end
  f:close()
  if #list < count then error(string.format("%s has %d lines, fewer than %d", path, #list, count)) end
  return list
end

local enc = mf.embed.load(model, { precision = "int8" })
local function embed(texts, path)
  local all = mf.tensor.zeros({ #texts, enc.dim }, "f32")
  local dst, row_bytes, t0 = ffi.cast("float *", all:data()), enc.dim * 4, host.clock()
  for first = 1, #texts, 4096 do
    local last = math.min(first + 4095, #texts)
    local part = enc:encode({ unpack(texts, first, last) })
    ffi.copy(dst + (first - 1) * enc.dim, part:data(), (last - first + 1) * row_bytes)
    io.stderr:write(string.format("\rembedded %d of %d texts (%.0f/s)", last, #texts, last / (host.clock() - t0)))
  end
  io.stderr:write("\n")
  all:save_npy(path)
end

embed(lines(corpus .. "/train.txt", n), out .. "/base.npy")
embed(lines(corpus .. "/eval.txt", nq), out .. "/queries.npy")
