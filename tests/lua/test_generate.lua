-- Generation: batched KV-cache generation against one prompt at a time,
-- repetition penalty against transformers (tests/reference/
-- make_generate_golden.py), sampling streams and distributions, stop ids,
-- streamed text with stop strings, and chat replies on a random model with
-- a real tokenizer.
local T = require "testing"
local ffi = require "ffi"
local mf = require "moonforge"
local json = require "moonforge.json"
local engine = require "moonforge.engine"
local generate = require "moonforge.generate"

local C = engine.C
local root = os.getenv("MF_SOURCE_DIR") or "."
local models_dir = root .. "/tests/reference/golden/models/"
local golden_dir = root .. "/tests/reference/golden/"

local read = T.read

local function random_prompts(count, vocab, seed)
  local rng = ffi.new("mf_rng")
  C.mf_rng_init(rng, seed, 17)
  local prompts = {}
  for i = 1, count do
    local p = {}
    for t = 1, 1 + (i * 3) % 8 do p[t] = tonumber(C.mf_rng_u64(rng) % vocab) end
    prompts[i] = p
  end
  return prompts
end

local function same_lists(got, want, what)
  T.eq(#got, #want, what .. ": count")
  for i = 1, #want do T.eq(table.concat(got[i], ","), table.concat(want[i], ","), what .. " " .. i) end
end

-- Each prompt alone through model:generate.
local function one_by_one(model, prompts, opts)
  local out = {}
  for i, p in ipairs(prompts) do out[i] = model:generate(p, opts) end
  return out
end

local function medium_model(seed)
  return mf.model.new({ model_type = "llama", vocab_size = 300, hidden_size = 64, intermediate_size = 160,
    num_hidden_layers = 2, num_attention_heads = 8, num_key_value_heads = 2, max_position_embeddings = 128,
    seed = seed })
end

for _, name in ipairs { "llama_gqa", "smollm_tied", "qwen2_bias" } do
  T.test(name .. ": batched greedy generation equals each prompt alone", function()
    local model = mf.model.load(models_dir .. name)
    local prompts = random_prompts(5, model:config().vocab_size, 1)
    local opts = { max_tokens = 9, ignore_eos = true }
    local alone = one_by_one(model, prompts, opts)
    same_lists(model:generate_batch(prompts, opts), alone, "all at once")
    opts.batch_size = 2
    same_lists(model:generate_batch(prompts, opts), alone, "two slots")
  end)

  T.test(name .. ": prompts sharing a prefix generate as they do alone", function()
    local model = mf.model.load(models_dir .. name)
    local vocab = model:config().vocab_size
    local parts = random_prompts(5, vocab, 7)
    local prefix = { unpack(parts[2]) }
    for _, id in ipairs(parts[5]) do prefix[#prefix + 1] = id end
    local prompts = random_prompts(4, vocab, 8)
    for i, p in ipairs(prompts) do
      local full = { unpack(prefix) }
      for _ = 1, i - 1 do full[#full + 1] = prefix[i] end
      for _, id in ipairs(p) do full[#full + 1] = id end
      prompts[i] = full
    end
    local opts = { max_tokens = 8, ignore_eos = true }
    same_lists(model:generate_batch(prompts, opts), one_by_one(model, prompts, opts), "shared prefix")
  end)

  T.test(name .. ": repetition penalty matches transformers", function()
    local model = mf.model.load(models_dir .. name)
    for i, case in ipairs(json.decode(read(golden_dir .. "generate/repetition.json"))[name]) do
      local got = model:generate(case.prompt, { max_tokens = #case.ids, ignore_eos = true,
        repetition_penalty = case.penalty })
      T.eq(table.concat(got, ","), table.concat(case.ids, ","), "case " .. i .. " penalty " .. case.penalty)
    end
  end)
end

T.test("more sequences than the matrix-vector path takes still match one by one", function()
  local model = medium_model(3)
  local prompts = random_prompts(11, 300, 2)
  local opts = { max_tokens = 8, ignore_eos = true }
  same_lists(model:generate_batch(prompts, opts), one_by_one(model, prompts, opts), "11 sequences")
end)

T.test("a sequence samples from its own stream, whatever the batch holds", function()
  local model = medium_model(5)
  local prompts = random_prompts(4, 300, 3)
  local opts = { max_tokens = 10, ignore_eos = true, temperature = 1.2, top_k = 40, top_p = 0.95, seed = 9 }
  local all = model:generate_batch(prompts, opts)
  opts.batch_size = 1
  same_lists(model:generate_batch(prompts, opts), all, "one slot")
  opts.batch_size = nil
  local other = { prompts[1], { 7, 7, 7 }, prompts[3], prompts[4] }
  local mixed = model:generate_batch(other, opts)
  for _, i in ipairs { 1, 3, 4 } do T.eq(table.concat(mixed[i], ","), table.concat(all[i], ","), "prompt " .. i) end
  T.eq(table.concat(model:generate(prompts[1], opts), ","), table.concat(all[1], ","), "first prompt alone")
  T.truthy(table.concat(all[1], ",") ~= table.concat(all[3], ","), "streams differ between sequences")
end)

T.test("top_k = 1 and a tiny top_p sample the greedy ids", function()
  local model = medium_model(5)
  local prompts = random_prompts(3, 300, 4)
  local greedy = model:generate_batch(prompts, { max_tokens = 10, ignore_eos = true })
  same_lists(model:generate_batch(prompts, { max_tokens = 10, ignore_eos = true, temperature = 5, top_k = 1, seed = 2 }),
    greedy, "top_k 1")
  same_lists(model:generate_batch(prompts, { max_tokens = 10, ignore_eos = true, temperature = 5, top_p = 1e-9, seed = 2 }),
    greedy, "top_p 1e-9")
end)

-- The next-token probabilities after prompt, by id, under temperature and top_k.
local function softmax_top(model, prompt, temperature, k)
  local logits = model:forward({ prompt })
  local V = model:config().vocab_size
  local last = ffi.cast("const float *", require("moonforge.tensor").data(logits)) + (#prompt - 1) * V
  local order = {}
  for id = 0, V - 1 do order[#order + 1] = id end
  table.sort(order, function(a, b) return last[a] > last[b] end)
  local p, total = {}, 0
  for i = 1, k do
    p[order[i]] = math.exp((last[order[i]] - last[order[1]]) / temperature)
    total = total + p[order[i]]
  end
  for id, v in pairs(p) do p[id] = v / total end
  return p
end

T.test("sampled ids follow softmax(logits / temperature) over the top k", function()
  local model = mf.model.load(models_dir .. "llama_gqa")
  local prompt, n = { 5, 9, 13 }, 800
  local want = softmax_top(model, prompt, 0.7, 4)
  local prompts = {}
  for i = 1, n do prompts[i] = prompt end
  local seen = {}
  for _, ids in ipairs(model:generate_batch(prompts, { max_tokens = 1, temperature = 0.7, top_k = 4, seed = 1,
    batch_size = 64, ignore_eos = true })) do
    T.truthy(want[ids[1]], "id " .. ids[1] .. " is among the top 4")
    seen[ids[1]] = (seen[ids[1]] or 0) + 1
  end
  for id, p in pairs(want) do
    local f = (seen[id] or 0) / n
    T.truthy(math.abs(f - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3,
      string.format("id %d drawn %.3f of the time, probability %.3f", id, f, p))
  end
end)

T.test("1 and 2 threads give identical batched sampling", function()
  local prompts = random_prompts(6, 300, 5)
  local opts = { max_tokens = 12, ignore_eos = true, temperature = 0.9, top_p = 0.9, repetition_penalty = 1.3, seed = 4 }
  local threads = engine.threads()
  engine.check(C.mf_set_threads(1))
  local one = medium_model(8):generate_batch(prompts, opts)
  engine.check(C.mf_set_threads(2))
  local two = medium_model(8):generate_batch(prompts, opts)
  engine.check(C.mf_set_threads(threads))
  same_lists(two, one, "2 threads")
end)

T.test("stop ids, on_token and max_tokens end each sequence on its own", function()
  local model = medium_model(6)
  local prompts = random_prompts(3, 300, 6)
  local free = model:generate_batch(prompts, { max_tokens = 8, ignore_eos = true })
  local stop = free[2][3]
  local got = model:generate_batch(prompts, { max_tokens = 8, ignore_eos = true, stop = { stop } })
  for i = 1, 3 do
    local want = {}
    for _, id in ipairs(free[i]) do
      want[#want + 1] = id
      if id == stop then break end
    end
    T.eq(table.concat(got[i], ","), table.concat(want, ","), "sequence " .. i)
  end
  local calls = {}
  got = model:generate_batch(prompts, { max_tokens = 8, ignore_eos = true, on_token = function(_, i)
    calls[i] = (calls[i] or 0) + 1
    if i == 1 then return false end
  end })
  T.eq(#got[1], 1, "on_token stopped sequence 1")
  T.eq(#got[2], 8)
  T.eq(calls[3], 8)
end)

T.test("bad batches are errors naming the problem", function()
  local model = medium_model(6)
  T.raises(function() model:generate_batch({}) end, "non-empty list")
  T.raises(function() model:generate_batch({ { 1 }, {} }) end, "prompt 2")
  T.raises(function() model:generate_batch({ { 1 }, { 1, 999 } }) end, "token id 999")
  T.raises(function() model:generate_batch({ { 1, 2 } }, { max_tokens = 10, max_len = 5 }) end,
    "exceed the KV cache length 5")
end)

-- ---- text ----

local function load_tok() return mf.tokenizer.load(golden_dir .. "tokenizers/smollm.json") end

-- Whether s is well-formed UTF-8.
local function valid_utf8(s)
  local i = 1
  while i <= #s do
    local b = s:byte(i)
    local size = b < 0x80 and 1 or b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC2 and 2 or 0
    if size == 0 or i + size - 1 > #s then return false end
    for j = i + 1, i + size - 1 do
      local c = s:byte(j)
      if c < 0x80 or c >= 0xC0 then return false end
    end
    i = i + size
  end
  return true
end

-- Pushes ids through a stream; returns the reply and the pieces sent.
local function stream_all(tok, ids, stop)
  local pieces = {}
  local s = generate.stream(tok, { stop = stop, on_text = function(p) pieces[#pieces + 1] = p end })
  for _, id in ipairs(ids) do
    if s:push(id) then break end
  end
  return s:finish(), pieces, s.stopped
end

T.test("streamed text comes in whole UTF-8 characters and adds up to the reply", function()
  local tok = load_tok()
  local text = "Caf\u{e9} na\u{ef}ve \u{65e5}\u{672c}\u{8a9e}\u{306e}\u{6587}\u{7ae0} \u{1f642}\u{1f680} done"
  local ids = tok:encode(text)
  T.truthy(#ids > 8, "several tokens")
  local reply, pieces, stopped = stream_all(tok, ids, {})
  T.eq(reply, text)
  T.eq(table.concat(pieces), text)
  T.eq(stopped, false)
  T.truthy(#pieces > 3, "text streamed in several pieces")
  for i, p in ipairs(pieces) do T.truthy(valid_utf8(p), "piece " .. i .. " is whole UTF-8: " .. p) end
end)

T.test("a stop string cuts the reply before it and is never streamed", function()
  local tok = load_tok()
  local text = "The answer is forty-two. STOP here. More text follows."
  local ids = tok:encode(text)
  for _, case in ipairs {
    { stop = { "STOP" }, want = "The answer is forty-two. " },
    { stop = { "follows", "two. S" }, want = "The answer is forty-" },
    { stop = { "e a" }, want = "Th" },
    { stop = { "STOPPED" }, want = text },
  } do
    local reply, pieces, stopped = stream_all(tok, ids, case.stop)
    T.eq(reply, case.want, table.concat(case.stop, "|"))
    T.eq(table.concat(pieces), case.want, "pieces of " .. table.concat(case.stop, "|"))
    T.eq(stopped, case.want ~= text)
  end
  T.raises(function() generate.stream(tok, { stop = { "" } }) end, "stop[1]")
end)

local function chat_model(tok, seed)
  return mf.model.new({ model_type = "llama", vocab_size = tok.vocab_size, hidden_size = 32, intermediate_size = 64,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, tie_word_embeddings = true,
    eos_token_id = 0, seed = seed })
end

local function conversation(question)
  return { { role = "system", content = "Answer briefly." }, { role = "user", content = question } }
end

T.test("chat replies decode the generated ids; stop strings and on_text agree", function()
  local tok = load_tok()
  local model = chat_model(tok, 2)
  T.eq(generate.end_of_turn(tok, "chatml"), tok:id("<|im_end|>"))
  local opts = { template = "chatml", max_tokens = 12, temperature = 1, seed = 1 }
  local messages = conversation("Hello?")
  local reply, info = model:chat(tok, messages, opts)
  local prompt = tok:chat(messages, { add_generation_prompt = true, template = "chatml" })
  local ids = model:generate(prompt, { max_tokens = 12, temperature = 1, seed = 1 })
  T.eq(reply, tok:decode(ids, { skip_special = true }))
  T.truthy(#reply > 12, "a reply of several words: " .. reply)
  T.eq(info.prompt_tokens, #prompt)
  T.eq(info.completion_tokens, 12)
  T.eq(info.finish_reason, "length")

  local stop = tok:decode({ ids[5] })
  local pieces = {}
  opts.stop = { stop }
  opts.on_text = function(piece) pieces[#pieces + 1] = piece end
  local cut
  cut, info = model:chat(tok, messages, opts)
  T.eq(cut, reply:sub(1, reply:find(stop, 1, true) - 1), "cut before " .. stop)
  T.truthy(#cut > 0, "text before the stop string")
  T.eq(table.concat(pieces), cut)
  T.eq(info.finish_reason, "stop")
  T.truthy(info.completion_tokens <= 5, "generation stopped at the stop string")
end)

T.test("chat_batch equals chat one conversation at a time", function()
  local tok = load_tok()
  local model = chat_model(tok, 4)
  local convs = { conversation("One?"), conversation("A longer question than the first one?"), conversation("3") }
  local opts = { template = "chatml", max_tokens = 8, temperature = 0.8, seed = 3 }
  local texts = {}
  opts.on_text = function(piece, i) texts[i] = (texts[i] or "") .. piece end
  local replies, infos = model:chat_batch(tok, convs, opts)
  for i, messages in ipairs(convs) do
    T.eq(texts[i] or "", replies[i], "on_text of conversation " .. i)
    T.eq(infos[i].finish_reason, "length")
  end
  opts.on_text, opts.temperature = nil, nil
  replies = model:chat_batch(tok, convs, opts)
  for i, messages in ipairs(convs) do T.eq(replies[i], (model:chat(tok, messages, opts)), "conversation " .. i) end
end)

return T.done()
