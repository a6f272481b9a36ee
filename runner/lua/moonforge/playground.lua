-- moonforge.playground: `moonforge playground`, a web page that chats with
-- up to three models side by side.
--
--   local pg = require("moonforge.playground").start{ panes = { "out/tiny", "http://host:8000" }, port = 0 }
--   print(pg.url)   --> http://127.0.0.1:PORT/
--   pg.stop()
--
-- Every pane is reached through a proxy route of one front server
-- (engine/server_http.c, routes alone, no model): a local model (a bundle,
-- a folder or a .gguf) gets an OpenAI-compatible server of its own on a
-- free loopback port in this process, and a remote endpoint is called
-- with the API key from the environment, which the page never sees. The
-- page (runner/playground/, compiled into the executable) needs nothing
-- from outside the front server. With a RAG store (index), every local
-- pane's server answers from it and the page shows each reply's sources.
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local serve = require "moonforge.serve"
local chat_cli = require "moonforge.chat_cli"
local rag_store = require "moonforge.rag_store"

local ffi, C = engine.ffi, engine.C

local M = {}

local PAGES = {
  { path = "/", file = "index.html", type = "text/html; charset=utf-8" },
  { path = "/playground.js", file = "playground.js", type = "text/javascript; charset=utf-8" },
  { path = "/playground.css", file = "playground.css", type = "text/css; charset=utf-8" },
}

-- A file of the page: from runner/playground beside MOONFORGE_LUA_PATH when
-- that is set (to work on the page without rebuilding), else the copy
-- compiled in.
local function page_file(name)
  local dev = os.getenv("MOONFORGE_LUA_PATH")
  local f = dev and dev ~= "" and io.open(dev .. "/../playground/" .. name, "rb")
  if f then
    local text = f:read("*a")
    f:close()
    return text
  end
  return assert(__mf_embedded_source("moonforge.playground_assets." .. name:gsub("%.", "_")),
    "the playground's " .. name .. " is not compiled in")
end

-- A pane: what the page is told ({title, kind, source, model, endpoint,
-- upstream for remote ones, index for local ones with a store}) and what
-- the proxy needs. The panes share one store: its queries take turns.
local function open_pane(spec, i, opts, store)
  local endpoint = "proxy/" .. i
  if chat_cli.is_url(spec) then
    local r = chat_cli.remote(spec, opts.model)
    local key = chat_cli.api_key()
    return { info = { title = r.model, kind = "remote", source = r.base, model = r.model, endpoint = endpoint,
      upstream = r.chat }, upstream = r.chat, headers = key and { "Authorization: Bearer " .. key } or {} }
  end
  -- One person at the page: two KV-cache slots are plenty.
  local srv = serve.start({ model = spec, port = 0, host = "127.0.0.1", parallel = 2, index = store,
    top_k = opts.top_k })
  return { info = { title = srv.name, kind = "local", source = host.realpath(spec) or spec, model = srv.name,
    endpoint = endpoint, index = store and (host.realpath(store.dir) or store.dir), top_k = store and opts.top_k },
    upstream = srv.url .. "/v1/chat/completions", headers = {}, server = srv }
end

