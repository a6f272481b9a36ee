-- Helpers for the mf.finetune tests: a tiny random Llama, the golden SmolLM
-- tokenizer (1002 tokens, ChatML markers) and small chat datasets.
local mf = require "moonforge"
local engine = require "moonforge.engine"

local F = {}

local root = os.getenv("MF_SOURCE_DIR") or "."
F.tokenizer = root .. "/tests/reference/golden/tokenizers/smollm.json"

function F.model(seed, hidden)
  return mf.model.new({ model_type = "llama", vocab_size = 1024, hidden_size = hidden or 32,
    intermediate_size = 64, num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2,
    max_position_embeddings = 128, seed = seed or 1 })
end

function F.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local LABELS = { "alpha", "beta", "gamma" }

-- n chat rows whose answer is a word of the question: learnable quickly.
function F.chat_lines(n)
  local lines = {}
  for i = 1, n do
    local label = LABELS[i % #LABELS + 1]
    lines[i] = string.format('{"messages": [{"role": "system", "content": "Name the topic."}, '
      .. '{"role": "user", "content": "note %d is about %s"}, {"role": "assistant", "content": "%s"}]}', i, label,
      label)
  end
  return lines
end

function F.chat_file(dir, name, n)
  return F.write(dir .. "/" .. name, table.concat(F.chat_lines(n), "\n") .. "\n")
end

-- The options of a short full or LoRA run over train.jsonl in dir.
function F.options(dir, extra)
  local o = { model = F.model(), tokenizer = F.tokenizer, template = "chatml",
    train_data = dir .. "/train.jsonl", eval_data = dir .. "/eval.jsonl", training_duration = "2ep",
    learning_rate = 1e-2, context_length = 48, batch_size = 4, checkpoint_every = 2, eval_every = 3,
    lora = { r = 4, alpha = 8, dropout = 0.1 } }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- SHA-256 of the trained result: the adapter file or the model's weights.
function F.result_digest(run)
  if run.adapter_path then return engine.sha256_file(run.adapter_path .. "/adapter_model.safetensors") end
  return engine.sha256_file(run.model_path .. "/model.safetensors")
end

return F
