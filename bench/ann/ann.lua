-- moonforge's side of bench/ann: exact search, then an HNSW build and
-- searches at several ef_search, on base.npy and queries.npy of a folder.
--   moonforge exec bench/ann/ann.lua DIR [M] [EF_CONSTRUCTION]
-- HNSW queries/s are the best of REPEATS passes (the machine may be shared).
-- Prints one line per measurement:
--   exact <qps> <similarities per query>
--   build <seconds>
--   hnsw <ef> <recall@10> <qps> <similarities per query>
-- and writes DIR/exact_ids.npy (the true top 10) for the peer to score with.
local mf = require "moonforge"
local host = require "moonforge.host"

local dir = assert(arg[1], "usage: ann.lua DIR [M] [EF_CONSTRUCTION]")
local M, efc = tonumber(arg[2] or 16), tonumber(arg[3] or 200)
local K, REPEATS = 10, 3
local base, queries = mf.tensor.load_npy(dir .. "/base.npy"), mf.tensor.load_npy(dir .. "/queries.npy")
local n, dim = base:shape()[1], base:shape()[2]
local nq = queries:shape()[1]

local exact = mf.rag.vector_index { dim = dim, kind = "exact" }
exact:add(nil, base)
local t0 = host.clock()
local truth = exact:search(queries, K)
print(string.format("exact %.1f %d", nq / (host.clock() - t0), exact:distance_count() / nq))

local ids = {}
for q = 1, nq do
  for i = 1, K do ids[(q - 1) * K + i] = truth[q][i] - 1 end
end
local truth_t = mf.tensor.from(ids, "i64")
truth_t:save_npy(dir .. "/exact_ids.npy")

local hnsw = mf.rag.vector_index { dim = dim, kind = "hnsw", M = M, ef_construction = efc }
t0 = host.clock()
hnsw:add(nil, base)
print(string.format("build %.2f", host.clock() - t0))
for _, ef in ipairs({ 10, 20, 40, 80, 160 }) do
  hnsw:set_ef_search(ef)
  hnsw:reset_distance_count()
  local got, seconds = nil, math.huge
  for _ = 1, REPEATS do
    t0 = host.clock()
    got = hnsw:search(queries, K)
    seconds = math.min(seconds, host.clock() - t0)
  end
  print(string.format("hnsw %d %.4f %.1f %d", ef, mf.rag.recall_at_k(got, truth, K), nq / seconds,
    hnsw:distance_count() / (nq * REPEATS)))
end
