-- Chat generation with the real SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by
-- datasets/smollm2/fetch.sh): a factual answer, the end-of-turn stop, and
-- batched chat equal to one conversation at a time. Skips, saying so, when
-- the model has not been fetched.
local T = require "testing"
local mf = require "moonforge"

local root = os.getenv("MF_SOURCE_DIR") or "."
local MODEL = root .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

local f = io.open(MODEL, "rb")
if not f then
  print("skip: " .. MODEL .. " is absent (run datasets/smollm2/fetch.sh)")
  return T.done()
end
f:close()

local model, tok = mf.model.load(MODEL), mf.tokenizer.load(MODEL)

local function ask(question) return { { role = "user", content = question } } end

T.test("SmolLM2 knows the capital of France and ends its turn", function()
  local pieces = {}
  local reply, info = model:chat(tok, ask("What is the capital of France?"), { max_tokens = 40,
    on_text = function(piece) pieces[#pieces + 1] = piece end })
  T.truthy(reply:find("Paris", 1, true), "reply mentions Paris: " .. reply)
  T.eq(info.finish_reason, "stop")
  T.truthy(not reply:find("<|im_end|>", 1, true), "the end-of-turn token is not in the reply")
  T.eq(table.concat(pieces), reply)
  T.eq(info.prompt_tokens, #tok:chat(ask("What is the capital of France?"), { add_generation_prompt = true }))
end)

T.test("SmolLM2 chat_batch answers as chat does, one conversation at a time", function()
  local convs = { ask("What is the capital of Italy?"), ask("Say hello.") }
  local opts = { max_tokens = 12, stop = { "\n" } }
  local replies = model:chat_batch(tok, convs, opts)
  for i, messages in ipairs(convs) do
    T.eq(replies[i], (model:chat(tok, messages, opts)), "conversation " .. i)
    T.truthy(not replies[i]:find("\n", 1, true), "cut at the stop string")
  end
end)

return T.done()