-- The C routes for mf_server_opts, and the cdata they point into.
local function c_routes(routes)
  local array = ffi.new("mf_server_route[?]", #routes)
  local keep = { array }
  for i, r in ipairs(routes) do
    local c = array[i - 1]
    c.path = r.path
    if r.upstream then
      local lines = ffi.new("const char *[?]", #r.headers + 1)
      for j, line in ipairs(r.headers) do lines[j - 1] = line end
      keep[#keep + 1] = lines
      c.upstream, c.headers = r.upstream, lines
    else
      c.content_type, c.body, c.body_len = r.type, r.body, #r.body
    end
  end
  return array, keep
end

-- The front server: the page, panes.json and one proxy per pane. The
-- server copies its routes, so the Lua strings need to live only through
-- the call.
local function start_front(panes, opts)
  local infos = {}
  for i, p in ipairs(panes) do infos[i] = p.info end
  local config = json.encode({ panes = infos, defaults = { system = opts.system or "",
    temperature = opts.temperature or 0.7, max_tokens = opts.max_tokens or 256 } })
  local routes = { { path = "/panes.json", type = "application/json", body = config } }
  for _, page in ipairs(PAGES) do
    routes[#routes + 1] = { path = page.path, type = page.type, body = page_file(page.file) }
  end
  for i, p in ipairs(panes) do
    local headers = { "Content-Type: application/json", "Accept: text/event-stream" }
    for _, line in ipairs(p.headers) do headers[#headers + 1] = line end
    routes[#routes + 1] = { path = "/proxy/" .. i, upstream = p.upstream, headers = headers }
  end
  local o = ffi.new("mf_server_opts")
  o.host, o.port, o.name = "127.0.0.1", opts.port or 0, "playground"
  local array, keep = c_routes(routes)  -- locals: alive through the call
  o.routes, o.nroutes = array, #routes
  local raw = C.mf_server_start(nil, nil, o)
  if raw == nil then error(engine.errmsg(), 0) end
  return ffi.gc(raw, C.mf_server_stop)
end

-- playground.start{ panes = { MODEL|URL, ... }, port =, model =, system =,
-- temperature =, max_tokens =, index =, top_k = } -> { url =, port =,
-- panes =, stop = fn }. model names the model of URL panes that do not
-- name it (URL#NAME); index is a RAG store (a path or an open store) for
-- the local panes, top_k their sources per reply (4).
function M.start(opts)
  if type(opts) ~= "table" or type(opts.panes) ~= "table" or #opts.panes < 1 or #opts.panes > 3 then
    error("playground.start: panes must list one to three models or URLs", 2)
  end
  local store = type(opts.index) == "string" and rag_store.open(opts.index) or opts.index
  local panes = {}
  local function stop_panes()
    for _, p in ipairs(panes) do
      if p.server then p.server.stop() end
    end
  end
  local ok, front = pcall(function()
    for i, spec in ipairs(opts.panes) do panes[i] = open_pane(spec, i, opts, store) end
    return start_front(panes, opts)
  end)
  if not ok then
    stop_panes()
    error(front, 2)
  end
  local port = C.mf_server_port(front)
  local infos = {}
  for i, p in ipairs(panes) do infos[i] = p.info end
  return { port = port, url = string.format("http://127.0.0.1:%d/", port), panes = infos, store = store,
    stop = function()
      if front then C.mf_server_stop(ffi.gc(front, nil)) end
      front = nil
      stop_panes()
    end }
end

M.usage = [[
moonforge playground MODEL|URL ... [--port 8080] [options]
  Serve a web page on 127.0.0.1 that chats with up to three models side by
  side: local models (a bundle, a model folder or a .gguf; each served in
  this process) and OpenAI-compatible endpoints (URL as for moonforge chat;
  the page reaches them through the playground, which adds the key from
  OPENAI_API_KEY or MOONFORGE_API_KEY). One prompt goes to every pane;
  each pane has its own system prompt, temperature and max tokens, streams
  its replies and shows their token count and latency; "Export as recipe
  cell" turns the session into a Lua cell that replays it. Prints
  "playground on URL" once ready; SIGINT or SIGTERM stops it.
  --port 0 picks a free port. --model NAME for URLs that do not name one
  (URL#NAME). --system TEXT, --temperature X (0.7), --max-tokens N (256):
  the panes' starting settings. --exit-after S stops after S seconds.
  --index STORE (a RAG store folder; see moonforge help serve) makes the
  local panes answer from its --top-k N (4) nearest chunks; the page lists
  each reply's sources under it. A store that cannot be opened exits 2.]]

local SPEC = { port = "value", model = "value", system = "value", temperature = "value", ["max-tokens"] = "value",
  ["exit-after"] = "value", index = "value", ["top-k"] = "value" }

local function number_flag(options, name, whole)
  local v = options[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 or (whole and n % 1 ~= 0) then
    error(string.format("--%s expects %s, got '%s'", name, whole and "a whole number" or "a number >= 0", v), 0)
  end
  return n
end

local function start_options(options, panes)
  local top_k = number_flag(options, "top-k", true)
  local bad_top_k = serve.top_k_problem(top_k, options.index)
  if bad_top_k then error(bad_top_k, 0) end
  return { panes = panes, model = options.model, system = options.system, port = number_flag(options, "port", true) or 8080,
    temperature = number_flag(options, "temperature"), max_tokens = number_flag(options, "max-tokens", true),
    top_k = top_k }
end

-- Sleeps in short slices until a signal or the deadline.
local function wait(deadline)
  while not host.interrupted() and (not deadline or host.clock() < deadline) do C.mf_sleep_ms(100) end
end

function M.command(args)
  local options, panes = require("moonforge.cli").parse_options(args, SPEC)
  local function fail(message, status)
    io.stderr:write("moonforge playground: ", tostring(message), "\n")
    return status or 2
  end
  if not options then return fail(panes) end
  if #panes < 1 or #panes > 3 then return fail("expected one to three MODELs or URLs (see moonforge help playground)") end
  local ok, opts = pcall(start_options, options, panes)
  if not ok then return fail(opts) end
  if options.index then
    ok, opts.index = pcall(rag_store.open, options.index)
    if not ok then return fail(opts.index) end
  end
  local exit_after
  ok, exit_after = pcall(number_flag, options, "exit-after")
  if not ok then return fail(exit_after) end
  local pg
  ok, pg = pcall(M.start, opts)
  if not ok then return fail(pg, 1) end
  io.stdout:write("playground on ", pg.url, "\n")
  io.stdout:flush()
  -- A signal raises "interrupted" inside wait(); either way everything stops.
  pcall(wait, exit_after and host.clock() + exit_after)
  pg.stop()
  io.stderr:write("moonforge playground: stopped\n")
  return 0
end

return M
