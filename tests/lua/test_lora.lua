-- LoRA adapters against PEFT: logits, loss and adapter gradients of the
-- tiny llama_gqa model with the adapters of tests/reference/make_lora_golden.py
-- (q/v/down_proj; all-linear with rslora); then merge and unmerge, the PEFT
-- and GGUF round trips, thread-count independence, dropout, LoRA on a Q8_0
-- base (QLoRA) and bad input.
local T = require "testing"
local G = require "golden"
local ffi = require "ffi"
local mf = require "moonforge"
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local C = engine.C
local root = os.getenv("MF_SOURCE_DIR") or "."
local golden = root .. "/tests/reference/golden/"
local BASE = golden .. "models/llama_gqa"

local function floats(t) return ffi.cast("float *", tensor.data(t)), tensor.numel(t) end
local function bytes(t) return ffi.string(tensor.data(t), tensor.numel(t) * 4) end

local relerr = G.relerr

local function maxdiff(a, b, n)
  local d = 0
  for i = 0, n - 1 do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

-- ref(key) -> float pointer, count, the tensor, its file.
local function reference(dir)
  local open = G.open(dir .. "/golden.safetensors")
  return function(key)
    local t, st = open(key)
    local p, n = G.floats(t)
    return p, n, t, st
  end
end

local rows_of = G.rows

