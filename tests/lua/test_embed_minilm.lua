-- all-MiniLM-L6-v2 (fetched by datasets/minilm/fetch.sh) against
-- sentence-transformers: WordPiece ids equal HF tokenizers' (cut to the
-- model's 256), and each embedding has cosine >= 0.9999 with the reference
-- in f32 and >= 0.995 in int8 precision (0.9972 measured), whose nearest
-- neighbours stay those of f32; both give the same bits on 1 and 2
-- threads. Skips, saying so, when the model has not been fetched.
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

local engine = require "moonforge.engine"
local gold = json.decode(T.read(root .. "/tests/reference/golden/embed/minilm.json"))
local enc = mf.embed.load(MODEL)
local enc8 = mf.embed.load(MODEL, { precision = "int8" })

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

T.test("int8 embeddings stay near sentence-transformers' (cosine >= 0.995)", function()
  T.eq(enc8.precision, "int8")
  T.eq(enc.precision, "f32")
  local e = enc8:encode(gold.texts)
  for i, want in ipairs(gold.embeddings) do
    local c = mf.embed.cosine(e, i, mf.tensor.from({ want }), 1)
    T.truthy(c >= 0.995, string.format("text %d: int8 cosine %.6f", i, c))
  end
end)

-- The text each text is most similar to (other than itself).
local function nearest(e, n)
  local out = {}
  for i = 1, n do
    local best, at = -2, nil
    for j = 1, n do
      local c = j ~= i and mf.embed.cosine(e, i, e, j) or -2
      if c > best then best, at = c, j end
    end
    out[i] = at
  end
  return out
end

T.test("int8 keeps f32's nearest neighbours", function()
  local n = #gold.texts
  local want, got = nearest(enc:encode(gold.texts), n), nearest(enc8:encode(gold.texts), n)
  local same = 0
  for i = 1, n do same = same + (want[i] == got[i] and 1 or 0) end
  T.truthy(same >= n - 1, string.format("int8 keeps %d of %d nearest neighbours", same, n))
end)

T.test("1 and 2 threads give the same bits, f32 and int8", function()
  local C, threads = engine.C, engine.threads()
  for _, e in ipairs({ enc, enc8 }) do
    engine.check(C.mf_set_threads(1))
    local one = e:encode(gold.texts, { batch_size = 7 })
    engine.check(C.mf_set_threads(2))
    local two = e:encode(gold.texts, { batch_size = 7 })
    for i = 1, #gold.texts do
      for j = 1, enc.dim do
        if one:get(i, j) ~= two:get(i, j) then
          engine.check(C.mf_set_threads(threads))
          error(string.format("%s: [%d][%d] differs: %.9g and %.9g", e.precision, i, j, one:get(i, j), two:get(i, j)))
        end
      end
    end
  end
  engine.check(C.mf_set_threads(threads))
end)

T.test("similar sentences are nearer than unrelated ones", function()
  local e = enc:encode({ "A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome." })
  T.truthy(mf.embed.cosine(e, 1, e, 2) > mf.embed.cosine(e, 1, e, 3) + 0.5, "food sentences are closer")
end)

return T.done()
