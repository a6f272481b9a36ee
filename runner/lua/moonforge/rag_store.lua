-- moonforge.rag_store: RAG stores, behind mf.rag.save_store and
-- mf.rag.open_store.
--
--   local enc = mf.embed.load("datasets/cache/minilm/all-MiniLM-L6-v2")
--   local chunks = mf.rag.chunk(docs, { size = 128 })
--   local ix = mf.rag.vector_index{ dim = enc.dim }
--   ix:add(nil, enc:encode(texts_of(chunks)))      -- ids 1..n, in chunk order
--   mf.rag.save_store("out/docs.mfrag", { index = ix, chunks = chunks, encoder = enc, bm25 = true })
--   local st = mf.rag.open_store("out/docs.mfrag")
--   for _, hit in ipairs(st:retrieve("how do I reset my password?", 4)) do print(hit.id, hit.source) end
--
-- A store is a folder holding index.mfvi (the index; ids are the chunk
-- numbers 1..n), chunks.jsonl (one {"id", "text", "source", "title",
-- "line_start", "line_end"} a line, in id order; title is the heading path
-- joined by " > ", null when none) and store.json ({"format":
-- "moonforge-rag-store", "version": 1, "encoder", "dim", "metric",
-- "count", "bm25"}); moonforge.h describes it for the engine.
--
-- save_store(dir, {index, chunks, encoder [, bm25]}) writes the three files
-- into dir.tmp-PID and renames that into place, so a store is whole or
-- absent; it replaces a store but no other folder. encoder is a path,
-- recorded as given (a relative one is read from the working directory
-- when the store opens), or an encoder from mf.embed.load; it must be a
-- BERT-family sentence encoder, which the engine runs on queries. bm25
-- (default false) makes "hybrid" the store's default retrieval mode.
--
-- open_store(dir) checks the files against each other in the engine
-- (engine/server_rag.c, which `moonforge serve --index` uses too) and
-- gives {chunks, index, encoder_path, bm25, dir} with
-- st:retrieve(query [, k = 4 [, {mode =}]]) -> a list of {id, score, text,
-- source, title}, best first. Modes: "dense" (the encoder and the index;
-- the score is the index's similarity), "bm25" (over the chunks, built on
-- first use; the BM25 score) and "hybrid" (reciprocal-rank fusion of the
-- best max(k, 20) of each; the fused score).
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local cache = require "moonforge.cache"
local index = require "moonforge.rag_index"
local bm25 = require "moonforge.rag_bm25"

local ffi, C = engine.ffi, engine.C

local M = {}
local Store = {}
Store.__index = Store

local FORMAT = "moonforge-rag-store"
local HYBRID_DEPTH = 20

------------------------------------------------------------------------
-- Saving
------------------------------------------------------------------------

-- The encoder's path and dimension, from a path or a loaded encoder.
local function encoder_of(encoder)
  if type(encoder) == "string" then encoder = require("moonforge.embed").load(encoder) end
  if type(encoder) ~= "table" or type(encoder.path) ~= "string" then
    error("save_store: encoder must be a path or an encoder from mf.embed.load", 4)
  end
  if encoder.kind ~= "bert" then
    error("save_store: the encoder " .. encoder.path .. " is a " .. tostring(encoder.kind) ..
      " model; a store needs a BERT-family sentence encoder", 4)
  end
  return encoder.path, encoder.dim
end

local function title_of(chunk)
  if type(chunk.title) == "string" then return chunk.title end
  if type(chunk.headings) == "table" and #chunk.headings > 0 then return table.concat(chunk.headings, " > ") end
  return json.null
end

local function chunk_lines(chunks)
  local lines = {}
  for i, c in ipairs(chunks) do
    if type(c) ~= "table" or type(c.text) ~= "string" then error("save_store: chunk " .. i .. " has no text", 3) end
    lines[i] = json.encode({ id = i, text = c.text, source = c.source or json.null, title = title_of(c),
      line_start = c.line_start or json.null, line_end = c.line_end or json.null })
  end
  return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
end

