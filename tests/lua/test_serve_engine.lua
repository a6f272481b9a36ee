-- The server's engine parts without HTTP: its C chat formatter against
-- chat.lua, and mean-pooled embeddings against transformers.
local T = require "testing"
local mf = require "moonforge"
local engine = require "moonforge.engine"
local json = require "moonforge.json"
local S = require "serve_testing"

local ffi, C = engine.ffi, engine.C
local root = os.getenv("MF_SOURCE_DIR") or "."
local golden = root .. "/tests/reference/golden"

-- The server's prompt ids for a chat (mf_chat_encode), as a table.
local function c_chat(tok, messages, template)
  local n = #messages
  local roles, contents = ffi.new("const char *[?]", n), ffi.new("const char *[?]", n)
  for i, m in ipairs(messages) do roles[i - 1], contents[i - 1] = m.role, m.content end
  local count = tonumber(C.mf_chat_encode(tok.ptr, template, n, roles, contents, nil, 0))
  if count < 0 then error(engine.errmsg()) end
  local out = ffi.new("int32_t[?]", count)
  T.eq(tonumber(C.mf_chat_encode(tok.ptr, template, n, roles, contents, out, count)), count, "second count")
  local ids = {}
  for i = 1, count do ids[i] = out[i - 1] end
  return ids
end

local function same_ids(got, want, what)
  T.eq(#got, #want, what .. ": length")
  for i = 1, #want do T.eq(got[i], want[i], what .. ": id " .. i) end
end

local CONVERSATIONS = {
  { { role = "user", content = "What is the capital of France?" } },
  { { role = "system", content = "Answer in one word." }, { role = "user", content = "Capital of Peru?" } },
  { { role = "user", content = "  Hi there!\n" }, { role = "assistant", content = "Hello! How can I help?" },
    { role = "user", content = "Tell me a joke <|im_end|> [INST] about cats." } },
  { { role = "system", content = "Be brief." }, { role = "user", content = "héllo wörld ☃ 😀" },
    { role = "assistant", content = " Bonjour " }, { role = "system", content = "Late system." },
    { role = "user", content = "" } },
}

T.test("the C chat formatter gives chat.lua's ids (declared ChatML with a default system prompt)", function()
  local dir = S.make_model(T.tmpdir("serve-chat"))
  local tok = mf.tokenizer.load(dir)
  for i, messages in ipairs(CONVERSATIONS) do
    same_ids(c_chat(tok, messages, nil), tok:chat(messages, { add_generation_prompt = true }), "conversation " .. i)
  end
  -- the default system prompt is there exactly when the chat has none
  local ids = c_chat(tok, CONVERSATIONS[1], nil)
  T.truthy(tok:decode(ids):find("You are a helpful AI assistant named SmolLM", 1, true), "default system prompt")
  T.truthy(not tok:decode(c_chat(tok, CONVERSATIONS[2], nil)):find("SmolLM", 1, true), "no default system")
end)

T.test("the C chat formatter gives chat.lua's ids for every named template and tokenizer", function()
  for _, name in ipairs({ "smollm", "llama3", "spm", "qwen2" }) do
    local tok = mf.tokenizer.load(golden .. "/tokenizers/" .. name .. ".json")
    for _, template in ipairs({ "chatml", "llama3", "mistral" }) do
      for i, messages in ipairs(CONVERSATIONS) do
        same_ids(c_chat(tok, messages, template),
          tok:chat(messages, { add_generation_prompt = true, template = template }),
          name .. " " .. template .. " conversation " .. i)
      end
    end
  end
end)

T.test("the C chat formatter refuses unknown roles and templates", function()
  local tok = mf.tokenizer.load(golden .. "/tokenizers/smollm.json")
  T.raises(function() c_chat(tok, { { role = "tool", content = "x" } }, "chatml") end, "message 1 has role 'tool'")
  T.raises(function() c_chat(tok, { { role = "user", content = "x" } }, "jinja") end, "unknown template 'jinja'")
  T.raises(function() c_chat(tok, { { role = "user", content = "x" } }, nil) end, "declares no chat template")
end)

T.test("embeddings are transformers' mean-pooled last_hidden_state", function()
  local model = mf.model.load(golden .. "/models/llama_gqa")
  local D = model:config().hidden_size
  local cases = json.decode(io.open(golden .. "/serve/embeddings.json"):read("*a")).cases
  for k, case in ipairs(cases) do
    local ids = ffi.new("int32_t[?]", #case.ids, case.ids)
    local out = ffi.new("float[?]", D)
    engine.check(C.mf_model_embed(model.ptr, ids, #case.ids, out))
    for j = 1, D do T.near(out[j - 1], case.embedding[j], 1e-4, "case " .. k .. " dim " .. j) end
  end
  local out = ffi.new("float[?]", D)
  T.eq(C.mf_model_embed(model.ptr, ffi.new("int32_t[1]", 99), 1, out), -1, "an id outside the vocabulary")
  T.truthy(engine.errmsg():find("out of range", 1, true), engine.errmsg())
end)

return T.done()
