-- The server in this process (mf.deploy.serve) over loopback with mf.http
-- (libcurl): every endpoint, replies equal to model:generate / model:chat
-- on a second copy of the model, streaming, and hostile requests.
local T = require "testing"
local mf = require "moonforge"
local engine = require "moonforge.engine"
local json = require "moonforge.json"
local S = require "serve_testing"

local ffi, C = engine.ffi, engine.C

local dir = S.make_model(T.tmpdir("serve"))
local tok = mf.tokenizer.load(dir)
local reference = mf.model.load(dir)  -- the server owns its own copy
local srv = mf.deploy.serve({ model = dir, name = "tiny", parallel = 4, max_body = 65536, context = 128 })
local url = srv.url

local function post(path, value)
  local body = type(value) == "string" and value or json.encode(value)
  local status, text = mf.http.request("POST", url .. path, { body = body,
    headers = { ["Content-Type"] = "application/json" } })
  return status, json.decode(text) or text
end

local function ok_post(path, value)
  local status, reply = post(path, value)
  T.eq(status, 200, "status of " .. path .. " (" .. json.encode(reply) .. ")")
  return reply
end

-- The error of a refused request: status, then error.{type, param, code}.
local function refused(path, value, status, param, code)
  local got, reply = post(path, value)
  T.eq(got, status, "status for " .. (type(value) == "string" and value:sub(1, 60) or json.encode(value)))
  T.eq(type(reply), "table", "a JSON error")
  T.eq(type(reply.error.message), "string", "error.message")
  T.eq(reply.error.type, "invalid_request_error", "error.type")
  if param then T.eq(reply.error.param, param, "error.param") end
  if code then T.eq(reply.error.code, code, "error.code") end
  return reply.error.message
end

local HELLO = { { role = "user", content = "What is the capital of France?" } }

