-- moonforge.rag (mf.rag): retrieval for retrieval-augmented generation.
--
--   local docs = mf.rag.load_documents("docs/", { glob = "*.md" })
--   local chunks = mf.rag.chunk(docs, { tokenizer = tok, size = 256, overlap = 32 })
--   local ix = mf.rag.vector_index{ dim = 384, metric = "cosine", kind = "hnsw" }
--   ix:add(nil, enc:encode(texts))               -- ids 1..n: chunk positions
--   local ids, scores = ix:search(query_vector, 10)
--   local bm = mf.rag.bm25(chunks)
--   local fused = mf.rag.fuse({ ids, (bm:search("reset password", 10)) })
--   mf.rag.recall_at_k(results, relevant, 10); mf.rag.mrr(results, relevant)
--
-- Documents (load_documents): text (.txt and anything unknown), markdown
-- (.md), HTML (.html, .htm) and JSONL (.jsonl, one document per row from
-- opts.field, default "text"). A folder is walked recursively in name
-- order; opts.glob ("*.md", "guides/**/*.html") picks its files, matched
-- against the base name when the glob has no '/', else the path under the
-- folder; without a glob the known extensions are taken.
--
-- Chunks (chunk): by = "tokens" (the default) cuts windows of opts.size
-- units (default 256) that start opts.size - opts.overlap units apart;
-- units are the tokenizer's tokens (any object with :encode and :decode)
-- or, without one, words (runs of non-space). by = "headings" cuts at
-- markdown headings and HTML h1..h3, and windows within a section when
-- opts.size is given. Each chunk is {id, text, source, doc, start, stop,
-- line_start, line_end, headings}: start and stop are byte offsets
-- (1-based, inclusive) into the document's text, lines are 1-based (a JSONL
-- row's line in its file), headings the titles enclosing the chunk's start.
--
-- Vector indexes: see moonforge.rag_index; BM25: see moonforge.rag_bm25;
-- stores (save_store, open_store): see moonforge.rag_store.
--
-- Fusion and metrics take results as ranked lists of ids, best first;
-- relevant[q] is one id or a list of ids.
local text = require "moonforge.rag_text"
local bm25 = require "moonforge.rag_bm25"
local index = require "moonforge.rag_index"

local M = {}

M.load_documents = text.load_documents
M.chunk = text.chunk
M.html_text = text.html_text
M.analyze = bm25.analyze
M.vector_index = index.new
M.open_index = index.open
M.save_store = require("moonforge.rag_store").save
M.open_store = require("moonforge.rag_store").open

function M.bm25(chunks, opts)
  if type(chunks) ~= "table" then error("bm25: expected a list of chunks or strings", 2) end
  return bm25.new(chunks, opts)
end

-- Reciprocal-rank fusion: score(id) = sum over lists of 1 / (k + rank),
-- rank 1-based, k = opts.k or 60. Returns ids and scores, best first, ties
-- by lower id.
function M.fuse(lists, opts)
  local k = opts and opts.k or 60
  local score, ids = {}, {}
  for _, list in ipairs(lists) do
    for rank, id in ipairs(list) do
      if not score[id] then ids[#ids + 1] = id end
      score[id] = (score[id] or 0) + 1 / (k + rank)
    end
  end
  table.sort(ids, function(a, b) return score[a] > score[b] or (score[a] == score[b] and a < b) end)
  local scores = {}
  for i, id in ipairs(ids) do scores[i] = score[id] end
  return ids, scores
end

local function relevant_set(relevant, q)
  local r = relevant[q]
  if r == nil then error("metrics: no relevant ids for query " .. q, 3) end
  local set, n = {}, 0
  for _, id in ipairs(type(r) == "table" and r or { r }) do
    if not set[id] then set[id], n = true, n + 1 end
  end
  return set, n
end

-- The mean over queries of the share of relevant ids in the top k.
function M.recall_at_k(results, relevant, k)
  if #results == 0 then return 0 end
  local total = 0
  for q, list in ipairs(results) do
    local set, n = relevant_set(relevant, q)
    local found = 0
    for i = 1, math.min(k, #list) do
      if set[list[i]] then found, set[list[i]] = found + 1, nil end
    end
    total = total + (n > 0 and found / n or 0)
  end
  return total / #results
end

-- Mean reciprocal rank of the first relevant id (within the top k when given).
function M.mrr(results, relevant, k)
  if #results == 0 then return 0 end
  local total = 0
  for q, list in ipairs(results) do
    local set = relevant_set(relevant, q)
    for i = 1, math.min(k or #list, #list) do
      if set[list[i]] then
        total = total + 1 / i
        break
      end
    end
  end
  return total / #results
end

return M
