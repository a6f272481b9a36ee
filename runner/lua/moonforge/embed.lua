-- moonforge.embed (mf.embed): sentence embeddings.
--
--   local enc = mf.embed.load("datasets/cache/minilm/all-MiniLM-L6-v2")
--   local e = enc:encode({ "a cat sat", "a dog ran" }, { batch_size = 32, normalize = true })
--   e:shape() --> { 2, enc.dim };  mf.embed.cosine(e, 1, e, 2) --> 0.3...
--
-- mf.embed.load(path [, opts]) takes a folder, the path of its config.json,
-- or a bundle (*.mfb). opts.precision (BERT only): "f32" (default) or
-- "int8", whose GEMMs run on int8 weights (quantized at load) and
-- activations, in blocks of 64: 1.5 to 2.5 times as fast, cosine >= 0.995
-- to sentence-transformers on MiniLM. A BERT-family sentence encoder (config.json model_type
-- "bert": all-MiniLM-L6-v2, bge-small; engine/bert.c) pools as its
-- sentence-transformers files say (mean or CLS). Any other model
-- mf.model.load reads (a Llama-family decoder, a .gguf) embeds by the mean
-- of its final normed hidden states (mf_model_embed, as the server's
-- /v1/embeddings), with the tokenizer beside it.
--
-- enc:encode(texts [, opts]) -> F32 tensor [#texts, enc.dim]. opts:
-- batch_size (32: texts of similar length are encoded together), normalize
-- (true: each row has unit L2 norm). Fields: enc.dim, enc.kind ("bert" or
-- "decoder"), enc.max_len (ids per text; longer texts are cut), enc.pooling
-- ("mean" or "cls"), enc.precision ("f32" or "int8"), enc.path.
-- enc:hidden(ids [, lens]) (BERT only) -> F32 [B, T, dim]: last hidden states
-- of id rows (lens: real lengths, the rest padding; default full rows).
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"
local ffi, C = engine.ffi, engine.C
local check, check_ptr = engine.check, engine.check_ptr

local M = {}
local Encoder = {}
Encoder.__index = Encoder

local function read_model_type(dir)
  local host = require "moonforge.host"
  local text = host.kind(dir .. "/config.json") == "file" and host.read_file(dir .. "/config.json")
  if not text then return nil end
  local ok, cfg = pcall(require("moonforge.json").decode, text)
  return ok and type(cfg) == "table" and cfg.model_type or nil
end

local function load_bert(dir, precision)
  local ptr = ffi.gc(check_ptr(C.mf_encoder_load_precision(dir, precision), 3), C.mf_encoder_free)
  return setmetatable({ ptr = ptr, kind = "bert", path = dir, dim = C.mf_encoder_dim(ptr),
    max_len = C.mf_encoder_max_len(ptr), pooling = ffi.string(C.mf_encoder_pooling(ptr)),
    precision = ffi.string(C.mf_encoder_precision(ptr)) }, Encoder)
end

local function load_decoder(path, tokenizer_path)
  local ok, model = pcall(require("moonforge.model").load, path)
  if not ok then
    error("mf.embed.load: " .. path .. " is neither a BERT encoder nor a model mf.model.load reads: "
      .. tostring(model):gsub("^[^:]*:%d+: ", ""), 3)
  end
  local tok = require("moonforge.tokenizer").load(tokenizer_path or path)
  local cfg = model:config()
  return setmetatable({ model = model, tokenizer = tok, kind = "decoder", path = path, dim = cfg.hidden_size,
    max_len = cfg.max_position_embeddings, pooling = "mean", precision = "f32" }, Encoder)
end

function M.load(path, opts)
  if type(path) ~= "string" then error("mf.embed.load(path): path must be a string", 2) end
  opts = opts or {}
  local precision = opts.precision or "f32"
  if precision ~= "f32" and precision ~= "int8" then
    error("mf.embed.load: precision must be \"f32\" or \"int8\", got " .. tostring(precision), 2)
  end
  local bundle = require "moonforge.bundle"
  local tokenizer_path
  if bundle.is_bundle(path) then
    local b = bundle.open(path)
    path = b.model or error("mf.embed.load: " .. path .. " holds no model", 2)
    tokenizer_path = b.tokenizer
  end
  local dir = path:gsub("/config%.json$", ""):gsub("/+$", "")
  if read_model_type(dir) == "bert" then return load_bert(dir, precision) end
  if precision ~= "f32" then error("mf.embed.load: precision \"" .. precision .. "\" is for BERT encoders only", 2) end
  return load_decoder(path, tokenizer_path)
end

local function check_texts(texts)
  if type(texts) ~= "table" then error("encode: texts must be a list of strings, got " .. type(texts), 3) end
  if #texts == 0 then error("encode: texts is empty", 3) end
  for i = 1, #texts do
    if type(texts[i]) ~= "string" then
      error(string.format("encode: texts[%d] is a %s, not a string", i, type(texts[i])), 3)
    end
  end
end

local function normalize_row(p, dim)
  local ss = 0
  for j = 0, dim - 1 do ss = ss + p[j] * p[j] end
  local inv = 1 / math.max(math.sqrt(ss), 1e-12)
  for j = 0, dim - 1 do p[j] = p[j] * inv end
end

local function encode_decoder(self, texts, out, normalize)
  local p = ffi.cast("float *", out:data())
  for i, text in ipairs(texts) do
    local ids = self.tokenizer:encode(text, { add_special = true })
    if #ids == 0 then error(string.format("encode: texts[%d] gives no tokens", i), 3) end
    if #ids > self.max_len then error(string.format("encode: texts[%d] has %d tokens, more than the model's %d",
      i, #ids, self.max_len), 3) end
    local buf = ffi.new("int32_t[?]", #ids, ids)
    local row = p + (i - 1) * self.dim
    check(C.mf_model_embed(self.model.ptr, buf, #ids, row), 3)
    if normalize then normalize_row(row, self.dim) end
  end
end

function Encoder:encode(texts, opts)
  check_texts(texts)
  opts = opts or {}
  local normalize = opts.normalize ~= false
  local out = tensor.zeros({ #texts, self.dim }, "f32")
  if self.kind == "decoder" then
    encode_decoder(self, texts, out, normalize)
    return out
  end
  local n = #texts
  local ptrs, lens = ffi.new("const char *[?]", n), ffi.new("size_t[?]", n)
  for i = 1, n do ptrs[i - 1], lens[i - 1] = texts[i], #texts[i] end
  check(C.mf_encoder_encode(self.ptr, ptrs, lens, n, opts.batch_size or 32, normalize and 1 or 0,
    ffi.cast("float *", out:data())), 2)
  return out
end

function Encoder:hidden(rows, lens)
  if self.kind ~= "bert" then error("hidden: only BERT encoders give hidden states", 2) end
  if type(rows) ~= "table" or type(rows[1]) ~= "table" or #rows[1] == 0 then
    error("hidden: expected a table of id rows", 2)
  end
  local B, T = #rows, #rows[1]
  local ids, blens = ffi.new("int32_t[?]", B * T), ffi.new("int32_t[?]", B)
  for b = 1, B do
    if #rows[b] ~= T then error("hidden: rows differ in length", 2) end
    for t = 1, T do ids[(b - 1) * T + t - 1] = rows[b][t] end
    blens[b - 1] = lens and lens[b] or T
  end
  local out = tensor.zeros({ B, T, self.dim }, "f32")
  check(C.mf_encoder_hidden(self.ptr, ids, blens, B, T, ffi.cast("float *", out:data())), 2)
  return out
end

-- A row of an F32 tensor [n, dim] (or a vector [dim]) as a pointer and length.
local function row_of(t, i, what)
  if not tensor.is_tensor(t) or tensor.dtype(t) ~= "F32" then error(what .. " must be an F32 tensor", 3) end
  local shape = tensor.shape(t)
  local dim = shape[#shape]
  local rows = #shape == 1 and 1 or shape[1]
  i = i or 1
  if #shape > 2 or i < 1 or i > rows or i % 1 ~= 0 then
    error(string.format("%s: row %s is not in a tensor of shape [%s]", what, tostring(i), table.concat(shape, ", ")), 3)
  end
  return ffi.cast("float *", tensor.data(t)) + (i - 1) * dim, dim
end

-- mf.embed.cosine(a, b) for two vectors, or mf.embed.cosine(a, i, b, j) for
-- row i of a and row j of b: the cosine similarity, in double.
function M.cosine(a, i, b, j)
  if tensor.is_tensor(i) then i, b, j = nil, i, nil end
  local pa, n = row_of(a, i, "cosine: a")
  local pb, m = row_of(b, j, "cosine: b")
  if n ~= m then error(string.format("cosine: lengths differ (%d and %d)", n, m), 2) end
  local dot, na, nb = 0, 0, 0
  for k = 0, n - 1 do
    dot, na, nb = dot + pa[k] * pb[k], na + pa[k] * pa[k], nb + pb[k] * pb[k]
  end
  return dot / math.max(math.sqrt(na * nb), 1e-300)
end

return M
