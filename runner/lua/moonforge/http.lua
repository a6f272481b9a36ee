-- moonforge.http (mf.http): HTTP(S) requests from recipes, for remote model
-- endpoints such as OpenAI-compatible APIs.
--
--   local reply = mf.http.post_json(url, { model = "m", messages = {...} },
--     { api_key = key, headers = { ["X-Team"] = "nlp" }, timeout = 30, retries = 2 })
--   local models = mf.http.get_json(url, opts)
--   local status, text = mf.http.request("GET", url, { body =, headers =, timeout = })
--   local status = mf.http.stream("POST", url, { body =, on_chunk = function(text) end })
--
-- post_json and get_json return the decoded reply of a 2xx response. Any
-- other status is an error carrying the status and the server's own message
-- (an OpenAI-shaped {"error": {"message": ...}} or the start of the body); a
-- 2xx reply that is not JSON is an error quoting its start; a server that
-- cannot be reached is "cannot reach URL: why". They retry, with backoff
-- doubling from opts.backoff seconds (0.5), only what may pass: connection
-- failures, 429 and 5xx. request and stream make one attempt and return any
-- status. opts.timeout (seconds, default 30) bounds each attempt; api_key
-- becomes "Authorization: Bearer KEY". on_chunk receives the body as it
-- arrives (server-sent events) and may return false to stop.
local engine = require "moonforge.engine"
local json = require "moonforge.json"

local ffi, C = engine.ffi, engine.C

local M = {}

local DEFAULTS = { timeout = 30, retries = 2, backoff = 0.5 }

local function option(opts, name)
  local v = opts and opts[name]
  if v == nil then return DEFAULTS[name] end
  if type(v) ~= "number" or v < 0 then error("http: opts." .. name .. " must be a non-negative number", 0) end
  return v
end

local function check_url(url)
  if type(url) ~= "string" or not url:find("^[hH][tT][tT][pP][sS]?://[^/?#]") then
    error("http: bad URL " .. tostring(url) .. " (expected http:// or https://)", 0)
  end
  if url:find("[%z\1-\32\127]") then error("http: bad URL " .. url .. " (spaces or control characters)", 0) end
end

