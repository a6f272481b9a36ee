-- Sentence embeddings on a tiny random BERT (committed with its golden
-- outputs by tests/reference/make_embed_golden.py, so this always runs):
-- WordPiece ids and last hidden states against transformers, mean and CLS
-- pooled embeddings against sentence-transformers, batching that changes
-- nothing beyond rounding, the decoder fallback, and bad input.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"
local host = require "moonforge.host"

local root = os.getenv("MF_SOURCE_DIR") or "."
local GOLDEN = root .. "/tests/reference/golden/embed"
local TINY = GOLDEN .. "/tiny-bert"
local gold = json.decode(T.read(GOLDEN .. "/tiny.json"))

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function copy_tree(from, to)
  assert(host.mkdir_p(to))
  for _, name in ipairs(host.listdir(from)) do
    if host.kind(from .. "/" .. name) == "directory" then copy_tree(from .. "/" .. name, to .. "/" .. name)
    else write_file(to .. "/" .. name, T.read(from .. "/" .. name)) end
  end
end

local function check_rows(got, want, tol, what)
  for i, row in ipairs(want) do
    for j, v in ipairs(row) do
      local g = got:get(i, j)
      if math.abs(g - v) > tol then
        error(string.format("%s: [%d][%d] is %.7g, expected %.7g", what, i, j, g, v), 2)
      end
    end
  end
end

local enc = mf.embed.load(TINY)

T.test("the tiny encoder reads its config and sentence-transformers files", function()
  T.eq(enc.kind, "bert")
  T.eq(enc.dim, 16)
  T.eq(enc.max_len, 16)
  T.eq(enc.pooling, "mean")
end)

T.test("WordPiece ids match HF tokenizers", function()
  local tok = mf.tokenizer.load(TINY)
  for i, text in ipairs(gold.texts) do
    T.eq(table.concat(tok:encode(text, { add_special = true }), " "), table.concat(gold.text_ids[i], " "), text)
  end
end)

T.test("last hidden states of a padded batch match transformers", function()
  local h = enc:hidden(gold.ids, gold.lens)
  for b, seq in ipairs(gold.hidden) do
    for t, row in ipairs(seq) do
      for j, v in ipairs(row) do
        T.near(h:get(b, t, j), v, 1e-4, string.format("hidden[%d][%d][%d]", b, t, j))
      end
    end
  end
end)

T.test("mean-pooled embeddings match sentence-transformers", function()
  check_rows(enc:encode(gold.texts), gold.mean_embeddings, 1e-5, "mean")
  local e = enc:encode(gold.texts, { batch_size = 2 })
  for i, want in ipairs(gold.mean_embeddings) do
    local v = mf.tensor.from({ want })
    T.truthy(mf.embed.cosine(e, i, v, 1) >= 0.9999, "cosine of text " .. i)
  end
end)

T.test("CLS pooling follows the Pooling module's config", function()
  local dir = T.tmpdir("embed-cls")
  copy_tree(TINY, dir)
  local cfg = json.decode(T.read(dir .. "/1_Pooling/config.json"))
  cfg.pooling_mode_cls_token, cfg.pooling_mode_mean_tokens = true, false
  write_file(dir .. "/1_Pooling/config.json", json.encode(cfg))
  local cls = mf.embed.load(dir)
  T.eq(cls.pooling, "cls")
  check_rows(cls:encode(gold.texts), gold.cls_embeddings, 1e-5, "cls")
end)

T.test("normalize = false keeps the raw mean; cosine ignores length", function()
  local raw = enc:encode({ "the cat sat" }, { normalize = false })
  local unit = enc:encode({ "the cat sat" })
  T.near(mf.embed.cosine(raw, unit), 1, 1e-6)
  local ss = 0
  for j = 1, enc.dim do ss = ss + raw:get(1, j) ^ 2 end
  T.truthy(math.abs(math.sqrt(ss) - 1) > 1e-3, "a raw embedding is not unit length")
end)

T.test("long texts are cut to max_len ids, keeping [SEP]", function()
  local long = string.rep("cat ", 50)
  local cut = enc:encode({ long })
  local same = enc:encode({ string.rep("cat ", 14) })
  T.near(mf.embed.cosine(cut, same), 1, 1e-6)
end)

T.test("a decoder model embeds through the same API", function()
  local dir = T.tmpdir("embed-decoder")
  mf.model.new({ model_type = "llama", vocab_size = 77, hidden_size = 32, intermediate_size = 64,
    num_hidden_layers = 1, num_attention_heads = 4, num_key_value_heads = 2, seed = 3 }):save(dir)
  write_file(dir .. "/tokenizer.json", T.read(TINY .. "/tokenizer.json"))
  local dec = mf.embed.load(dir)
  T.eq(dec.kind, "decoder")
  T.eq(dec.dim, 32)
  local e = dec:encode({ "the cat sat", "the dog ran" })
  T.eq(table.concat(e:shape(), "x"), "2x32")
  T.near(mf.embed.cosine(e, 1, e, 1), 1, 1e-9)
  local ss = 0
  for j = 1, 32 do ss = ss + e:get(2, j) ^ 2 end
  T.near(ss, 1, 1e-5)
end)

T.test("int8 precision stays near f32 on the tiny encoder", function()
  local enc8 = mf.embed.load(TINY, { precision = "int8" })
  T.eq(enc8.precision, "int8")
  local e, e8 = enc:encode(gold.texts), enc8:encode(gold.texts)
  for i = 1, #gold.texts do
    local c = mf.embed.cosine(e, i, e8, i)
    T.truthy(c >= 0.99, string.format("text %d: int8 cosine to f32 %.6f", i, c))
  end
end)

T.test("bad input gives clear errors", function()
  T.raises(function() enc:encode({}) end, "texts is empty")
  T.raises(function() enc:encode({ "a", 5 }) end, "texts[2] is a number, not a string")
  T.raises(function() enc:encode("a") end, "texts must be a list of strings")
  T.raises(function() mf.embed.load(GOLDEN) end, "is neither a BERT encoder nor a model")
  T.raises(function() mf.embed.load(TINY, { precision = "int4" }) end, "precision must be \"f32\" or \"int8\"")
  T.raises(function() mf.embed.load(root .. "/no/such/folder") end, "mf.embed.load")
  T.raises(function() enc:hidden({ { 2, 500, 3 } }) end, "id 500 at [0, 1] is outside the vocabulary")
  local dir = T.tmpdir("embed-bad")
  copy_tree(TINY, dir)
  os.remove(dir .. "/model.safetensors")
  T.raises(function() mf.embed.load(dir) end, "no model.safetensors")
  local e = enc:encode({ "x" })
  T.raises(function() mf.embed.cosine(e, 2, e, 1) end, "row 2 is not in a tensor of shape [1, 16]")
end)

return T.done()
