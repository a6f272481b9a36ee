-- The base's precision: the layers' linear weights held in bf16 or in
-- llama.cpp's blocks take the memory they should, compute close to their own
-- values in f32, carry LoRA training, expand back for merging and saving,
-- and refuse what they cannot do.
local T = require "testing"
local G = require "golden"
local ffi = require "ffi"
local mf = require "moonforge"
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local C = engine.C
local CFG = { model_type = "llama", vocab_size = 96, hidden_size = 64, intermediate_size = 128,
  num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, seed = 3 }
local tokens = { { 5, 17, 33, 2, 90, 41, 8, 60 }, { 12, 3, 77, 54, 19, 26, 71, 1 } }
local targets = { { 17, 33, 2, 90, 41, 8, 60, 9 }, { 3, 77, 54, 19, 26, 71, 1, 4 } }

local function floats(t) return ffi.cast("float *", tensor.data(t)), tensor.numel(t) end

local relerr = G.relerr

local function logits(m)
  local x, n = floats(m:forward(tokens))
  local copy = ffi.new("float[?]", n)
  ffi.copy(copy, x, n * 4)
  return copy, n
end

-- Elements of the layers' linear weights.
local function base_elements(m)
  local n = 0
  for _, name in ipairs(m:params()) do
    if name:find("^model%.layers%.") and #tensor.shape(m:param(name)) == 2 then n = n + tensor.numel(m:param(name)) end
  end
  return n
end

-- Bytes per weight of each form: bf16 halves, blocks hold 32 weights each.
local BYTES = { bf16 = 2, q8_0 = 34 / 32, q4_0 = 18 / 32, q4_1 = 20 / 32 }
-- The compute's own rounding (bf16 activations, or int8 activation blocks)
-- against f32 products of the same weights.
local COMPUTE_TOL = { bf16 = 1e-2, q8_0 = 2e-2, q4_0 = 2e-2, q4_1 = 2e-2 }

for _, precision in ipairs { "bf16", "q8_0", "q4_0", "q4_1" } do
  T.test(precision .. ": the base takes its size and computes as its values do in f32", function()
    local m = mf.model.new(CFG)
    local f32_bytes, elements = m:weight_bytes(), base_elements(m)
    m:set_base_precision(precision)
    T.eq(m:base_precision(), precision, "base precision")
    T.eq(m:weight_bytes(), f32_bytes - elements * (4 - BYTES[precision]), "bytes held")
    local got, n = logits(m)
    m:set_base_precision("f32")
    T.eq(m:base_precision(), "f32", "expanded")
    T.eq(m:weight_bytes(), f32_bytes, "bytes held in f32")
    local want = logits(m)
    local e = relerr(got, want, n)
    T.truthy(e <= COMPUTE_TOL[precision], string.format("logits relative error %.2g (tolerance %g)", e,
      COMPUTE_TOL[precision]))
  end)
end

T.test("bf16 holds each weight rounded to nearest even", function()
  local m = mf.model.new(CFG)
  local name = "model.layers.1.mlp.down_proj.weight"
  local rounded = tensor.to(m:param(name), "bf16")
  m:set_base_precision("bf16")
  local held = m:param(name)
  T.eq(tensor.dtype(held), "BF16", "dtype")
  T.eq(ffi.string(tensor.data(held), tensor.numel(held) * 2), ffi.string(tensor.data(rounded), tensor.numel(held) * 2),
    "bits")
end)