-- "Key: value" lines from a table of headers, in name order so that a
-- request is the same bytes every time. A line break in a header would let
-- a value forge further headers.
local function header_lines(opts, has_body)
  local headers = {}
  for k, v in pairs(opts and opts.headers or {}) do headers[k] = tostring(v) end
  local function default(name, value)
    for k in pairs(headers) do
      if k:lower() == name:lower() then return end
    end
    headers[name] = value
  end
  if opts and opts.api_key then default("Authorization", "Bearer " .. opts.api_key) end
  if has_body then default("Content-Type", "application/json") end
  default("Accept", "application/json")
  local names = {}
  for k in pairs(headers) do
    if type(k) ~= "string" or not k:find("^[%w!#$%%&'*+.^_`|~-]+$") then
      error("http: bad header name " .. tostring(k), 0)
    end
    if headers[k]:find("[\r\n%z]") then error("http: header " .. k .. " holds a line break", 0) end
    names[#names + 1] = k
  end
  table.sort(names)
  local lines = {}
  for i, k in ipairs(names) do lines[i] = k .. ": " .. headers[k] end
  return lines
end

-- A checked request for the C calls. The header array points into the
-- strings of `lines`, which the request keeps alive with it.
local function prepare(method, url, opts)
  check_url(url)
  local body = opts and opts.body
  if body ~= nil and type(body) ~= "string" then error("http: opts.body must be a string", 0) end
  local lines = header_lines(opts, body ~= nil)
  local headers = ffi.new("const char *[?]", #lines + 1) -- zero-filled: NULL-terminated
  for i, line in ipairs(lines) do headers[i - 1] = line end
  return { method = method, url = url, body = body, body_len = body and #body or 0, lines = lines,
    headers = headers, timeout_ms = option(opts, "timeout") * 1000 }
end

-- One attempt: status and body text, or nil and the engine's message.
local function attempt(req)
  local status, text, len = ffi.new("int[1]"), ffi.new("char *[1]"), ffi.new("size_t[1]")
  if C.mf_http_request(req.method, req.url, req.headers, req.body, req.body_len, req.timeout_ms, status, text,
      len) ~= 0 then
    return nil, engine.errmsg()
  end
  local reply = ffi.string(text[0], len[0])
  C.mf_free(text[0])
  return status[0], reply
end

-- Raises err at the caller of a public function, without a position: what
-- failed is the request, not a line of this file.
local function call(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then error(a, 3) end
  return a, b
end

local function request(method, url, opts)
  local status, text = attempt(prepare(method, url, opts))
  if not status then error(text, 0) end
  return status, text
end

function M.request(method, url, opts)
  local status, text = call(request, method, url, opts)
  return status, text
end

-- A Lua callback from C must not raise through curl's frames: an error is
-- kept, the transfer stopped, and the error raised once C has returned.
-- Runs interpreted: JIT-compiled code cannot call C that calls back into
-- Lua, and the interpreter's stack keeps the request's strings alive while
-- callbacks allocate.
local function stream(method, url, opts)
  local on_chunk = opts and opts.on_chunk
  if type(on_chunk) ~= "function" then error("http.stream: opts.on_chunk must be a function", 0) end
  local req = prepare(method, url, opts)
  local failure
  local callback = ffi.cast("mf_http_chunk_fn", function(_, data, n)
    local ok, more = pcall(on_chunk, ffi.string(data, n))
    if not ok then failure = more end
    return (not ok or more == false) and 1 or 0
  end)
  local status = ffi.new("int[1]")
  local rc = C.mf_http_stream(req.method, req.url, req.headers, req.body, req.body_len, req.timeout_ms, callback,
    nil, status)
  callback:free()
  if failure then error(failure, 0) end
  if rc ~= 0 then error(engine.errmsg(), 0) end
  return status[0]
end
jit.off(stream)

function M.stream(method, url, opts)
  return (call(stream, method, url, opts))
end

local function retryable(status) return status == nil or status == 429 or status >= 500 end

-- The server's own words about a failed request.
local function server_message(text)
  local reply = json.decode(text)
  if type(reply) == "table" then
    local e = reply.error
    if type(e) == "table" and type(e.message) == "string" then return e.message end
    for _, v in ipairs({ e, reply.message, reply.detail }) do
      if type(v) == "string" then return v end
    end
  end
  local trimmed = text:gsub("^%s+", ""):gsub("%s+$", "")
  if trimmed == "" then return "(empty body)" end
  return #trimmed > 200 and trimmed:sub(1, 200) .. "..." or trimmed
end

-- The reply of a 2xx response decoded, retrying what may pass; raises
-- with what went wrong otherwise.
local function json_call(method, url, opts)
  local req = prepare(method, url, opts)
  local retries, backoff = option(opts, "retries"), option(opts, "backoff")
  local status, text
  for k = 1, retries + 1 do
    if k > 1 then C.mf_sleep_ms(backoff * 1000 * 2 ^ (k - 2)) end
    status, text = attempt(req)
    if not retryable(status) then break end
  end
  local tries = retries > 0 and retryable(status) and string.format(" (after %d attempts)", retries + 1) or ""
  if not status then error(text .. tries, 0) end
  if status < 200 or status > 299 then
    error(string.format("%s %s: HTTP %d: %s%s", method, url, status, server_message(text), tries), 0)
  end
  local reply, err = json.decode(text)
  if reply == nil then
    local start = string.format("%q", #text > 80 and text:sub(1, 80) .. "..." or text):gsub("\\\n", "\\n")
    error(string.format("%s %s: HTTP %d reply is not JSON (%s): %s", method, url, status, err, start), 0)
  end
  return reply
end

function M.post_json(url, value, opts)
  local with_body = {}
  for k, v in pairs(opts or {}) do with_body[k] = v end
  with_body.body = json.encode(value)
  return (call(json_call, "POST", url, with_body))
end

function M.get_json(url, opts)
  return (call(json_call, "GET", url, opts))
end

return M