for _, name in ipairs { "qvd", "all_rslora" } do
  local dir = golden .. "lora/" .. name
  local ref = reference(dir)
  local _, _, tt = ref("tokens")
  local _, _, gt = ref("targets")
  local tokens, targets = rows_of(tt), rows_of(gt)

  T.test(name .. ": logits, loss and adapter gradients match PEFT", function()
    local model = mf.model.load(BASE)
    local adapters = model:load_adapter(dir)
    T.eq(#adapters, name == "qvd" and 12 or 28, "adapter parameters")
    local got, n = floats(model:forward(tokens))
    local want, wn = ref("logits")
    T.eq(n, wn, "logits size")
    local e = relerr(got, want, n)
    T.truthy(e <= 1e-5, "logits relative error " .. e)
    T.near(model:loss(tokens, targets), ref("loss")[0], 1e-5, "loss")
    model:backward()
    for _, pname in ipairs(model:trainable_params()) do
      local g, gn = floats(model:grad(pname))
      local w, wn2 = ref("grad." .. pname)
      T.eq(gn, wn2, pname .. " size")
      local ge = relerr(g, w, gn)
      T.truthy(ge <= 1e-4, pname .. " gradient relative error " .. ge)
    end
    T.raises(function() model:grad("model.layers.0.self_attn.q_proj.weight") end, "frozen")
  end)

  T.test(name .. ": merge gives the adapted logits, unmerge the base weights", function()
    local model = mf.model.load(BASE)
    local before = {}
    for _, p in ipairs(model:params()) do before[p] = bytes(model:param(p)) end
    model:load_adapter(dir)
    local adapted = floats(model:forward(tokens))
    model:merge_lora()
    local merged, n = floats(model:forward(tokens))
    local e = relerr(merged, adapted, n)
    T.truthy(e <= 1e-5, "merged logits relative error " .. e)
    T.raises(function() model:loss(tokens, targets); model:backward() end, "merged")
    model:unmerge_lora()
    for _, p in ipairs(model:params()) do
      local w, wn = floats(model:param(p))
      local orig = ffi.cast("const float *", before[p])
      local d = maxdiff(w, orig, wn)
      T.truthy(d <= 1e-6, p .. " after unmerge differs by " .. d)
    end
  end)
end

local ref = reference(golden .. "lora/qvd")
local tokens, targets = rows_of(select(3, ref("tokens"))), rows_of(select(3, ref("targets")))

T.test("save_adapter (PEFT and GGUF) and load_adapter round trips", function()
  local model = mf.model.load(BASE)
  model:load_adapter(golden .. "lora/all_rslora")
  local want = bytes(model:forward(tokens))
  local dir = T.tmpdir("lora")
  model:save_adapter(dir .. "/peft", { base_model = "llama_gqa" })
  model:save_adapter(dir .. "/a.gguf", { format = "gguf" })
  for _, path in ipairs { dir .. "/peft", dir .. "/a.gguf" } do
    local again = mf.model.load(BASE)
    again:load_adapter(path)
    T.eq(bytes(again:forward(tokens)) == want, true, path .. " gives the same logits")
  end
  local f = assert(io.open(dir .. "/peft/adapter_config.json"))
  local cfg = mf.json.decode(f:read("*a"))
  f:close()
  T.eq(cfg.peft_type, "LORA")
  T.eq(cfg.r, 4)
  T.eq(cfg.use_rslora, true)
  T.eq(#cfg.target_modules, 7)
end)

T.test("1 and 2 threads give identical adapter training", function()
  local function run(threads)
    engine.check(C.mf_set_threads(threads))
    local model = mf.model.load(BASE)
    model:add_lora { r = 4, alpha = 8, dropout = 0.1, targets = "all-linear", seed = 7 }
    local opt = mf.optim.adamw(model, { lr = 1e-2 })
    local out = {}
    for _ = 1, 3 do
      out[#out + 1] = string.format("%.17g", model:loss(tokens, targets))
      model:backward()
      opt:step()
      opt:zero_grad()
    end
    for _, p in ipairs(model:lora_params()) do out[#out + 1] = bytes(model:param(p)) end
    return table.concat(out)
  end
  local threads = engine.threads()
  local one, two = run(1), run(2)
  engine.check(C.mf_set_threads(threads))
  T.eq(one == two, true, "1 and 2 threads agree")
end)

T.test("dropout: a training pass drops, an eval pass does not, both reproducibly", function()
  local model = mf.model.load(BASE)
  model:load_adapter(golden .. "lora/qvd")
  local eval = model:loss(tokens, targets)
  T.near(eval, ref("loss")[0], 1e-5, "eval loss (dropout 0 from the file)")
  local m2 = mf.model.load(BASE)
  m2:add_lora { r = 4, alpha = 8, dropout = 0.5, targets = { "q_proj", "v_proj", "down_proj" } }
  for _, p in ipairs(m2:lora_params()) do
    local dst, n = floats(m2:param(p))
    local src = floats(model:param(p))
    ffi.copy(dst, src, n * 4)
  end
  local a, b = m2:loss(tokens, targets), m2:loss(tokens, targets)
  T.eq(a, b, "same pass, same mask")
  T.truthy(math.abs(a - eval) > 1e-4, "dropout changes the loss")
  m2:set_train(false)
  T.near(m2:loss(tokens, targets), eval, 1e-6, "eval mode has no dropout")
end)

T.test("QLoRA: adapters on a Q8_0 base train and track the f32 base", function()
  local cfg = { model_type = "llama", vocab_size = 96, hidden_size = 64, intermediate_size = 128,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, seed = 3 }
  local dir = T.tmpdir("qlora")
  mf.model.new(cfg):save(dir .. "/m.gguf", { format = "gguf", dtype = "q8_0" })
  local q = mf.model.load(dir .. "/m.gguf")
  local f = mf.model.load(dir .. "/m.gguf", { keep_quantized = false })
  T.eq(C.mf_model_is_quantized(q.ptr), 1, "kept quantized")
  T.raises(function() q:loss(tokens, targets); q:backward() end, "runs on quantized q8_0 weights")
  for _, m in ipairs { q, f } do
    m:add_lora { r = 8, alpha = 16, targets = "all-linear", seed = 5 }
    for _, p in ipairs(m:lora_params()) do
      if p:find("lora_B") then
        local x, n = floats(m:param(p))
        for i = 0, n - 1 do x[i] = 0.05 * math.sin(i + #p) end
      end
    end
  end
  local lq, n = floats(q:forward(tokens))
  local lf = floats(f:forward(tokens))
  local e = relerr(lq, lf, n)
  T.truthy(e <= 2e-2, "Q8_0 logits relative error " .. e .. " (tolerance 2e-2)")
  local opt = mf.optim.adamw(q, { lr = 1e-2, params = q:trainable_params() })
  local first, last
  for step = 1, 6 do
    local loss = q:loss(tokens, targets)
    q:backward()
    for _, p in ipairs(q:lora_params()) do
      local g, gn = floats(q:grad(p))
      for i = 0, gn - 1 do assert(g[i] == g[i] and math.abs(g[i]) < 1e30, p .. " gradient not finite") end
    end
    opt:step()
    opt:zero_grad()
    if step == 1 then first = loss end
    last = loss
  end
  T.truthy(last < first - 0.05, string.format("loss decreases: %.4f -> %.4f", first, last))
  q:merge_lora()
  T.eq(C.mf_model_is_quantized(q.ptr), 0, "a merged quantized model is f32")
end)

T.test("bad input: mismatched base, unknown target, rank, a second set", function()
  local other = mf.model.load(golden .. "models/smollm_tied")
  local err = T.raises(function() other:load_adapter(golden .. "lora/qvd") end, "lora_A.weight' has shape [4, 32]")
  T.truthy(err:find("expects [4, 24]", 1, true), "names both shapes: " .. err)
  T.eq(#other:trainable_params(), #other:params(), "a failed load leaves the base trainable")
  local m = mf.model.load(BASE)
  T.raises(function() m:add_lora { targets = { "q_proj", "qkv" } } end, "unknown target module 'qkv'")
  T.raises(function() m:add_lora { r = 0 } end, "rank r = 0")
  m:add_lora { r = 2 }
  T.raises(function() m:add_lora { r = 2 } end, "already has LoRA adapters")
  T.raises(function() m:unmerge_lora() end, "no merged")
  T.raises(function() mf.optim.adamw(m, { params = { "model.norm.weight" } }) end, "frozen")
end)

return T.done()
