-- moonforge side of the training-step benchmark, run by `moonforge exec`:
--
--   MOONFORGE_THREADS=2 moonforge exec bench/train_step/train_step.lua [key=value ...]
--
-- Builds a Llama with random weights (default: the llama2.c "stories15M"
-- shape, tied embeddings, f32), times `steps` forward + backward + AdamW
-- steps on random tokens after `warmup` untimed ones, then times greedy
-- KV-cache decoding of `decode_tokens` tokens after a `prompt`-token prompt
-- (batch 1, prefill included). Prints one `key value` line per figure, the
-- format torch_step.py prints, for run.sh to read.
local mf = require "moonforge"
local host = require "moonforge.host"

local opts = {
  dim = 288, layers = 6, heads = 6, kv_heads = 6, ffn = 768, vocab = 32000,
  seq = 256, batch = 8, steps = 10, warmup = 2, decode_tokens = 128, prompt = 16,
}
for _, a in ipairs(arg) do
  local key, value = a:match("^([%w_]+)=(%d+)$")
  if not key or not opts[key] then error("bad argument '" .. a .. "' (expected key=integer)") end
  opts[key] = tonumber(value)
end

local function random_rows(rows, cols, vocab)
  local t = {}
  for i = 1, rows do
    local row = {}
    for j = 1, cols do row[j] = math.random(0, vocab - 1) end
    t[i] = row
  end
  return t
end

local function param_count(model)
  local n = 0
  for _, name in ipairs(model:params()) do n = n + model:param(name):numel() end
  return n
end

local function train_tokens_per_s(model)
  local opt = mf.optim.adamw(model, { lr = 1e-4, weight_decay = 0.01 })
  local data = random_rows(opts.batch, opts.seq + 1, opts.vocab)
  local inputs, targets = {}, {}
  for i, row in ipairs(data) do
    inputs[i] = { unpack(row, 1, opts.seq) }
    targets[i] = { unpack(row, 2, opts.seq + 1) }
  end
  inputs, targets = mf.tensor.from(inputs, "i32"), mf.tensor.from(targets, "i32")

  local function step()
    opt:zero_grad()
    model:loss(inputs, targets)
    model:backward()
    opt:step()
  end

  for _ = 1, opts.warmup do step() end
  local started = host.clock()
  for _ = 1, opts.steps do step() end
  return opts.steps * opts.batch * opts.seq / (host.clock() - started)
end

local function decode_tokens_per_s(model)
  local prompt = random_rows(1, opts.prompt, opts.vocab)[1]
  local function generate()
    model:generate(prompt, { max_tokens = opts.decode_tokens, temperature = 0 })
  end
  generate()
  local started = host.clock()
  generate()
  return opts.decode_tokens / (host.clock() - started)
end

math.randomseed(1)
local model = mf.model.new{
  model_type = "llama", vocab_size = opts.vocab, hidden_size = opts.dim,
  intermediate_size = opts.ffn, num_hidden_layers = opts.layers,
  num_attention_heads = opts.heads, num_key_value_heads = opts.kv_heads,
  max_position_embeddings = math.max(opts.seq, opts.prompt + opts.decode_tokens),
  rope_theta = 10000, rms_norm_eps = 1e-5, tie_word_embeddings = true, seed = 1,
}
print("threads " .. require("moonforge.engine").threads())
print("params " .. param_count(model))
print(string.format("train_tokens_per_s %.1f", train_tokens_per_s(model)))
print(string.format("decode_tokens_per_s %.1f", decode_tokens_per_s(model)))
