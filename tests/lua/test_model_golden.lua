-- Llama-family models against transformers: logits, loss, gradients, AdamW
-- steps and greedy generation of the tiny models made by
-- tests/reference/make_model_golden.py; then the properties that need no
-- reference: thread-count independence, KV-cache decoding equal to the full
-- forward pass, and reproducible sampling.
local T = require "testing"
local G = require "golden"
local ffi = require "ffi"
local mf = require "moonforge"
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local C = engine.C
local root = os.getenv("MF_SOURCE_DIR") or "."
local golden_dir = root .. "/tests/reference/golden/models/"

local relerr = G.relerr

local function floats(t) return ffi.cast("const float *", tensor.data(t)), tensor.numel(t) end

local function bytes(t) return ffi.string(tensor.data(t), tensor.numel(t) * 4) end

-- The reference tensors of one model, by name.
local function reference(name) return G.open(golden_dir .. name .. "/golden.safetensors") end
local rows_of, ref_floats = G.rows, G.floats

for _, name in ipairs { "llama_gqa", "smollm_tied", "qwen2_bias" } do
  local ref = reference(name)
  local tokens, targets = rows_of(ref("tokens")), rows_of(ref("targets"))

  T.test(name .. ": logits and loss match transformers", function()
    local model = mf.model.load(golden_dir .. name)
    local logits = model:forward(tokens)
    local got, n = floats(logits)
    local want, wn = ref_floats(ref("logits"))
    T.eq(n, wn, "logits size")
    local e = relerr(got, want, n)
    T.truthy(e <= 1e-5, "logits relative error " .. e)
    T.near(model:loss(tokens, targets), ref_floats(ref("loss"))[0], 1e-5, "loss")
  end)

  T.test(name .. ": every gradient matches transformers", function()
    local model = mf.model.load(golden_dir .. name)
    model:loss(tokens, targets)
    model:backward()
    for _, pname in ipairs(model:params()) do
      local got, n = floats(model:grad(pname))
      local want, wn = ref_floats(ref("grad." .. pname))
      T.eq(n, wn, pname .. " size")
      local e = relerr(got, want, n)
      T.truthy(e <= 1e-4, pname .. " gradient relative error " .. e)
    end
  end)

  T.test(name .. ": 10 AdamW steps track torch.optim.AdamW", function()
    local model = mf.model.load(golden_dir .. name)
    local opt = mf.optim.adamw(model, { lr = 1e-2, weight_decay = 0.01 })
    local want = ref_floats(ref("adamw_losses"))
    for step = 0, 10 do
      local loss = model:loss(tokens, targets)
      T.near(loss, want[step], 1e-4, "loss after " .. step .. " steps")
      if step < 10 then
        model:backward()
        opt:step()
        opt:zero_grad()
      end
    end
    T.eq(opt:steps(), 10)
  end)

  T.test(name .. ": greedy generation matches transformers", function()
    local model = mf.model.load(golden_dir .. name)
    local prompt = { unpack(tokens[1], 1, 5) }
    local want = rows_of(ref("greedy"))[1]
    local got = model:generate(prompt, { max_tokens = #want, ignore_eos = true })
    T.eq(table.concat(got, " "), table.concat(want, " "))
  end)
end

-- Big enough that the kernels split work across threads.
local function medium_model(seed, eos)
  return mf.model.new({ model_type = "llama", vocab_size = 300, hidden_size = 64, intermediate_size = 160,
    num_hidden_layers = 2, num_attention_heads = 8, num_key_value_heads = 2, max_position_embeddings = 128,
    eos_token_id = eos, seed = seed })
end

local function random_rows(B, n, vocab, seed)
  local rng = ffi.new("mf_rng")
  C.mf_rng_init(rng, seed, 99)
  local rows = {}
  for b = 1, B do
    rows[b] = {}
    for i = 1, n do rows[b][i] = tonumber(C.mf_rng_u64(rng) % vocab) end
  end
  return rows
end

T.test("1 and 2 threads give identical logits, loss and gradients", function()
  local tokens = random_rows(2, 48, 300, 1)
  local targets = random_rows(2, 48, 300, 2)
  local function run(threads)
    engine.check(C.mf_set_threads(threads))
    local model = medium_model(5)
    local out = { logits = bytes(model:forward(tokens)), loss = model:loss(tokens, targets) }
    model:backward()
    for _, pname in ipairs(model:params()) do out[pname] = bytes(model:grad(pname)) end
    return out, model:params()
  end
  local threads = engine.threads()
  local one, names = run(1)
  local two = run(2)
  engine.check(C.mf_set_threads(threads))
  T.truthy(one.logits == two.logits, "logits bit-identical")
  T.eq(one.loss, two.loss, "loss")
  for _, pname in ipairs(names) do T.truthy(one[pname] == two[pname], pname .. " gradient bit-identical") end
end)

T.test("KV-cache decoding gives the full forward pass's logits at every position", function()
  local model = medium_model(7)
  local n, V = 20, 300
  local rows = random_rows(2, n, V, 3)
  local full = floats(model:forward(rows))
  local cache = ffi.gc(engine.check_ptr(C.mf_kv_cache_new(model.ptr, 2, n)), C.mf_kv_cache_free)
  local logits = ffi.new("float[?]", 2 * V)
  local prefill = 6
  local function step(first, count)
    local ids = ffi.new("int32_t[?]", 2 * count)
    for b = 0, 1 do
      for i = 0, count - 1 do ids[b * count + i] = rows[b + 1][first + i + 1] end
    end
    engine.check(C.mf_model_decode(model.ptr, cache, ids, count, logits))
    local last = first + count - 1
    for b = 0, 1 do
      local e = relerr(logits + b * V, full + (b * n + last) * V, V)
      T.truthy(e <= 1e-5, string.format("sequence %d position %d: relative error %g", b, last, e))
    end
  end
  step(0, prefill)
  for pos = prefill, n - 1 do step(pos, 1) end
  T.eq(tonumber(C.mf_kv_cache_len(cache)), n)
  local ids = ffi.new("int32_t[2]")
  T.raises(function() engine.check(C.mf_model_decode(model.ptr, cache, ids, 1, logits)) end,
    "exceed the KV cache length 20")
end)

T.test("greedy generation is deterministic; seeded sampling is reproducible", function()
  local model = medium_model(11)
  local prompt = { 5, 17, 42, 99 }
  local a = model:generate(prompt, { max_tokens = 12 })
  T.eq(#a, 12)
  T.eq(table.concat(model:generate(prompt, { max_tokens = 12 }), ","), table.concat(a, ","))
  local opts = { max_tokens = 24, temperature = 1.5, top_k = 50, top_p = 0.9, seed = 3 }
  local s1 = table.concat(model:generate(prompt, opts), ",")
  T.eq(table.concat(model:generate(prompt, opts), ","), s1, "same seed, same ids")
  opts.seed = 4
  T.truthy(table.concat(model:generate(prompt, opts), ",") ~= s1, "another seed, other ids")
  local seen = {}
  opts.on_token = function(id) seen[#seen + 1] = id end
  T.eq(table.concat(model:generate(prompt, opts), ","), table.concat(seen, ","), "on_token streams every id")
end)

T.test("generation stops at a stop id, at eos and when on_token says so", function()
  local model = medium_model(11)
  local prompt = { 5, 17, 42, 99 }
  local free = model:generate(prompt, { max_tokens = 8, temperature = 1, seed = 1 })
  local stop = free[3]
  local first = 1
  while free[first] ~= stop do first = first + 1 end
  T.eq(#model:generate(prompt, { max_tokens = 8, temperature = 1, seed = 1, stop = { stop } }), first)
  local with_eos = medium_model(11, stop)
  T.eq(#with_eos:generate(prompt, { max_tokens = 8, temperature = 1, seed = 1 }), first, "eos stops")
  T.eq(#with_eos:generate(prompt, { max_tokens = 8, temperature = 1, seed = 1, ignore_eos = true }), 8)
  local calls = 0
  local got = model:generate(prompt, { max_tokens = 8, on_token = function() calls = calls + 1; return calls < 2 end })
  T.eq(#got, 2)
  T.raises(function() model:generate(prompt, { on_token = function() error("from the callback") end }) end,
    "from the callback")
end)

return T.done()
