-- all-MiniLM-L6-v2 (fetched by datasets/minilm/fetch.sh) against
-- sentence-transformers: WordPiece ids equal HF tokenizers' (cut to the
-- model's 256), and each embedding has cosine >= 0.9999 with the reference.
-- Skips, saying so, when the model has not been fetched.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"

local root = os.getenv("MF_SOURCE_DIR") or "."
local MODEL = root .. "/datasets/cache/minilm/all-MiniLM-L6-v2"

local f = io.open(MODEL .. "/model.safetensors", "rb")
if not f then
  print("skip: " .. MODEL .. " is absent (run datasets/minilm/fetch.sh)")
  return T.done()
end
f:close()

local gold = json.decode(T.read(root .. "/tests/reference/golden/embed/minilm.json"))
local enc = mf.embed.load(MODEL)

T.test("MiniLM's settings come from its sentence-transformers files", function()
  T.eq(enc.dim, 384)
  T.eq(enc.max_len, gold.max_seq_length)
  T.eq(enc.pooling, "mean")
end)

-- ids cut to max_len as the encoder cuts them: the text loses its end, [SEP] stays.
local function cut(ids, max_len)
  if #ids <= max_len then return ids end
  local kept = { unpack(ids, 1, max_len - 1) }
  kept[max_len] = ids[#ids]
  return kept
end

T.test("WordPiece ids match HF tokenizers, cut as sentence-transformers cuts", function()
  local tok = mf.tokenizer.load(MODEL)
  for i, text in ipairs(gold.texts) do
    local got = cut(tok:encode(text, { add_special = true }), enc.max_len)
    T.eq(table.concat(got, " "), table.concat(cut(gold.ids[i], enc.max_len), " "), text:sub(1, 40))
  end
end)

T.test("embeddings match sentence-transformers (cosine >= 0.9999)", function()
  for _, batch_size in ipairs({ 32, 3 }) do
    local e = enc:encode(gold.texts, { batch_size = batch_size })
    for i, want in ipairs(gold.embeddings) do
      local c = mf.embed.cosine(e, i, mf.tensor.from({ want }), 1)
      T.truthy(c >= 0.9999, string.format("text %d (batch_size %d): cosine %.6f", i, batch_size, c))
    end
  end
end)

T.test("similar sentences are nearer than unrelated ones", function()
  local e = enc:encode({ "A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome." })
  T.truthy(mf.embed.cosine(e, 1, e, 2) > mf.embed.cosine(e, 1, e, 3) + 0.5, "food sentences are closer")
end)

return T.done()
