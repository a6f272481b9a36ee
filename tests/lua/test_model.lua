-- The model API from Lua: construction, parameters, save and load, the
-- cache protocol, training, and clear errors for bad input.
local T = require "testing"
local ffi = require "ffi"
local mf = require "moonforge"
local json = require "moonforge.json"
local host = require "moonforge.host"
local tensor = require "moonforge.tensor"

local function tiny(extra)
  local cfg = { model_type = "llama", vocab_size = 50, hidden_size = 16, intermediate_size = 24,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 32,
    seed = 1 }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

local function bytes(t) return ffi.string(tensor.data(t), tensor.numel(t) * 4) end

local function floats(t) return ffi.cast("float *", tensor.data(t)), tensor.numel(t) end

local tokens = { { 1, 2, 3, 4, 5, 6 }, { 7, 8, 9, 10, 11, 12 } }
local targets = { { 2, 3, 4, 5, 6, -100 }, { -100, 9, 10, 11, 12, -100 } }

T.test("new: HF names, shapes and initialisation from the seed", function()
  local model = mf.model.new(tiny())
  local names = model:params()
  T.eq(names[1], "model.embed_tokens.weight")
  T.eq(names[2], "model.layers.0.self_attn.q_proj.weight")
  T.eq(names[#names], "lm_head.weight")
  T.eq(#names, 1 + 2 * 9 + 2)
  local k = model:param("model.layers.1.self_attn.k_proj.weight")
  T.eq(table.concat(tensor.shape(k), "x"), "8x16")
  local p, n = floats(model:param("model.embed_tokens.weight"))
  local sum, sq = 0, 0
  for i = 0, n - 1 do sum = sum + p[i]; sq = sq + p[i] * p[i] end
  T.truthy(math.abs(sum / n) < 0.002 and math.abs(math.sqrt(sq / n) - 0.02) < 0.002, "normal(0, 0.02)")
  local norm, dn = floats(model:param("model.norm.weight"))
  for i = 0, dn - 1 do T.eq(norm[i], 1) end
  T.truthy(bytes(mf.model.new(tiny()):param("lm_head.weight")) == bytes(model:param("lm_head.weight")),
    "same seed, same weights")
  T.truthy(bytes(mf.model.new(tiny({ seed = 2 })):param("lm_head.weight")) ~= bytes(model:param("lm_head.weight")),
    "another seed, other weights")
end)

T.test("tied embeddings, qwen2 biases and config()", function()
  local tied = mf.model.new(tiny({ tie_word_embeddings = true }))
  local names = tied:params()
  T.eq(names[#names], "model.norm.weight")
  T.raises(function() tied:param("lm_head.weight") end, "no parameter named 'lm_head.weight'")
  local qwen = mf.model.new(tiny({ model_type = "qwen2" }))
  T.eq(table.concat(tensor.shape(qwen:param("model.layers.0.self_attn.k_proj.bias")), "x"), "8")
  local cfg = qwen:config()
  T.eq(cfg.model_type, "qwen2")
  T.eq(cfg.num_key_value_heads, 2)
end)

T.test("param and grad view model memory and outlive the model variable", function()
  local model = mf.model.new(tiny())
  local w = model:param("model.norm.weight")
  local g = model:grad("model.norm.weight")
  model = nil
  collectgarbage()
  collectgarbage()
  local p = floats(w)
  T.eq(p[0], 1)
  T.eq(floats(g)[0], 0)
end)

T.test("loss, backward, zero_grad; tensors as tokens; smaller batches reuse the arena; free_activations", function()
  local model = mf.model.new(tiny())
  local loss = model:loss(tokens, targets)
  T.truthy(loss > 3 and loss < 5, "loss near log(50) at init: " .. loss)
  model:backward()
  local g = floats(model:grad("model.layers.0.mlp.up_proj.weight"))
  T.truthy(g[0] ~= 0, "gradient filled")
  local t = tensor.from(tokens, "i32")
  local u = tensor.from(targets, "i32")
  T.eq(model:loss(t, u), loss, "tensor and table batches agree")
  T.raises(function() model:loss(tensor.from(tokens), u) end, "expected an I32 tensor [B, T], got F32 [2, 6]")
  local one = model:loss({ tokens[2] }, { targets[2] })
  T.eq(mf.model.new(tiny()):loss({ tokens[2] }, { targets[2] }), one, "a smaller step after a larger one")
  model:zero_grad()
  T.eq(g[0], 0)
  model:loss(tokens, targets)
  model:free_activations()
  T.raises(function() model:backward() end, "no loss to differentiate")
  T.eq(model:loss(tokens, targets), loss, "a step after free_activations")
  model:backward()
  T.truthy(g[0] ~= 0, "gradient filled again")
end)

T.test("AdamW lowers the loss; clipping bounds the gradient norm", function()
  local model = mf.model.new(tiny())
  local opt = mf.optim.adamw(model, { lr = 1e-2 })
  local first = model:loss(tokens, targets)
  local last
  for _ = 1, 20 do
    last = model:loss(tokens, targets)
    model:backward()
    local norm = opt:clip_grad_norm(0.5)
    T.truthy(norm > 0, "a norm")
    T.truthy(opt:clip_grad_norm() <= 0.5 + 1e-5, "clipped")
    opt:step()
    opt:zero_grad()
  end
  T.truthy(last < first * 0.7, string.format("loss %g -> %g", first, last))
  local only = mf.optim.adamw(model, { params = { "model.norm.weight" } })
  local before = bytes(model:param("lm_head.weight"))
  model:loss(tokens, targets)
  model:backward()
  only:step()
  T.truthy(bytes(model:param("lm_head.weight")) == before, "a subset leaves the rest alone")
  T.raises(function() mf.optim.adamw(model, { params = { "nope" } }) end, "no parameter named 'nope'")
  T.raises(function() mf.optim.adamw(model, { betas = { 1.5, 0.9 } }) end, "betas")
end)

T.test("save -> load round trip is exact, and the cache protocol restores a model", function()
  local model = mf.model.new(tiny({ model_type = "qwen2", tie_word_embeddings = true }))
  local dir = T.tmpdir("model") .. "/saved"
  model:save(dir)
  T.eq(host.kind(dir .. "/config.json"), "file")
  local back = mf.model.load(dir .. "/config.json")
  for _, name in ipairs(model:params()) do
    T.truthy(bytes(back:param(name)) == bytes(model:param(name)), name)
  end
  T.truthy(bytes(back:forward(tokens)) == bytes(model:forward(tokens)), "same logits")
  local cache_dir = T.tmpdir("model-cache")
  local desc = getmetatable(model).__mf_cache_save(model, cache_dir)
  T.eq(desc.kind, "model")
  local restored = require("moonforge.model").cache_load(desc, cache_dir)
  T.eq(restored:loss(tokens, targets), model:loss(tokens, targets))
  T.raises(function() model:save(dir, { format = "onnx" }) end, "unsupported format 'onnx'")
end)

-- Rewrites one key of a saved model's config.json.
local function edit_config(dir, key, value)
  local f = assert(io.open(dir .. "/config.json"))
  local cfg = json.decode(f:read("*a"))
  f:close()
  cfg[key] = value
  assert(host.write_atomic(dir .. "/config.json", json.encode(cfg)))
end

T.test("bad input: clear errors", function()
  T.raises(function() mf.model.new(tiny({ num_key_value_heads = 3 })) end, "num_key_value_heads")
  T.raises(function() mf.model.new(tiny({ model_type = "gpt5" })) end, "gpt5")
  local model = mf.model.new(tiny())
  T.raises(function() model:forward({ { 1, 2, 50 } }) end, "token id 50 at [0, 2] is out of range for vocab size 50")
  T.raises(function() model:loss({ { 1, 2 } }, { { 2, 77 } }) end, "target id 77")
  T.raises(function() model:loss({ { 1, 2 } }, { { 2 } }) end, "targets [1, 1]")
  T.raises(function() model:forward({ { 1, 2 }, { 3 } }) end, "row 2 has 1 ids")
  T.raises(function() model:backward() end, "call loss first")
  T.raises(function() model:generate({ 1, 2, 3 }, { max_tokens = 10, max_len = 8 }) end,
    "exceed the KV cache length 8")

  local dir = T.tmpdir("model-bad")
  model:save(dir)
  edit_config(dir, "intermediate_size", 20)
  T.raises(function() mf.model.load(dir) end,
    "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [24, 16], model expects [20, 16]")
  edit_config(dir, "intermediate_size", 24)
  edit_config(dir, "num_hidden_layers", 1)
  T.raises(function() mf.model.load(dir) end, "unexpected tensor 'model.layers.1.")
  edit_config(dir, "num_hidden_layers", 2)
  edit_config(dir, "tie_word_embeddings", true)
  T.truthy(mf.model.load(dir), "a tied model may carry lm_head.weight")
  local tied = T.tmpdir("model-tied")
  mf.model.new(tiny({ tie_word_embeddings = true })):save(tied)
  edit_config(tied, "tie_word_embeddings", false)
  T.raises(function() mf.model.load(tied) end, "missing tensor 'lm_head.weight'")
  T.raises(function() mf.model.load(dir .. "/nowhere") end, "nowhere")

  local w = floats(model:param("model.norm.weight"))
  w[3] = 0 / 0
  T.raises(function() model:loss(tokens, targets) end, "loss is NaN at step 1")
end)

return T.done()
