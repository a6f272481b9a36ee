-- moonforge.chat_cli: `moonforge chat`, a conversation in the terminal with
-- a local model (generated in this process with its chat template) or any
-- OpenAI-compatible endpoint (streamed over server-sent events).
--
-- Lines read from stdin are the user's turns; each reply is written to
-- stdout as it grows, and its token count and time to stderr. /reset,
-- /system TEXT and /exit are commands; end of input ends the chat. Ctrl-C
-- during a reply stops that reply and keeps what was written of it; at the
-- prompt it ends the program. Works the same with stdin a pipe.
--
-- Also the remote side the playground shares: remote(spec) resolves an
-- endpoint, api_key() the key from the environment.
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local http = require "moonforge.http"
local json = require "moonforge.json"

local ffi, C = engine.ffi, engine.C

local M = {}

ffi.cdef [[
typedef void (*mf_chat_sighandler)(int);
mf_chat_sighandler signal(int sig, mf_chat_sighandler handler);
]]
local SIGINT = 2
local SIG_DFL = ffi.cast("mf_chat_sighandler", 0)

M.usage = [[
moonforge chat BUNDLE|MODEL|URL [--system TEXT] [--temperature X] [--max-tokens N] [--model NAME]
  Chat in the terminal with a local model (a bundle, a model folder or a
  .gguf, generated in this process) or an OpenAI-compatible endpoint
  (http(s)://HOST[:PORT] or a base URL ending in /v1; URL#NAME or --model
  names the model, else the endpoint's first in /v1/models; the key comes
  from OPENAI_API_KEY or MOONFORGE_API_KEY). Each line is a turn; replies
  stream to stdout, their token count and time to stderr. Commands: /reset
  (forget the conversation), /system TEXT (set the system prompt; empty
  clears it), /exit. End of input (Ctrl-D) ends the chat; Ctrl-C stops a
  reply. --temperature (0.7; 0 is greedy), --max-tokens (256). Exit
  status 1 when a reply failed (its turn is then dropped), 2 for a bad
  command line.]]

function M.is_url(spec) return type(spec) == "string" and spec:find("^[hH][tT][tT][pP][sS]?://") ~= nil end

function M.api_key()
  local key = os.getenv("OPENAI_API_KEY") or os.getenv("MOONFORGE_API_KEY")
  return key ~= "" and key or nil
end

-- remote("http://host:8000#name", model) -> { chat =, models =, model =,
-- base = }. A URL without a path gets /v1 (the OpenAI SDKs' base URLs end
-- in it); one ending in /chat/completions is taken as it is. The model is
-- the fragment, else model, else the first the endpoint lists.
function M.remote(spec, model)
  local url, fragment = spec:match("^([^#]*)#(.+)$")
  url = (url or spec):gsub("/+$", "")
  local base = url:gsub("/chat/completions$", "")
  if not base:find("^[^:]+://[^/]+/") then base = base .. "/v1" end
  local r = { base = base, chat = base .. "/chat/completions", models = base .. "/models", model = fragment or model }
  if not r.model then
    local ok, list = pcall(http.get_json, r.models, { api_key = M.api_key(), timeout = 10, retries = 0 })
    local first = ok and type(list.data) == "table" and list.data[1]
    if not first or type(first.id) ~= "string" then
      error(string.format("cannot tell which model %s serves (%s); name it with --model or URL#NAME", url,
        ok and "its /v1/models lists none" or tostring(list)), 0)
    end
    r.model = first.id
  end
  return r
end