-- s with each byte that does not belong to a UTF-8 character replaced by
-- U+FFFD, as JSON replies must carry characters (a random model emits any
-- bytes).
local function utf8_clean(s)
  local out, i = {}, 1
  while i <= #s do
    local b = s:byte(i)
    local size = b < 0x80 and 1 or (b >= 0xC2 and b < 0xE0) and 2 or (b >= 0xE0 and b < 0xF0) and 3
      or (b >= 0xF0 and b < 0xF5) and 4 or 0
    local char = size > 0 and s:sub(i, i + size - 1)
    if char and #char == size and not char:sub(2):find("[^\128-\191]") then
      out[#out + 1] = char
      i = i + size
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end

T.test("health and models", function()
  T.eq(mf.http.get_json(url .. "/health").status, "ok")
  local models = mf.http.get_json(url .. "/v1/models")
  T.eq(models.object, "list")
  T.eq(models.data[1].id, "tiny")
end)

T.test("a greedy completion is model:generate's, from a string or a token list", function()
  local ids = tok:encode("The quick brown fox", { add_special = true })
  local new = reference:generate(ids, { max_tokens = 10 })
  local want = tok:decode(new, { skip_special = true })
  local reply = ok_post("/v1/completions", { model = "tiny", prompt = "The quick brown fox", max_tokens = 10,
    temperature = 0 })
  T.eq(reply.object, "text_completion")
  T.eq(reply.model, "tiny")
  T.eq(reply.choices[1].text, utf8_clean(want))
  T.eq(reply.usage.prompt_tokens, #ids)
  T.eq(reply.usage.completion_tokens, #new)
  T.eq(reply.usage.total_tokens, #ids + #new)
  T.eq(ok_post("/v1/completions", { prompt = ids, max_tokens = 10, temperature = 0 }).choices[1].text, utf8_clean(want))
end)

T.test("chat replies are model:chat's, greedy and sampled with a seed", function()
  for _, opts in ipairs({ { temperature = 0 }, { temperature = 0.9, top_p = 0.8, seed = 11 } }) do
    local want, info = reference:chat(tok, HELLO, { max_tokens = 12, temperature = opts.temperature,
      top_p = opts.top_p, seed = opts.seed })
    local reply = ok_post("/v1/chat/completions", { model = "tiny", messages = HELLO, max_tokens = 12,
      temperature = opts.temperature, top_p = opts.top_p, seed = opts.seed })
    T.eq(reply.object, "chat.completion")
    T.eq(reply.choices[1].message.role, "assistant")
    T.eq(reply.choices[1].message.content, utf8_clean(want))
    T.eq(reply.choices[1].finish_reason, info.finish_reason)
    T.eq(reply.usage.prompt_tokens, info.prompt_tokens)
    T.eq(reply.usage.completion_tokens, info.completion_tokens)
  end
end)

T.test("stop strings cut the reply before them, as model:chat does", function()
  local full = reference:chat(tok, HELLO, { max_tokens = 12, temperature = 0 })
  local stop = full:sub(math.floor(#full / 2), math.floor(#full / 2) + 1)
  local want, info = reference:chat(tok, HELLO, { max_tokens = 12, temperature = 0, stop = { "zzz", stop } })
  local reply = ok_post("/v1/chat/completions", { messages = HELLO, max_tokens = 12, temperature = 0,
    stop = { "zzz", stop } })
  T.eq(reply.choices[1].message.content, utf8_clean(want))
  T.eq(reply.choices[1].finish_reason, "stop")
  T.eq(info.finish_reason, "stop")
  T.truthy(#want < #full, "the reply was cut")
end)

-- The events of a streamed request, decoded, and the raw text.
local function stream(path, value)
  local raw = {}
  local status = mf.http.stream("POST", url .. path, { body = json.encode(value),
    on_chunk = function(piece) raw[#raw + 1] = piece end })
  T.eq(status, 200, "stream status")
  local text = table.concat(raw)
  local events = {}
  for data in text:gmatch("data: ([^\n]*)\n\n") do events[#events + 1] = data end
  return events, text
end

T.test("streamed chat: OpenAI chunks whose deltas add up to the reply, then [DONE]", function()
  local want = ok_post("/v1/chat/completions", { messages = HELLO, max_tokens = 12, temperature = 0 })
  local events = stream("/v1/chat/completions", { messages = HELLO, max_tokens = 12, temperature = 0,
    stream = true, stream_options = { include_usage = true } })
  T.eq(events[#events], "[DONE]")
  local first = json.decode(events[1])
  T.eq(first.object, "chat.completion.chunk")
  T.eq(first.choices[1].delta.role, "assistant")
  local pieces, finish, usage = {}, nil, nil
  for i = 1, #events - 1 do
    local chunk = json.decode(events[i])
    if chunk.usage then usage = chunk.usage
    else
      pieces[#pieces + 1] = chunk.choices[1].delta.content or ""
      finish = chunk.choices[1].finish_reason or finish
    end
  end
  T.eq(table.concat(pieces), want.choices[1].message.content)
  T.eq(finish, want.choices[1].finish_reason)
  T.eq(usage.completion_tokens, want.usage.completion_tokens)
  -- One event per token as it is published, however fast they come (a
  -- piece merges with the next only while it ends inside a character).
  local texts = 0
  for _, p in ipairs(pieces) do texts = texts + (p ~= "" and 1 or 0) end
  T.truthy(texts >= usage.completion_tokens / 2,
    string.format("%d text events for %d tokens", texts, usage.completion_tokens))
end)

T.test("streamed completion", function()
  local want = ok_post("/v1/completions", { prompt = "Once upon", max_tokens = 9, temperature = 0 })
  local events = stream("/v1/completions", { prompt = "Once upon", max_tokens = 9, temperature = 0, stream = true })
  local pieces = {}
  for i = 1, #events - 1 do pieces[#pieces + 1] = json.decode(events[i]).choices[1].text end
  T.eq(table.concat(pieces), want.choices[1].text)
  T.eq(events[#events], "[DONE]")
end)

T.test("embeddings: one per input, mf_model_embed's values", function()
  local reply = ok_post("/v1/embeddings", { model = "tiny", input = { "hello there", "general kenobi" } })
  T.eq(reply.object, "list")
  T.eq(#reply.data, 2)
  local D = reference:config().hidden_size
  for i, text in ipairs({ "hello there", "general kenobi" }) do
    local ids = tok:encode(text, { add_special = true })
    local out = ffi.new("float[?]", D)
    engine.check(C.mf_model_embed(reference.ptr, ffi.new("int32_t[?]", #ids, ids), #ids, out))
    T.eq(reply.data[i].index, i - 1)
    T.eq(#reply.data[i].embedding, D)
    for j = 1, D do T.near(reply.data[i].embedding[j], out[j - 1], 1e-6, "input " .. i .. " dim " .. j) end
  end
  T.eq(#ok_post("/v1/embeddings", { input = "one" }).data, 1)
  -- base64: the float32 bytes, as the openai client asks by default
  local floats = ok_post("/v1/embeddings", { input = "one" }).data[1].embedding
  local packed = ok_post("/v1/embeddings", { input = "one", encoding_format = "base64" }).data[1].embedding
  local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local bytes = {}
  for quad in packed:gmatch("....") do
    local w = 0
    for k = 1, 4 do w = w * 64 + math.max(0, (b64:find(quad:sub(k, k), 1, true) or 1) - 1) end
    bytes[#bytes + 1] = string.char(math.floor(w / 65536) % 256, math.floor(w / 256) % 256, w % 256)
  end
  local raw = table.concat(bytes):sub(1, 4 * D)
  local view = ffi.cast("const float *", raw)
  for j = 1, D do T.eq(view[j - 1], floats[j], "base64 dim " .. j) end
end)

T.test("hostile requests get OpenAI-shaped 4xx errors", function()
  local C_ = "/v1/completions"
  local CH = "/v1/chat/completions"
  refused(C_, '{"prompt": "hi", ', 400, nil, "invalid_json")
  refused(C_, "[1, 2]", 400, nil, "invalid_json")
  refused(C_, "", 400, nil, "invalid_json")
  refused(C_, '{"prompt": "a", "prompt": "b"}', 400, nil, "invalid_json")
  refused(C_, '{"prompt": "\255\254 bad utf-8"}', 400, nil, "invalid_json")
  refused(C_, { max_tokens = 5 }, 400, "prompt", "missing_field")
  refused(C_, { prompt = 42 }, 400, "prompt", "invalid_type")
  refused(C_, { prompt = { 1, 2, 1e6 } }, 400, "prompt", "invalid_value")
  refused(C_, { prompt = "" }, 400, "prompt", "invalid_value")
  refused(C_, { prompt = string.rep("word ", 300) }, 400, "prompt", "context_length_exceeded")
  refused(C_, { prompt = "hi", max_tokens = -1 }, 400, "max_tokens", "invalid_value")
  refused(C_, { prompt = "hi", max_tokens = 1e6 }, 400, "max_tokens", "invalid_value")
  refused(C_, { prompt = "hi", max_tokens = "5" }, 400, "max_tokens", "invalid_type")
  refused(C_, { prompt = "hi", max_tokens = 2.5 }, 400, "max_tokens", "invalid_type")
  refused(C_, { prompt = "hi", temperature = "hot" }, 400, "temperature", "invalid_type")
  refused(C_, { prompt = "hi", temperature = -1 }, 400, "temperature", "invalid_value")
  refused(C_, { prompt = "hi", top_p = 0 }, 400, "top_p", "invalid_value")
  refused(C_, { prompt = "hi", n = 2 }, 400, "n", "invalid_value")
  refused(C_, { prompt = "hi", stream = "yes" }, 400, "stream", "invalid_type")
  refused(C_, { prompt = "hi", stop = 5 }, 400, "stop", "invalid_type")
  refused(C_, { prompt = "hi", stop = { "a", "b", "c", "d", "e" } }, 400, "stop", "invalid_type")
  refused(C_, { prompt = "hi", stop = { "" } }, 400, "stop", "invalid_value")
  refused(C_, { prompt = "hi", model = "gpt-4" }, 404, "model", "model_not_found")
  refused(C_, { prompt = "hi", model = 7 }, 400, "model", "invalid_type")
  refused(CH, { max_tokens = 5 }, 400, "messages", "missing_field")
  refused(CH, { messages = "hi" }, 400, "messages", "invalid_type")
  refused(CH, { messages = {} }, 400, "messages", "invalid_type")
  refused(CH, { messages = { "hi" } }, 400, "messages[0]", "invalid_type")
  refused(CH, { messages = { { role = "user" } } }, 400, "messages[0]", "invalid_type")
  refused(CH, { messages = { { role = "user", content = 5 } } }, 400, "messages[0]", "invalid_type")
  refused(CH, { messages = { { role = "wizard", content = "x" } } }, 400, "messages[0]", "invalid_value")
  refused(CH, { messages = HELLO, model = "nope" }, 404, "model", "model_not_found")
  refused("/v1/embeddings", { model = "tiny" }, 400, "input", "missing_field")
  refused("/v1/embeddings", { input = {} }, 400, "input", "invalid_type")
  refused("/v1/embeddings", { input = { "a", 5 } }, 400, "input[1]", "invalid_type")
  refused("/v1/embeddings", { input = "a", encoding_format = "int8" }, 400, "encoding_format", "unsupported_value")
  local message = refused(C_, '{"prompt": "' .. string.rep("a", 70000) .. '"}', 413, nil, "body_too_large")
  T.truthy(message:find("65536", 1, true), message)
  local status, text = mf.http.request("GET", url .. "/v1/chat/completions")
  T.eq(status, 405)
  T.eq(json.decode(text).error.code, "method_not_allowed")
  status = mf.http.request("GET", url .. "/v2/anything")
  T.eq(status, 404)
  -- still serving
  T.eq(ok_post(C_, { prompt = "still", max_tokens = 2 }).object, "text_completion")
end)

T.test("metrics count requests by endpoint and status, tokens, the queue and active sequences", function()
  local status, text = mf.http.request("GET", url .. "/metrics")
  T.eq(status, 200)
  T.truthy(text:find('moonforge_requests_total{endpoint="/v1/chat/completions",status="200"}', 1, true), text)
  T.truthy(text:find('moonforge_requests_total{endpoint="/v1/completions",status="413"} 1', 1, true), "413 count")
  T.truthy(text:find('moonforge_requests_total{endpoint="/v1/completions",status="404"} 1', 1, true), "404 count")
  local embeddings = text:match('moonforge_request_duration_seconds_count{endpoint="/v1/embeddings"} (%d+)')
  T.eq(tonumber(embeddings), 8, "embeddings requests: 4 answered, 4 refused")
  T.truthy(text:match("moonforge_completion_tokens_total (%d+)"), "completion tokens")
  T.eq(text:match("moonforge_queue_length (%d+)"), "0")
  T.eq(text:match("moonforge_active_sequences (%d+)"), "0")
end)

T.test("stop() or collecting the handle ends the server; another starts on the same model", function()
  srv.stop()
  srv.stop()
  T.truthy(not pcall(mf.http.request, "GET", url .. "/health", { timeout = 2 }), "no longer listening")
  local again = mf.deploy.serve({ model = reference, tokenizer = tok, port = 0 })
  T.eq(mf.http.get_json(again.url .. "/health").status, "ok")
  T.raises(function() mf.deploy.serve({ model = dir, chat_template = "jinja" }) end, "unknown template 'jinja'")
  T.raises(function() mf.deploy.serve({ model = dir, context = 100000 }) end, "exceeds the model's")
  again.stop()
  local dropped = mf.deploy.serve({ model = reference, tokenizer = tok }).url
  collectgarbage()
  collectgarbage()
  T.truthy(not pcall(mf.http.request, "GET", dropped .. "/health", { timeout = 2 }), "stopped once collected")
end)

return T.done()
