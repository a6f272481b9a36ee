-- The server tests' model: a tiny random llama over the golden SmolLM
-- tokenizer, with SmolLM2's ChatML template, in a folder the server loads.
--
--   local S = require "serve_testing"
--   local dir = S.make_model(T.tmpdir("serve"))   -- config.json, weights, tokenizer, template
--
-- As a script, `moonforge exec serve_testing.lua DIR` makes the model in DIR.
local mf = require "moonforge"
local json = require "moonforge.json"
local host = require "moonforge.host"

local M = {}

local function source_dir() return os.getenv("MF_SOURCE_DIR") or "." end

-- SmolLM2's chat template: ChatML with a default system prompt.
M.TEMPLATE = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" ..
  "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}" ..
  "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" ..
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

local function copy(from, to)
  local f = assert(io.open(from, "rb"))
  local data = f:read("*a")
  f:close()
  f = assert(io.open(to, "wb"))
  f:write(data)
  f:close()
end

-- A random llama (seeded) over the golden SmolLM tokenizer, in dir.
function M.make_model(dir)
  assert(host.mkdir_p(dir))
  copy(source_dir() .. "/tests/reference/golden/tokenizers/smollm.json", dir .. "/tokenizer.json")
  local f = assert(io.open(dir .. "/tokenizer_config.json", "w"))
  f:write(json.encode({ chat_template = M.TEMPLATE, eos_token = "<|im_end|>", bos_token = "<|im_start|>" }))
  f:close()
  local tok = mf.tokenizer.load(dir)
  mf.model.new({ model_type = "llama", vocab_size = tok.vocab_size, hidden_size = 32, intermediate_size = 64,
    num_hidden_layers = 2, num_attention_heads = 4, num_key_value_heads = 2, max_position_embeddings = 256,
    eos_token_id = tok:id("<|im_end|>"), seed = 7 }):save(dir)
  return dir
end

if arg and arg[0] and arg[0]:match("serve_testing%.lua$") then M.make_model(assert(arg[1], "usage: serve_testing.lua DIR")) end

return M
