-- moonforge.rag_index: vector indexes from Lua, behind mf.rag.vector_index
-- and mf.rag.open_index (the engine's mf_vindex; see moonforge.h).
--
-- Vectors and queries are F32 tensors [n, dim] (other float dtypes are
-- converted), a tensor [dim] for one, or Lua tables of numbers, nested or
-- flat. Ids are integers >= 0; :add(nil, v) numbers them on from one past
-- the largest id so far (1 for an empty index), so chunk positions work as
-- ids. :search(q, k) returns ids and scores, lists for a query [dim] and
-- lists of lists for queries [n, dim]; a list holds fewer than k when the
-- index holds fewer vectors.
--
-- Cache protocol: an index stored as a cell result is its file,
-- dir/index.mfvi, opened (memory-mapped) again by the loader.
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"
local cache = require "moonforge.cache"
local ffi, C = engine.ffi, engine.C

local M = {}
local Index = {}
Index.__index = Index

local METRICS = { cosine = 0, dot = 1 }
local KINDS = { exact = 0, hnsw = 1 }

local function wrap(ptr)
  return setmetatable({ ptr = ffi.gc(engine.check_ptr(ptr, 3), C.mf_vindex_free) }, Index)
end

local function choice(table_, value, what)
  local id = table_[value]
  if not id then error(string.format("vector_index: unknown %s '%s'", what, tostring(value)), 3) end
  return id
end

function M.new(opts)
  opts = opts or {}
  if type(opts.dim) ~= "number" then error("vector_index: dim is required", 2) end
  local o = ffi.new("mf_vindex_opts")
  o.dim, o.M, o.ef_construction, o.ef_search = opts.dim, opts.M or 16, opts.ef_construction or 200, opts.ef_search or 64
  o.metric = choice(METRICS, opts.metric or "cosine", "metric")
  o.kind = choice(KINDS, opts.kind or "hnsw", "kind")
  o.seed = opts.seed or 0
  return wrap(C.mf_vindex_new(o))
end

function M.open(path)
  return wrap(C.mf_vindex_open(path))
end

-- An F32 tensor [n, dim] of vectors, and n.
local function as_matrix(v, level)
  if not tensor.is_tensor(v) then
    if type(v) ~= "table" then error("expected a tensor or a table of numbers", level + 1) end
    v = tensor.from(v)
  end
  if tensor.dtype(v) ~= "F32" then v = tensor.to(v, "f32") end
  local shape = tensor.shape(v)
  local n = #shape == 1 and 1 or shape[1]
  local width = #shape == 1 and shape[1] or (#shape == 2 and shape[2] or nil)
  if width == nil then error("expected vectors [n, dim] or one vector [dim]", level + 1) end
  return v, n, width, #shape == 1
end

function Index:dim() return self:options().dim end

function Index:options()
  local o = ffi.new("mf_vindex_opts")
  C.mf_vindex_get_opts(self.ptr, o)
  return { dim = o.dim, metric = o.metric == 0 and "cosine" or "dot", kind = o.kind == 0 and "exact" or "hnsw",
    M = o.M, ef_construction = o.ef_construction, ef_search = o.ef_search, seed = tonumber(o.seed) }
end

-- ix:add(ids or nil, vectors): the ids added.
function Index:add(ids, vectors)
  local v, n, width = as_matrix(vectors, 2)
  if width ~= self:dim() then
    error(string.format("add: vectors have dimension %d, the index has dimension %d", width, self:dim()), 2)
  end
  local given
  if ids ~= nil then
    if type(ids) ~= "table" or #ids ~= n then error("add: expected " .. n .. " ids", 2) end
    given = ffi.new("int64_t[?]", n, ids)
  else
    local first = tonumber(C.mf_vindex_next_id(self.ptr))
    ids = {}
    for i = 1, n do ids[i] = first + i - 1 end
  end
  engine.check(C.mf_vindex_add(self.ptr, given, ffi.cast("const float *", tensor.data(v)), n), 2)
  return ids
end

function Index:delete(id) engine.check(C.mf_vindex_delete(self.ptr, id), 2) end
function Index:compact() engine.check(C.mf_vindex_compact(self.ptr), 2) end
function Index:count() return tonumber(C.mf_vindex_count(self.ptr)) end
function Index:deleted() return tonumber(C.mf_vindex_deleted(self.ptr)) end
function Index:distance_count() return tonumber(C.mf_vindex_distance_count(self.ptr)) end
function Index:reset_distance_count() C.mf_vindex_reset_distance_count(self.ptr) end
function Index:set_ef_search(ef) engine.check(C.mf_vindex_set_ef_search(self.ptr, ef), 2) end
function Index:save(path) engine.check(C.mf_vindex_save(self.ptr, path), 2) end

function Index:search(queries, k)
  k = k or 10
  local q, n, width, single = as_matrix(queries, 2)
  local ids, scores = ffi.new("int64_t[?]", n * k), ffi.new("float[?]", n * k)
  engine.check(C.mf_vindex_search(self.ptr, ffi.cast("const float *", tensor.data(q)), n, width, k, ids, scores), 2)
  local all_ids, all_scores = {}, {}
  for r = 1, n do
    local row_ids, row_scores = {}, {}
    for i = 0, k - 1 do
      local id = tonumber(ids[(r - 1) * k + i])
      if id < 0 then break end
      row_ids[i + 1], row_scores[i + 1] = id, scores[(r - 1) * k + i]
    end
    all_ids[r], all_scores[r] = row_ids, row_scores
  end
  if single then return all_ids[1], all_scores[1] end
  return all_ids, all_scores
end

function Index.__tostring(ix)
  local o = ix:options()
  return string.format("vector index %s %s dim %d: %d vectors", o.kind, o.metric, o.dim, ix:count())
end

function Index.__mf_cache_save(ix, dir)
  ix:save(dir .. "/index.mfvi")
  return { kind = "vector_index", file = "index.mfvi", module = "moonforge.rag" }
end

function M.cache_load(descriptor, dir) return M.open(dir .. "/" .. descriptor.file) end
cache.register_loader("vector_index", M.cache_load)

M.Index = Index
return M
