-- moonforge.deploy (mf.deploy): putting models to work from recipes.
--
--   local srv = mf.deploy.serve{ model = "out/tiny", port = 0 }
--   local reply = mf.http.post_json(srv.url .. "/v1/chat/completions", { messages = {...} })
--   srv.stop()   -- or leave it: it stops when the handle is collected or the run ends
local M = {}

-- mf.deploy.serve(opts) -> { url =, port =, name =, stop = fn }: the
-- OpenAI-compatible server on C threads in this process (see moonforge.serve
-- for opts).
function M.serve(opts)
  if type(opts) ~= "table" then error("mf.deploy.serve(opts): opts must be a table", 2) end
  return require("moonforge.serve").start(opts)
end

-- mf.deploy.pack(spec): a bundle of a model, from a cell (spec.ctx) or
-- anywhere; see moonforge.bundle.
function M.pack(spec) return require("moonforge.bundle").pack(spec) end

return M
