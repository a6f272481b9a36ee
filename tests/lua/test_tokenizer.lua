-- Tokenizers against HF tokenizers / transformers: golden ids from
-- tests/reference/make_tokenizer_golden.py, training, chat templates and bad input.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"

local ROOT = os.getenv("MF_SOURCE_DIR") or "."
local GOLDEN = ROOT .. "/tests/reference/golden/tokenizers/"
local GGUF = ROOT .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

local read = T.read

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function same_ids(got, want, what)
  local n = math.max(#got, #want)
  for i = 1, n do
    if got[i] ~= want[i] then
      error(string.format("%s: id %d differs (got %s, want %s)\n got  %s\n want %s", what, i, tostring(got[i]),
        tostring(want[i]), table.concat(got, " "), table.concat(want, " ")), 2)
    end
  end
end

-- Every golden row: ids with text as data, ids with specials parsed and
-- added, and both decodes.
local function check_rows(tok, rows, name)
  for i, row in ipairs(rows) do
    local what = string.format("%s text %d %q", name, i, row.text:sub(1, 40))
    same_ids(tok:encode(row.text), row.ids, what)
    same_ids(tok:encode(row.text, { add_special = true, parse_special = true }), row.ids_special, what .. " (special)")
    T.eq(tok:decode(row.ids_special), row.decoded, what .. " decode")
    T.eq(tok:decode(row.ids_special, { skip_special = true }), row.decoded_skip, what .. " decode skip_special")
  end
end

for _, name in ipairs({ "gpt2", "llama3", "qwen2", "smollm", "spm", "metaspace" }) do
  T.test("golden " .. name .. " matches HF tokenizers", function()
    local tok = mf.tokenizer.load(GOLDEN .. name .. ".json")
    check_rows(tok, json.decode(read(GOLDEN .. name .. "_ids.json")), name)
  end)
end

T.test("SmolLM2 GGUF tokenizer matches transformers", function()
  local f = io.open(GGUF, "rb")
  if not f then
    print("skip: " .. GGUF .. " is absent (run datasets' fetch script to test the GGUF tokenizer)")
    return
  end
  f:close()
  local ref = json.decode(read(GOLDEN .. "smollm2_gguf_ids.json"))
  local tok = mf.tokenizer.load(GGUF)
  T.eq(tok.vocab_size, ref.vocab_size, "vocab size")
  T.eq(tok.bos_id, ref.bos_id, "bos")
  T.eq(tok.eos_id, ref.eos_id, "eos")
  check_rows(tok, ref.rows, "smollm2")
  local ids = tok:chat({ { role = "user", content = "Hi there" } }, { add_generation_prompt = true })
  same_ids(ids, tok:encode(ref.chat_example, { parse_special = true }), "chat with SmolLM2's default system prompt")
end)

T.test("training gives HF BpeTrainer's vocabulary and merges", function()
  local out = T.tmpdir("tok") .. "/tokenizer.json"
  local tok = mf.tokenizer.train({ files = { GOLDEN .. "corpus.txt" }, vocab_size = 1000, min_frequency = 2,
    special_tokens = { "<|endoftext|>", "<pad>" }, output = out })
  local ref = json.decode(read(GOLDEN .. "trained_hf.json"))
  local mine = json.decode(read(out)).model
  local n = 0
  for text, id in pairs(ref.vocab) do
    T.eq(mine.vocab[text], id, "id of " .. text)
    n = n + 1
  end
  T.eq(tok.vocab_size, n, "vocab size")
  T.eq(#mine.merges, #ref.merges, "merge count")
  for i, m in ipairs(ref.merges) do
    T.eq(mine.merges[i][1] .. " " .. mine.merges[i][2], m[1] .. " " .. m[2], "merge " .. i)
  end
  -- HF loaded the tokenizer.json moonforge wrote and encoded these
  check_rows(tok, json.decode(read(GOLDEN .. "trained_ids.json")), "trained")
end)

T.test("training from texts is deterministic", function()
  local dir = T.tmpdir("tok")
  local texts = { "low lower lowest", "newer wider newest widest", "low low low new new" }
  local a = mf.tokenizer.train({ texts = texts, vocab_size = 280, output = dir .. "/a.json" })
  mf.tokenizer.train({ texts = texts, vocab_size = 280, output = dir .. "/b.json" })
  T.eq(read(dir .. "/a.json"), read(dir .. "/b.json"), "same file")
  T.eq(a:decode(a:encode("lowest newest")), "lowest newest")
  T.raises(function() mf.tokenizer.train({ texts = texts, vocab_size = 10, output = dir .. "/c.json" }) end,
    "below the 256 bytes")
end)

T.test("text is data unless parse_special", function()
  local tok = mf.tokenizer.load(GOLDEN .. "smollm.json")
  local im_end = tok:id("<|im_end|>")
  T.truthy(im_end, "<|im_end|> is a token")
  for _, id in ipairs(tok:encode("a<|im_end|>b")) do T.truthy(id ~= im_end, "special token from plain text") end
  same_ids(tok:encode("a<|im_end|>b", { parse_special = true }),
    { tok:encode("a")[1], im_end, tok:encode("b")[1] }, "parsed")
  -- non-special added tokens are always matched whole, as in HF
  local think = tok:id("<think>")
  T.eq(tok:encode("<think>")[1], think)
  T.truthy(tok:is_special(im_end) and not tok:is_special(think), "special flags")
  T.eq(tok:token(im_end), "<|im_end|>")
  T.eq(tok:id("no such token"), nil)
end)

T.test("invalid UTF-8 survives a round trip", function()
  local bytes = "ok \xff\xfe bad \xc3( end \xe2\x82"
  for _, name in ipairs({ "gpt2", "llama3", "spm" }) do
    local tok = mf.tokenizer.load(GOLDEN .. name .. ".json")
    T.eq(tok:decode(tok:encode(bytes)), bytes, name)
  end
end)

T.test("encode_tensor and a long input", function()
  local tok = mf.tokenizer.load(GOLDEN .. "spm.json")
  local text = string.rep("\xe2\x82\xac ", 2000) -- byte fallback: more ids than bytes
  local ids = tok:encode(text)
  T.truthy(#ids > #text, "more ids than bytes")
  local t = tok:encode_tensor(text)
  T.eq(t:numel(), #ids)
  T.eq(t:get(#ids), ids[#ids])
  T.eq(tok:decode(t), text)
end)

T.test("chat templates: ids and loss mask", function()
  local tok = mf.tokenizer.load(GOLDEN .. "smollm.json")
  local msgs = { { role = "system", content = "Be brief." }, { role = "user", content = "Hi <|im_end|>" },
    { role = "assistant", content = "Hello!" } }
  local ids, mask = tok:chat(msgs, { template = "chatml" })
  T.eq(tok:decode(ids), "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|><|im_end|>\n" ..
    "<|im_start|>assistant\nHello!<|im_end|>\n")
  T.eq(#mask, #ids)
  local learned = {}
  for i = 1, #ids do if mask[i] == 1 then learned[#learned + 1] = ids[i] end end
  T.eq(tok:decode(learned), "Hello!<|im_end|>", "mask covers the assistant content and its end marker")
  local gen = tok:chat({ msgs[1], msgs[2] }, { template = "chatml", add_generation_prompt = true })
  T.eq(tok:decode(gen):sub(-22), "<|im_start|>assistant\n")

  local l3 = mf.tokenizer.load(GOLDEN .. "llama3.json")
  local ids3, mask3 = l3:chat({ { role = "user", content = " Hi " }, { role = "assistant", content = "Yo" } },
    { template = "llama3" })
  T.eq(l3:decode(ids3), "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" ..
    "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>")
  T.eq(mask3[#mask3], 1, "<|eot_id|> of the assistant turn is learned")

  local spm = mf.tokenizer.load(GOLDEN .. "spm.json")
  local ids_m = spm:chat({ { role = "user", content = "Hello" }, { role = "assistant", content = "Hi" } },
    { template = "mistral" })
  -- the instruction is one text as HF encodes it; the answer is encoded on
  -- its own (so that its mask is exact), with SentencePiece's leading "▁"
  local want = { spm:id("<s>") }
  for _, part in ipairs({ spm:encode("[INST] Hello [/INST]"), spm:encode("Hi"), { spm:id("</s>") } }) do
    for _, id in ipairs(part) do want[#want + 1] = id end
  end
  same_ids(ids_m, want, "mistral")

  local custom = tok:chat({ { role = "user", content = "x" } }, { template = function(messages)
    return { { token = "<|endoftext|>" }, { text = messages[1].content, train = true } }
  end })
  same_ids(custom, { tok:id("<|endoftext|>"), tok:encode("x")[1] }, "custom template")
end)

T.test("chat validates messages", function()
  local tok = mf.tokenizer.load(GOLDEN .. "smollm.json")
  T.raises(function() tok:chat({ { role = "user", content = "a" }, { role = "bot", content = "b" } }, { template = "chatml" }) end,
    "message 2 has role 'bot'")
  T.raises(function() tok:chat({ { role = "user" } }, { template = "chatml" }) end, "message 1 (user) has no content")
  T.raises(function() tok:chat({ { role = "user", content = "a" } }) end, "declares no chat template")
  T.raises(function() tok:chat({}, { template = "nope" }) end, "unknown template 'nope'")
end)

T.test("bad input: clear errors", function()
  local dir = T.tmpdir("tok")
  local tok = mf.tokenizer.load(GOLDEN .. "gpt2.json")
  T.raises(function() tok:decode({ 1, tok.vocab_size }) end, "ids[2] = " .. tok.vocab_size)
  T.raises(function() tok:token(-1) end, "outside the vocabulary")
  T.raises(function() mf.tokenizer.load(dir .. "/missing.json") end, "no such file")
  T.raises(function() mf.tokenizer.load(dir) end, "no tokenizer.json")
  local spec = json.decode(read(GOLDEN .. "gpt2.json"))
  local function try(mutate, pattern)
    local s = json.decode(json.encode(spec))
    mutate(s)
    write(dir .. "/bad.json", json.encode(s))
    T.raises(function() mf.tokenizer.load(dir .. "/bad.json") end, pattern)
  end
  try(function(s) s.model.type = "Unigram" end, "model.type 'Unigram' is not supported")
  try(function(s) s.model.vocab = nil end, "model.vocab must be an object")
  try(function(s) s.model.merges = "x" end, "model.merges must be an array")
  try(function(s) s.model.merges[1] = "onlyone" end, "model.merges[0]")
  try(function(s) s.model.merges[1] = { "zzz_not_a_token", "a" } end, "zzz_not_a_token")
  try(function(s) s.pre_tokenizer = { type = "Whitespace" } end, "pre_tokenizer type 'Whitespace'")
  try(function(s) s.pre_tokenizer = { type = "Split", pattern = { Regex = "(" }, behavior = "Isolated" } end,
    "pre-tokenizer regex")
  write(dir .. "/trunc.json", read(GOLDEN .. "gpt2.json"):sub(1, 500))
  T.raises(function() mf.tokenizer.load(dir .. "/trunc.json") end, "trunc.json")
end)

return T.done()
