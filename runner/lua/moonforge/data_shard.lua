-- moonforge.data_shard: token shards on disk, behind mf.data.write_shard and
-- mf.data.open_shard (the file format is described in engine/shards.c).
--
--   mf.data.write_shard(path, docs [, {dtype = "u16" | "i32"}]) -> report
--     docs: a list of id lists, a list of examples ({ids = ...}), or an I32
--     tensor (1-D: one document; 2-D: one document per row). dtype defaults
--     to u16 when every id is below 65536, else i32.
--   local shard = mf.data.open_shard(path [, {verify = false}])
--   shard:len(), shard:docs(), shard:dtype()
--   shard:doc(i)                       -> I32 tensor of document i (1-based)
--   shard:slice(start, n)              -> I32 tensor of tokens start..start+n-1 (1-based)
--   shard:sample_batch(batch, seq, seed, step) -> tokens, targets: I32 [batch, seq]
-- sample_batch takes windows of seq + 1 tokens at random starts that depend
-- only on (seed, step); targets are tokens shifted by one. Windows cross
-- document boundaries, as in pretraining on a token stream.
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local ffi, C = engine.ffi, engine.C

local M = {}

-- Calls each(ids_pointer, n) for every document of docs. Errors carry no
-- position: write_shard re-raises them at its caller.
local function each_document(docs, each)
  if tensor.is_tensor(docs) then
    if tensor.dtype(docs) ~= "I32" then error("write_shard: the tensor must be I32, not " .. tensor.dtype(docs), 0) end
    local shape = tensor.shape(docs)
    if #shape < 1 or #shape > 2 then error("write_shard: the tensor must have 1 or 2 dimensions", 0) end
    local rows, n = #shape == 2 and shape[1] or 1, shape[#shape]
    local p = ffi.cast("int32_t *", tensor.data(docs))
    for r = 0, rows - 1 do each(p + r * n, n) end
    return
  end
  if type(docs) ~= "table" then error("write_shard: expected a list of id lists or an I32 tensor", 0) end
  local buf, cap = nil, 0
  for d, doc in ipairs(docs) do
    local ids = doc.ids or doc
    if type(ids) ~= "table" then error("write_shard: document " .. d .. " is not a list of ids", 0) end
    if #ids > cap then buf, cap = ffi.new("int32_t[?]", #ids), #ids end
    for i = 1, #ids do
      local id = ids[i]
      if type(id) ~= "number" or id % 1 ~= 0 or id < 0 or id >= 2 ^ 31 then
        error(string.format("write_shard: document %d, token %d: %s is not a token id", d, i, tostring(id)), 0)
      end
      buf[i - 1] = id
    end
    each(buf, #ids)
  end
end

local function max_id(docs)
  local max = -1
  local ok, err = pcall(each_document, docs, function(p, n)
    for i = 0, n - 1 do if p[i] > max then max = p[i] end end
  end)
  if not ok then error(err, 3) end
  return max
end

local token_bytes = { u16 = 2, i32 = 4 }

function M.write_shard(path, docs, opts)
  local dtype = opts and opts.dtype or (max_id(docs) < 65536 and "u16" or "i32")
  if not token_bytes[dtype] then error("write_shard: dtype must be 'u16' or 'i32', not " .. tostring(dtype), 2) end
  local w = engine.check_ptr(C.mf_shard_writer_new(path, token_bytes[dtype]), 2)
  local report = { step = "write " .. path, documents = 0, tokens = 0, dtype = dtype }
  local ok, err = pcall(each_document, docs, function(p, n)
    if C.mf_shard_writer_add(w, p, n) ~= 0 then error(engine.errmsg(), 0) end
    report.documents, report.tokens = report.documents + 1, report.tokens + n
  end)
  engine.check(C.mf_shard_writer_close(w, ok and 1 or 0), 2)
  if not ok then error(err, 2) end
  return report
end

local Shard = {}
Shard.__index = Shard

function M.open_shard(path, opts)
  local verify = not (opts and opts.verify == false)
  local ptr = engine.check_ptr(C.mf_shard_open(path, verify and 1 or 0), 2)
  return setmetatable({ ptr = ffi.gc(ptr, C.mf_shard_free), path = path }, Shard)
end

function Shard:len() return tonumber(C.mf_shard_ntokens(self.ptr)) end
function Shard:docs() return tonumber(C.mf_shard_ndocs(self.ptr)) end
function Shard:dtype() return C.mf_shard_token_bytes(self.ptr) == 2 and "u16" or "i32" end

local function whole(v, what)
  if type(v) ~= "number" or v % 1 ~= 0 then error(what .. " must be an integer, got " .. tostring(v), 3) end
  return v
end

local function read(self, start0, n)
  local out = tensor.zeros({ n }, "i32")
  engine.check(C.mf_shard_read(self.ptr, start0, n, tensor.data(out)), 3)
  return out
end

function Shard:slice(start, n)
  return read(self, whole(start, "slice: start") - 1, whole(n, "slice: n"))
end

function Shard:doc(i)
  whole(i, "doc: index")
  if i < 1 or i > self:docs() then
    error(string.format("doc: document %d is outside 1..%d of %s", i, self:docs(), self.path), 2)
  end
  local first = C.mf_shard_doc_start(self.ptr, i - 1)
  return read(self, first, tonumber(C.mf_shard_doc_start(self.ptr, i) - first))
end

function Shard:sample_batch(batch, seq, seed, step)
  local tokens = tensor.zeros({ whole(batch, "sample_batch: batch"), whole(seq, "sample_batch: seq") }, "i32")
  local targets = tensor.zeros({ batch, seq }, "i32")
  engine.check(C.mf_shard_sample_batch(self.ptr, batch, seq, whole(seed or 0, "sample_batch: seed"),
    whole(step or 0, "sample_batch: step"), tensor.data(tokens), tensor.data(targets)), 2)
  return tokens, targets
end

return M
