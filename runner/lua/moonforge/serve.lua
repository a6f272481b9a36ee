-- moonforge.serve: the OpenAI-compatible HTTP server (engine/server*.c) and
-- the `moonforge serve` command.
--
--   local srv = require("moonforge.serve").start{ model = "out/tiny", port = 0 }
--   print(srv.url)   --> http://127.0.0.1:PORT
--   srv.stop()       -- also when the handle is collected or Lua closes
--
-- model: a model folder, a .gguf file, a bundle (whatever mf.model.load
-- opens), or a loaded model (then tokenizer is required). tokenizer: a path
-- or a loaded tokenizer (default: the model's path). The server runs on C
-- threads inside this process; while it runs, nothing else may use the
-- model. Other options, all optional: host, port, name, chat_template,
-- parallel, context, max_tokens, default_max_tokens, max_queue, max_body,
-- timeout, max_connections, grace_ms (see mf_server_opts in moonforge.h),
-- and index, a RAG store (its path, or a store from mf.rag.open_store, which
-- must outlive the server) whose chunks chat replies cite, with top_k
-- sources per request (4).
local engine = require "moonforge.engine"
local model_mod = require "moonforge.model"
local tokenizer_mod = require "moonforge.tokenizer"
local rag_store = require "moonforge.rag_store"

local ffi, C = engine.ffi, engine.C

local M = {}

-- Lua option -> mf_server_opts field.
local NUMBERS = { port = "port", parallel = "parallel", context = "context", max_tokens = "max_tokens",
  default_max_tokens = "default_max_tokens", max_queue = "max_queue", max_body = "max_body",
  timeout = "timeout_s", max_connections = "max_connections", grace_ms = "grace_ms", top_k = "top_k" }
local STRINGS = { host = true, name = true, chat_template = true }

local function c_options(opts)
  local o = ffi.new("mf_server_opts")
  for key, field in pairs(NUMBERS) do
    local v = opts[key]
    if v ~= nil then
      if type(v) ~= "number" or v % 1 ~= 0 then error("serve: " .. key .. " must be an integer", 3) end
      o[field] = v
    end
  end
  local keep = {}
  for key in pairs(STRINGS) do
    local v = opts[key]
    if v ~= nil then
      if type(v) ~= "string" then error("serve: " .. key .. " must be a string", 3) end
      keep[#keep + 1] = v
      o[key] = v
    end
  end
  return o, keep
end

-- "models/tiny.gguf" -> "tiny"
local function default_name(path)
  local base = path:gsub("/+$", ""):match("([^/]+)$") or path
  return (base:gsub("%.[^.]+$", ""))
end

-- serve.start(opts) -> { url =, port =, name =, stop = fn }
-- A model, tokenizer or store the server opened itself: its finalizer is
-- taken away, so that it is freed only after the server stops (when Lua closes,
-- cdata finalizers run in no particular order).
local function owned(obj) return ffi.gc(obj.ptr, nil) end

-- serve.start(opts) -> { url =, port =, name =, stop = fn }
function M.start(opts)
  if type(opts) ~= "table" then error("serve.start(opts): opts must be a table", 2) end
  local model, tok = opts.model, opts.tokenizer
  if type(model) ~= "string" and not model_mod.is_model(model) then
    error("serve: model must be a path or a loaded model", 2)
  end
  if type(model) ~= "string" and tok == nil then error("serve: a loaded model needs a tokenizer", 2) end
  local store = opts.index
  if store ~= nil and type(store) ~= "string" and not rag_store.is_store(store) then
    error("serve: index must be the path of a RAG store or a store from mf.rag.open_store", 2)
  end
  local o, keep = c_options(opts)
  local name = opts.name or (type(model) == "string" and default_name(model)) or "moonforge"
  o.name = name
  if type(store) == "string" then store = rag_store.open(store) end
  if type(tok) == "string" or tok == nil then tok = tokenizer_mod.load(tok or model) end
  if type(model) == "string" then model = model_mod.load(model) end
  local own_model, own_tok = model ~= opts.model and owned(model), tok ~= opts.tokenizer and owned(tok)
  local own_store = store ~= opts.index and owned(store)
  local function free_owned()
    if own_model then C.mf_model_free(own_model) end
    if own_tok then C.mf_tokenizer_free(own_tok) end
    if own_store then C.mf_retriever_free(own_store) end
    own_model, own_tok, own_store = nil, nil, nil
  end
  if store then o.retriever = store.ptr end
  local raw = C.mf_server_start(model.ptr, tok.ptr, o)
  if raw == nil then
    local err = engine.errmsg()
    free_owned()
    error(err, 2)
  end
  -- One way down for stop() and the finalizer. The finalizer must not
  -- refer to the server's cdata (that would keep it alive for ever); its
  -- upvalues keep a caller's model and tokenizer alive while it runs.
  local stopped = false
  local function stop_server(p)
    if stopped then return end
    stopped = true
    C.mf_server_stop(p)
    free_owned()
    return model, tok, keep, store
  end
  local ptr = ffi.gc(raw, stop_server)
  local port = C.mf_server_port(ptr)
  return { port = port, name = name, url = string.format("http://%s:%d", opts.host or "127.0.0.1", port),
    stop = function()
      if not stopped then stop_server(ffi.gc(ptr, nil)) end
    end }
end

M.usage = [[
moonforge serve MODEL [--host 127.0.0.1] [--port 8000] [--name NAME] [options]
  Serve MODEL (a bundle, a model folder or a .gguf file) over an
  OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions,
  /v1/chat/completions (stream: true for server-sent events),
  /v1/embeddings, GET /health and /metrics (Prometheus). Requests in flight
  are decoded together, one token each per step. Prints "listening on URL"
  once ready; SIGINT or SIGTERM stops it (in-flight requests get --grace
  seconds to finish) with exit status 0.
  --port 0 picks a free port. --name is the model id (default: the file
  name). --tokenizer PATH (default: MODEL). --chat-template chatml|llama3|
  mistral (default: the tokenizer's). --parallel N sequences decoded
  together (8); --ctx N positions per sequence (the model's, at most 2048);
  --max-tokens N largest max_tokens accepted; --default-max-tokens N (256);
  --max-queue N waiting requests before 429 (64); --max-body BYTES before
  413 (1048576); --timeout S idle connections closed (30);
  --max-connections N (256); --grace S (5); --exit-after S stops the
  server after S seconds (for tests).
  --index STORE (a RAG store folder, NAME.mfrag; see mf.rag.save_store):
  a chat's last user message is looked up with the store's encoder, and
  the --top-k N (4) nearest chunks go before the conversation as numbered
  sources the model is asked to cite; replies carry them as "sources". A
  request may set "top_k" or send "retrieval": false. A store that cannot
  be opened exits 2.]]

local SPEC = { host = "value", port = "value", name = "value", tokenizer = "value", ["chat-template"] = "value",
  parallel = "value", ctx = "value", ["max-tokens"] = "value", ["default-max-tokens"] = "value",
  ["max-queue"] = "value", ["max-body"] = "value", timeout = "value", ["max-connections"] = "value",
  grace = "value", ["exit-after"] = "value", index = "value", ["top-k"] = "value" }

-- command-line option -> start() option, for the integer ones.
local INTEGER_FLAGS = { port = "port", parallel = "parallel", ctx = "context", ["max-tokens"] = "max_tokens",
  ["default-max-tokens"] = "default_max_tokens", ["max-queue"] = "max_queue", ["max-body"] = "max_body",
  timeout = "timeout", ["max-connections"] = "max_connections", ["top-k"] = "top_k" }

-- What is wrong with a command line's --top-k given its --index, or nil.
function M.top_k_problem(top_k, index)
  if top_k and not index then return "--top-k needs --index" end
  if top_k and (top_k < 1 or top_k > 64) then return "--top-k expects 1 to 64" end
end

local function fail(message)
  io.stderr:write("moonforge serve: ", message, "\n")
  return 2
end

-- Splits "--name value" / "--name=value" options from the one MODEL.
local function parse_args(args)
  local options, rest = {}, {}
  local i = 1
  while i <= #args do
    local name, value = args[i]:match("^%-%-([%w-]+)=(.*)$")
    name = name or args[i]:match("^%-%-([%w-]+)$")
    if name then
      if not SPEC[name] then return nil, "unknown option --" .. name end
      if not value then
        i = i + 1
        value = args[i]
        if not value then return nil, "--" .. name .. " needs a value" end
      end
      options[name] = value
    else
      rest[#rest + 1] = args[i]
    end
    i = i + 1
  end
  if #rest ~= 1 then return nil, "expected one MODEL (see moonforge help serve)" end
  return options, rest[1]
end

local function start_options(options, path)
  local opts = { model = path, tokenizer = options.tokenizer, host = options.host, name = options.name,
    chat_template = options["chat-template"], port = 8000 }
  for flag, key in pairs(INTEGER_FLAGS) do
    if options[flag] then
      local n = tonumber(options[flag])
      if not n or n % 1 ~= 0 or n < 0 then return nil, "--" .. flag .. " expects a whole number" end
      opts[key] = n
    end
  end
  for _, flag in ipairs({ "grace", "exit-after" }) do
    if options[flag] and (not tonumber(options[flag]) or tonumber(options[flag]) < 0) then
      return nil, "--" .. flag .. " expects a number of seconds"
    end
  end
  if options.grace then opts.grace_ms = math.floor(tonumber(options.grace) * 1000 + 0.5) end
  local bad_top_k = M.top_k_problem(opts.top_k, options.index)
  if bad_top_k then return nil, bad_top_k end
  return opts
end

-- Sleeps in short slices until a signal or the deadline.
local function wait(deadline)
  local host = require "moonforge.host"
  while not host.interrupted() and (not deadline or host.clock() < deadline) do C.mf_sleep_ms(100) end
end

function M.command(args)
  local options, path = parse_args(args)
  if not options then return fail(path) end
  local opts, err = start_options(options, path)
  if not opts then return fail(err) end
  if options.index then
    local opened, store = pcall(rag_store.open, options.index)
    if not opened then return fail(store) end
    opts.index = store
  end
  local ok, srv = pcall(M.start, opts)
  if not ok then
    io.stderr:write("moonforge serve: ", tostring(srv), "\n")
    return 1
  end
  io.stdout:write("listening on ", srv.url, "\n")
  io.stdout:flush()
  local host = require "moonforge.host"
  local exit_after = tonumber(options["exit-after"])
  -- A signal raises "interrupted" inside wait(); either way the server stops.
  pcall(wait, exit_after and host.clock() + exit_after)
  srv.stop()
  io.stderr:write("moonforge serve: stopped\n")
  return 0
end

return M