-- Checks the parts against each other; returns store.json's table.
local function manifest_of(opts)
  local ix, chunks = opts.index, opts.chunks
  if getmetatable(ix) ~= index.Index then error("save_store: index must be an mf.rag.vector_index", 3) end
  if type(chunks) ~= "table" then error("save_store: chunks must be a list", 3) end
  local path, dim = encoder_of(opts.encoder)
  local o, n = ix:options(), ix:count()
  if #chunks ~= n then
    error(string.format("save_store: %d chunks but the index holds %d vectors", #chunks, n), 3)
  end
  if ix:deleted() > 0 or tonumber(C.mf_vindex_next_id(ix.ptr)) ~= n + 1 then
    error("save_store: the index's ids must be the chunk numbers 1..n (ix:add(nil, vectors) in chunk order)", 3)
  end
  if dim ~= o.dim then
    error(string.format("save_store: the encoder gives vectors of dim %d but the index holds dim %d", dim, o.dim), 3)
  end
  return { format = FORMAT, version = 1, encoder = path, dim = o.dim, metric = o.metric, count = n,
    bm25 = opts.bm25 == true }
end

local function is_store_folder(dir)
  local text = host.kind(dir .. "/store.json") == "file" and host.read_file(dir .. "/store.json")
  local ok, m = pcall(json.decode, text or "")
  return ok and type(m) == "table" and m.format == FORMAT
end

-- Moves the finished folder tmp to dir, replacing the store there.
local function put_in_place(tmp, dir)
  local old = host.kind(dir) and dir .. ".old-" .. host.getpid()
  if old then
    cache.remove_tree(old)
    assert(os.rename(dir, old))
  end
  local ok, err = os.rename(tmp, dir)
  if not ok then
    if old then os.rename(old, dir) end
    error("save_store: cannot move the new store into " .. dir .. ": " .. tostring(err), 0)
  end
  if old then cache.remove_tree(old) end
end

function M.save(dir, opts)
  if type(dir) ~= "string" or dir == "" then error("save_store(dir, opts): dir must be a folder's path", 2) end
  if type(opts) ~= "table" then error("save_store(dir, opts): opts must be a table", 2) end
  dir = dir:gsub("/+$", "")
  local manifest = manifest_of(opts)
  local lines = chunk_lines(opts.chunks)
  if host.kind(dir) and not is_store_folder(dir) then
    error("save_store: " .. dir .. " exists and is not a RAG store; it is left as it is", 2)
  end
  local tmp = dir .. ".tmp-" .. host.getpid()
  cache.remove_tree(tmp)
  local ok, err = pcall(function()
    assert(host.mkdir_p(tmp))
    opts.index:save(tmp .. "/index.mfvi")
    assert(host.write_atomic(tmp .. "/chunks.jsonl", lines))
    assert(host.write_atomic(tmp .. "/store.json", json.encode(manifest, 2) .. "\n"))
    put_in_place(tmp, dir)
  end)
  if not ok then
    cache.remove_tree(tmp)
    error(err, 2)
  end
  return dir
end

------------------------------------------------------------------------
-- Opening and retrieving
------------------------------------------------------------------------

local function optional_string(p) return p ~= nil and ffi.string(p) or nil end
local function optional_line(n) return n > 0 and tonumber(n) or nil end

local function read_chunks(ptr)
  local chunks, c = {}, ffi.new("mf_rag_chunk")
  for id = 1, tonumber(C.mf_retriever_count(ptr)) do
    engine.check(C.mf_retriever_chunk(ptr, id, c), 3)
    chunks[id] = { id = id, text = ffi.string(c.text), source = optional_string(c.source),
      title = optional_string(c.title), line_start = optional_line(c.line_start), line_end = optional_line(c.line_end) }
  end
  return chunks
end

function M.open(dir)
  if type(dir) ~= "string" then error("open_store(dir): dir must be a folder's path", 2) end
  local ptr = ffi.gc(engine.check_ptr(C.mf_retriever_open(dir), 2), C.mf_retriever_free)
  return setmetatable({ ptr = ptr, dir = dir, chunks = read_chunks(ptr), index = index.open(dir .. "/index.mfvi"),
    encoder_path = ffi.string(C.mf_retriever_encoder_path(ptr)), bm25 = C.mf_retriever_bm25(ptr) == 1 }, Store)
end

function M.is_store(x) return getmetatable(x) == Store end

-- The k nearest chunks by the encoder and the index: ids and scores.
function Store:dense(query, k)
  local ids, scores = ffi.new("int64_t[?]", k), ffi.new("float[?]", k)
  local found = engine.check(C.mf_retriever_search(self.ptr, query, #query, k, ids, scores), 3)
  local id_list, score_list = {}, {}
  for i = 1, found do id_list[i], score_list[i] = tonumber(ids[i - 1]), scores[i - 1] end
  return id_list, score_list
end

function Store:bm25_index()
  self.bm25_cache = self.bm25_cache or bm25.new(self.chunks)
  return self.bm25_cache
end

local function ranked(self, query, k, mode)
  if mode == "dense" then return self:dense(query, k) end
  if mode == "bm25" then return self:bm25_index():search(query, k) end
  if mode == "hybrid" then
    local depth = math.max(k, HYBRID_DEPTH)
    return require("moonforge.rag").fuse({ (self:dense(query, depth)), (self:bm25_index():search(query, depth)) })
  end
  error("retrieve: mode must be \"dense\", \"bm25\" or \"hybrid\", got " .. tostring(mode), 3)
end

function Store:retrieve(query, k, opts)
  if type(query) ~= "string" then error("retrieve: query must be a string", 2) end
  k = k or 4
  if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then error("retrieve: k must be a positive integer", 2) end
  local mode = opts and opts.mode or (self.bm25 and "hybrid" or "dense")
  local ids, scores = ranked(self, query, k, mode)
  local hits = {}
  for i = 1, math.min(k, #ids) do
    local c = self.chunks[ids[i]]
    hits[i] = { id = c.id, score = scores[i], text = c.text, source = c.source, title = c.title }
  end
  return hits
end

function Store.__tostring(st)
  return string.format("rag store %s: %d chunks, encoder %s", st.dir, #st.chunks, st.encoder_path)
end

return M
