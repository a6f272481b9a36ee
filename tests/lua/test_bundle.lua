-- mf.bundle: a tiny model with a trained LoRA adapter and a tokenizer packed,
-- unpacked byte for byte, loaded back with the same logits, opened from the
-- cache the second time, and a damaged bundle refused.
local T = require "testing"
local ffi = require "ffi"
local mf = require "moonforge"
local host = require "moonforge.host"
local json = require "moonforge.json"

local root = os.getenv("MF_SOURCE_DIR") or "."
local golden = root .. "/tests/reference/golden"
local model_dir = golden .. "/models/llama_gqa"
local tokenizer_json = golden .. "/tokenizers/llama3.json"
local dir = T.tmpdir("bundle")
local tokens = { { 1, 5, 9, 2, 33, 7 } }

-- A cache of this test's own, so that the first open really extracts.
ffi.cdef("int setenv(const char *name, const char *value, int overwrite);")
ffi.C.setenv("MOONFORGE_CACHE", dir .. "/cache", 1)

local read = T.read

-- The golden model with an adapter trained for two steps, so that the
-- adapter changes the logits; saved as a PEFT folder.
local function tuned_model()
  local model = mf.model.load(model_dir)
  model:add_lora({ r = 2, alpha = 4, targets = "all-linear", seed = 3 })
  local opt = mf.optim.adamw(model, { lr = 0.05, params = model:lora_params() })
  for _ = 1, 2 do
    model:loss(tokens, { { 5, 9, 2, 33, 7, 4 } })
    model:backward()
    opt:step()
    opt:zero_grad()
  end
  model:set_train(false)
  model:save_adapter(dir .. "/adapter")
  return model
end

-- The logits of the test tokens, flattened.
local function logits(model)
  local out = {}
  for _, position in ipairs(mf.tensor.totable(model:forward(tokens))[1]) do
    for _, x in ipairs(position) do out[#out + 1] = x end
  end
  return out
end

local model = tuned_model()
local bundle_path = dir .. "/tiny.mfb"

T.test("pack and unpack give back every file byte for byte", function()
  local result = mf.bundle.pack({ output = bundle_path, model = model_dir, tokenizer = tokenizer_json,
    adapter = dir .. "/adapter", title = "tiny", metrics = { accuracy = 0.5 }, created = 1700000000 })
  T.eq(result.sha256, mf.engine.sha256_file(bundle_path))
  local sha = mf.bundle.unpack(bundle_path, dir .. "/out")
  T.eq(sha, result.sha256)
  for _, name in ipairs({ "config.json", "model.safetensors", "generation_config.json" }) do
    T.eq(read(dir .. "/out/model/" .. name), read(model_dir .. "/" .. name), name)
  end
  T.eq(read(dir .. "/out/tokenizer/tokenizer.json"), read(tokenizer_json), "tokenizer")
  for _, name in ipairs({ "adapter_config.json", "adapter_model.safetensors" }) do
    T.eq(read(dir .. "/out/adapter/" .. name), read(dir .. "/adapter/" .. name), name)
  end
  local manifest = json.decode(read(dir .. "/out/MANIFEST.json"))
  T.eq(manifest.contents.adapter, "adapter")
  T.eq(manifest.created, "2023-11-14T22:13:20Z")
  local card = read(dir .. "/out/README.md")
  T.truthy(card:find("# tiny", 1, true) and card:find("| accuracy | 0.5 |", 1, true) and
    card:find("LoRA rank 2, alpha 4", 1, true), "the card names the model, adapter and metrics:\n" .. card)
end)

T.test("packing the same files again gives the same bytes", function()
  mf.bundle.pack({ output = dir .. "/again.mfb", model = model_dir, tokenizer = tokenizer_json,
    adapter = dir .. "/adapter", title = "tiny", metrics = { accuracy = 0.5 }, created = 1700000000 })
  T.eq(read(dir .. "/again.mfb"), read(bundle_path))
end)

T.test("mf.model.load and mf.tokenizer.load read a bundle", function()
  local want = logits(model)
  local got = logits(mf.model.load(bundle_path))
  T.eq(#got, #want)
  for i = 1, #want do T.eq(got[i], want[i], "logit " .. i) end
  T.truthy(want[1] ~= logits(mf.model.load(model_dir))[1], "the adapter changes the logits")
  local text = "Hello bundles, 123!"
  T.eq(table.concat(mf.tokenizer.load(bundle_path):encode(text), " "),
    table.concat(mf.tokenizer.load(tokenizer_json):encode(text), " "))
end)

T.test("open extracts once into the cache and reuses it", function()
  ffi.C.setenv("MOONFORGE_CACHE", dir .. "/cache2", 1)
  local t0 = host.clock()
  local first = mf.bundle.open(bundle_path)
  local t1 = host.clock()
  local second = mf.bundle.open(bundle_path)
  local t2 = host.clock()
  T.eq(second.dir, first.dir)
  T.eq(first.dir, dir .. "/cache2/bundles/" .. first.sha256, "the cache folder is named by the archive's hash")
  T.eq(first.adapter, first.dir .. "/adapter")
  print(string.format("open: first %.1f ms, second %.1f ms", (t1 - t0) * 1e3, (t2 - t1) * 1e3))
end)

T.test("a damaged bundle is refused and leaves nothing", function()
  local bytes = read(bundle_path)
  local cut = dir .. "/cut/tiny.mfb"
  assert(host.mkdir_p(dir .. "/cut"))
  local f = assert(io.open(cut, "wb"))
  f:write(bytes:sub(1, math.floor(#bytes * 0.6)))
  f:close()
  T.raises(function() mf.model.load(cut) end, "truncated")
  T.raises(function() mf.bundle.unpack(cut, dir .. "/cut/out") end, "truncated")
  T.eq(table.concat(host.listdir(dir .. "/cut"), ","), "tiny.mfb")
end)

T.test("mf.deploy.pack saves a model object with its adapter", function()
  local result = mf.deploy.pack({ output = dir .. "/object.mfb", model = model, tokenizer = tokenizer_json })
  local b = mf.bundle.open(result.path)
  T.eq(host.kind(b.adapter .. "/adapter_model.safetensors"), "file")
  T.eq(logits(mf.model.load(result.path))[7], logits(model)[7])
  T.eq(host.kind(dir .. "/object.mfb.parts." .. host.getpid()), nil, "no scratch folder left")
end)

T.test("bad specs are errors", function()
  T.raises(function() mf.bundle.pack({ model = model_dir }) end, "output (a path) is required")
  T.raises(function() mf.bundle.pack({ output = dir .. "/x.mfb", adapter = dir .. "/adapter" }) end,
    "give a model")
  T.raises(function() mf.bundle.pack({ output = dir .. "/x.mfb", model = dir .. "/absent" }) end, "does not exist")
  T.eq(host.kind(dir .. "/x.mfb"), nil)
end)

return T.done()