-- A reader of server-sent events: fed the body piece by piece, it calls
-- on_data with the data of each complete event; on_data returns false to stop.
function M.sse_reader(on_data)
  local buffer = ""
  return function(chunk)
    buffer = (buffer .. chunk):gsub("\r\n", "\n")
    while true do
      local event, rest = buffer:match("^(.-)\n\n(.*)$")
      if not event then return end
      buffer = rest
      local lines = {}
      for line in (event .. "\n"):gmatch("(.-)\n") do
        lines[#lines + 1] = line:match("^data: ?(.*)$")
      end
      if #lines > 0 and on_data(table.concat(lines, "\n")) == false then return false end
    end
  end
end

-- The message of an OpenAI-shaped error body, or the body's start.
local function error_message(text)
  local body = json.decode(text)
  local e = type(body) == "table" and body.error
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return #text > 200 and text:sub(1, 200) .. "..." or text
end

-- A remote conversation partner: reply(messages, opts, on_text) -> text, tokens.
local function remote_partner(spec, model)
  local r = M.remote(spec, model)
  local partner = { name = r.model .. " at " .. r.base }
  function partner.reply(messages, opts, on_text)
    local text, tokens, body = {}, nil, {}
    local read = M.sse_reader(function(data)
      if data == "[DONE]" then return false end
      local event = json.decode(data)
      if type(event) ~= "table" then return end
      if type(event.error) == "table" then error(tostring(event.error.message), 0) end
      local choice = type(event.choices) == "table" and event.choices[1]
      local piece = type(choice) == "table" and type(choice.delta) == "table" and choice.delta.content
      if type(piece) == "string" and piece ~= "" then
        text[#text + 1] = piece
        on_text(piece)
      end
      if type(event.usage) == "table" then tokens = event.usage.completion_tokens end
    end)
    local status = http.stream("POST", r.chat, { api_key = M.api_key(), timeout = 600,
      headers = { Accept = "text/event-stream" },
      body = json.encode({ model = r.model, messages = messages, temperature = opts.temperature,
        max_tokens = opts.max_tokens, stream = true, stream_options = { include_usage = true } }),
      on_chunk = function(chunk)
        if #body < 16 then body[#body + 1] = chunk end  -- the start, for an error status's message
        return read(chunk)
      end })
    if status < 200 or status > 299 then
      error(string.format("%s: HTTP %d: %s", r.chat, status, error_message(table.concat(body))), 0)
    end
    return table.concat(text), tokens or #text
  end
  return partner
end

local function local_partner(path)
  local model, tok = require("moonforge.model").load(path), require("moonforge.tokenizer").load(path)
  local partner = { name = path }
  function partner.reply(messages, opts, on_text)
    local reply, info = model:chat(tok, messages, { temperature = opts.temperature, max_tokens = opts.max_tokens,
      on_text = on_text })
    return reply, info.completion_tokens
  end
  return partner
end

-- The conversation: the system prompt, then the turns so far.
local function messages_of(system, history)
  local messages = {}
  if system ~= "" then messages[1] = { role = "system", content = system } end
  for _, m in ipairs(history) do messages[#messages + 1] = m end
  return messages
end

local function note(...) io.stderr:write(...) end

-- One reply, streamed to stdout. Ctrl-C is armed only while it runs:
-- main.c's handler then turns the signal into the error "interrupted",
-- which generation and streams raise once they have stopped. Returns the
-- text written (all of it, or what came before Ctrl-C).
local function answer(partner, messages, opts, on_signal)
  local written = {}
  local started = host.clock()
  local function on_text(piece)
    written[#written + 1] = piece
    io.stdout:write(piece)
    io.stdout:flush()
  end
  local ok, text, tokens = pcall(function()
    C.signal(SIGINT, on_signal)
    local text, tokens = partner.reply(messages, opts, on_text)
    C.signal(SIGINT, SIG_DFL)
    return text, tokens
  end)
  C.signal(SIGINT, SIG_DFL)
  io.stdout:write("\n")
  io.stdout:flush()
  if ok then
    local seconds = host.clock() - started
    note(string.format("[%d tokens, %.2f s, %.1f tokens/s]\n", tokens, seconds, tokens / math.max(seconds, 1e-9)))
    return text
  end
  if tostring(text):find("interrupted$") then
    note("[stopped]\n")
    return table.concat(written)
  end
  note("error: ", tostring(text), "\n")
end

local function number_option(options, name, default, whole)
  local v = options[name]
  if v == nil then return default end
  local n = tonumber(v)
  if not n or n < 0 or (whole and (n % 1 ~= 0 or n == 0)) then
    error(string.format("--%s expects %s, got '%s'", name, whole and "a whole number > 0" or "a number >= 0", v), 0)
  end
  return n
end

-- Runs the conversation loop until /exit or the end of input; the exit
-- status is 1 when a reply failed.
local function converse(partner, opts, system)
  local interactive = host.isatty(0)
  local on_signal = C.signal(SIGINT, SIG_DFL)
  local history, failures = {}, 0
  if interactive then
    note("chatting with ", partner.name, "; /reset, /system TEXT, /exit; Ctrl-D ends, Ctrl-C stops a reply\n")
  end
  while true do
    if interactive then note("> ") end
    local line = io.stdin:read("*l")
    if not line then
      if interactive then note("\n") end
      break
    end
    local command, rest = line:match("^/(%a+)%s*(.-)%s*$")
    if command == "exit" or command == "quit" then break
    elseif command == "reset" then
      history = {}
      note("(the conversation is forgotten)\n")
    elseif command == "system" then
      system = rest
      note(system == "" and "(no system prompt)\n" or "(system prompt set)\n")
    elseif command then
      note("unknown command /", command, " (/reset, /system TEXT, /exit)\n")
    elseif line:find("%S") then
      history[#history + 1] = { role = "user", content = line }
      local reply = answer(partner, messages_of(system, history), opts, on_signal)
      if reply then history[#history + 1] = { role = "assistant", content = reply }
      else
        history[#history] = nil
        failures = failures + 1
      end
    end
  end
  C.signal(SIGINT, on_signal)
  return failures > 0 and 1 or 0
end

function M.command(args)
  local cli = require "moonforge.cli"
  local options, rest = cli.parse_options(args,
    { system = "value", temperature = "value", ["max-tokens"] = "value", model = "value" })
  local function fail(message, status)
    note("moonforge chat: ", message, "\n")
    return status or 2
  end
  if not options then return fail(rest) end
  if #rest ~= 1 then return fail("expected one BUNDLE, MODEL or URL (see moonforge help chat)") end
  local ok, opts = pcall(function()
    return { temperature = number_option(options, "temperature", 0.7),
      max_tokens = number_option(options, "max-tokens", 256, true) }
  end)
  if not ok then return fail(opts) end
  local partner
  ok, partner = pcall(function()
    if M.is_url(rest[1]) then return remote_partner(rest[1], options.model) end
    return local_partner(rest[1])
  end)
  if not ok then return fail(tostring(partner), 1) end
  return converse(partner, opts, options.system or "")
end

return M