T.test("LoRA on a bf16 base tracks the f32 base, trains, and merges into f32", function()
  local f, b = mf.model.new(CFG), mf.model.new(CFG)
  b:set_base_precision("bf16")
  for _, m in ipairs { f, b } do
    m:add_lora { r = 8, alpha = 16, targets = "all-linear", seed = 5 }
    for _, p in ipairs(m:lora_params()) do
      if p:find("lora_B") then
        local x, n = floats(m:param(p))
        for i = 0, n - 1 do x[i] = 0.05 * math.sin(i + #p) end
      end
    end
    m:loss(tokens, targets)
    m:backward()
  end
  for _, p in ipairs(f:lora_params()) do
    local gb, n = floats(b:grad(p))
    local e = relerr(gb, floats(f:grad(p)), n)
    T.truthy(e <= 3e-2, string.format("%s gradient relative error %.2g (tolerance 3e-2)", p, e))
  end
  b:zero_grad()
  local opt = mf.optim.adamw(b, { lr = 1e-2, params = b:trainable_params() })
  local first, last
  for step = 1, 6 do
    local loss = b:loss(tokens, targets)
    b:backward()
    opt:step()
    opt:zero_grad()
    if step == 1 then first = loss end
    last = loss
  end
  T.truthy(last < first - 0.05, string.format("loss decreases: %.4f -> %.4f", first, last))
  local adapted, n = logits(b)
  b:merge_lora()
  T.eq(b:base_precision(), "f32", "a merged base is f32")
  local e = relerr(logits(b), adapted, n)
  T.truthy(e <= 1e-2, string.format("merged logits relative error %.2g (tolerance 1e-2)", e))
end)

T.test("a base held in blocks saves its values and loads back", function()
  local dir = T.tmpdir("base-precision")
  local m = mf.model.new(CFG)
  m:set_base_precision("q4_0")
  m:save(dir .. "/st")
  m:save(dir .. "/m.gguf", { format = "gguf", dtype = "q4_0" })
  m:set_base_precision("f32")
  local expanded, n = logits(m)
  local st = logits(mf.model.load(dir .. "/st"))
  T.eq(ffi.string(st, n * 4), ffi.string(expanded, n * 4), "safetensors holds the decoded values")
  -- Re-encoding decoded Q4_0 blocks gives the same blocks.
  local g = mf.model.load(dir .. "/m.gguf")
  T.eq(g:base_precision(), "q4_0", "GGUF base")
  g:set_base_precision("f32")
  for _, name in ipairs(m:params()) do
    if name:find("^model%.layers%..*_proj") then
      local a, b = m:param(name), g:param(name)
      T.eq(ffi.string(tensor.data(a), tensor.numel(a) * 4), ffi.string(tensor.data(b), tensor.numel(b) * 4), name)
    end
  end
end)

T.test("a GGUF model on blocks holds its layer weights in blocks alone", function()
  local dir = T.tmpdir("base-precision-gguf")
  local m = mf.model.new(CFG)
  local f32_bytes, elements = m:weight_bytes(), base_elements(m)
  local other = 0  -- embeddings and LM head: blocks beside their f32 values
  for _, name in ipairs(m:params()) do
    local shape = tensor.shape(m:param(name))
    if #shape == 2 and not name:find("^model%.layers%.") then other = other + tensor.numel(m:param(name)) end
  end
  m:save(dir .. "/m.gguf", { format = "gguf", dtype = "q8_0" })
  local q = mf.model.load(dir .. "/m.gguf")
  T.eq(q:base_precision(), "q8_0", "base precision")
  T.eq(q:weight_bytes(), f32_bytes - elements * (4 - BYTES.q8_0) + other * BYTES.q8_0, "bytes held")
  local f = mf.model.load(dir .. "/m.gguf", { keep_quantized = false })
  q:set_base_precision("f32")
  local a, n = logits(q)
  T.eq(ffi.string(a, n * 4), ffi.string(logits(f), n * 4), "expanded blocks are the f32 load")
end)

T.test("bad use: unknown precision, training the base, reading blocks, odd widths", function()
  local m = mf.model.new(CFG)
  T.raises(function() m:set_base_precision("fp8") end, "unknown precision 'fp8' (f32, bf16, q8_0, q4_0, q4_1)")
  m:set_base_precision("bf16")
  m:loss(tokens, targets)
  T.raises(function() m:backward() end, "runs on bf16 weights and is trainable")
  T.raises(function() mf.optim.adamw(m, { params = { "model.layers.0.self_attn.q_proj.weight" } }) end,
    "is held in bf16")
  m:set_base_precision("q8_0")
  T.raises(function() m:param("model.layers.0.mlp.up_proj.weight") end, "held in q8_0 blocks alone")
  m:add_lora { r = 2 }
  m:merge_lora()
  T.raises(function() m:set_base_precision("bf16") end, "merged into the base")
  local odd = mf.model.new { model_type = "llama", vocab_size = 32, hidden_size = 32, intermediate_size = 48,
    num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 2 }
  T.raises(function() odd:set_base_precision("q4_0") end, "down_proj.weight' has 48 columns")
  T.eq(odd:base_precision(), "f32", "a refused change leaves the base as it was")
end)

return T.done()
