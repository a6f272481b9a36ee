-- moonforge.ctx: what a cell function receives as its first argument.
--
--   ctx.params, ctx.seed, ctx.run_dir, ctx.title, ctx.index
--   ctx.key                 the cell's cache key (a hex SHA-256), e.g. to name
--                           state that must outlive a killed run
--   ctx.rng                 this cell's random numbers (see rng below)
--   ctx:print(...)          like print; the global print does the same while a cell runs
--   ctx:metric(name, value [, step [, {timing = true}]])
--   ctx:table{ title =, columns = {...}, rows = {{...}, ...} }
--   ctx:plot(spec)          an SVG plot (moonforge.plot spec)
--   ctx:metric(name, value [, step])
--   ctx:progress(total [, label]) -> a progress bar (moonforge.progress)
--   ctx:artifact(path [, name])   copies a file into the run's artifacts/
--   ctx:tmpdir()            a scratch folder of this cell inside the run
--
-- Everything a cell shows goes into its output list (the run record's
-- cell.outputs, in order) and is echoed to the terminal. Captured text is
-- made valid UTF-8 so that the record always encodes as JSON.
local cache = require "moonforge.cache"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local plot = require "moonforge.plot"
local progress = require "moonforge.progress"
local textable = require "moonforge.textable"

local utf8_clean = textable.utf8_clean

local M = {}

------------------------------------------------------------------------
-- rng: the engine's counter-based generator, one stream per (seed, name),
-- so a cell's numbers depend on neither the other cells nor the cache.
------------------------------------------------------------------------
local Rng = {}
Rng.__index = Rng

function M.rng(seed, name)
  local state = engine.ffi.new("mf_rng")
  engine.C.mf_rng_init(state, seed, engine.hash64(name))
  return setmetatable({ state = state }, Rng)
end

-- uniform() in [0, 1); uniform(a, b) in [a, b).
function Rng:uniform(a, b)
  local u = engine.C.mf_rng_uniform(self.state)
  if a then return a + (b - a) * u end
  return u
end

function Rng:normal(mean, sd)
  return (mean or 0) + (sd or 1) * engine.C.mf_rng_normal(self.state)
end

-- An integer in [lo, hi], both included.
function Rng:int(lo, hi)
  assert(hi >= lo, "rng:int(lo, hi) needs lo <= hi")
  return lo + math.floor(engine.C.mf_rng_uniform(self.state) * (hi - lo + 1))
end

-- Shuffles the sequence t in place (Fisher-Yates) and returns it.
function Rng:shuffle(t)
  for i = #t, 2, -1 do
    local j = self:int(1, i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

------------------------------------------------------------------------
-- Outputs
------------------------------------------------------------------------

-- The terminal text of an output entry; nil for metrics, which would drown
-- the terminal (they show in progress bars and in the run's summary).
function M.output_text(o)
  if o.kind == "text" then return o.text end
  if o.kind == "table" then return textable.text(o) .. "\n" end
  if o.kind == "plot" then return "[plot" .. (o.title and (": " .. o.title) or "") .. "]\n" end
  if o.kind == "artifact" then return "[artifact: " .. o.path .. "]\n" end
  if o.kind == "error" then return o.message .. "\n" .. (o.traceback or "") .. "\n" end
end

local Ctx = {}
Ctx.__index = Ctx

-- run provides: dir, terminal (a file to echo to), on_metric(m).
function M.new(run, cell, params, seed)
  return setmetatable({ params = params, seed = seed, run_dir = run.dir, title = cell.title,
    index = cell.index, key = cell.key, rng = M.rng(seed, cell.title), run = run, cell = cell, artifacts = {} }, Ctx)
end

-- Adds an output entry to the cell (merging consecutive text) and echoes it.
function Ctx:emit(o)
  local text = M.output_text(o)
  if text then
    -- Flushed now, so a long cell's output shows as it goes even in a log.
    self.run.terminal:write(text)
    self.run.terminal:flush()
  end
  if o.kind == "metric" then
    self.run.on_metric({ name = o.name, value = o.value, step = o.step, time = host.time(), cell = self.title,
      timing = o.timing })
  end
  local outputs = self.cell.outputs
  local last = outputs[#outputs]
  if o.kind == "text" and last and last.kind == "text" then
    last.text = last.text .. o.text
  else
    outputs[#outputs + 1] = o
  end
end

function Ctx:print(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  self:emit({ kind = "text", text = utf8_clean(table.concat(parts, "\t") .. "\n") })
end

local function cell_text(v)
  if type(v) == "number" then return v end
  if v == nil then return "" end
  return utf8_clean(tostring(v))
end

-- A copy of tbl in the record's shape: every row as long as the columns,
-- cells numbers or text.
local function normalize_table(tbl)
  if type(tbl) ~= "table" or type(tbl.columns) ~= "table" or type(tbl.rows) ~= "table" then
    error("ctx:table expects { title =, columns = {...}, rows = { {...}, ... } }", 3)
  end
  local columns, rows = json.array(), json.array()
  for i, c in ipairs(tbl.columns) do columns[i] = utf8_clean(tostring(c)) end
  for r, row in ipairs(tbl.rows) do
    if type(row) ~= "table" then error("ctx:table: row " .. r .. " is not a table", 3) end
    local copy = json.array()
    for i = 1, #columns do copy[i] = cell_text(row[i]) end
    rows[r] = copy
  end
  return { kind = "table", title = tbl.title and utf8_clean(tostring(tbl.title)), columns = columns,
    rows = rows }
end

function Ctx:table(tbl)
  self:emit(normalize_table(tbl))
end

function Ctx:plot(spec)
  local ok, svg = pcall(plot.svg, spec)
  if not ok then error("ctx:plot: " .. tostring(svg):gsub("^[^:]*:%d+: ", ""), 2) end
  self:emit({ kind = "plot", title = type(spec.title) == "string" and spec.title or nil, svg = svg })
end

-- opts.timing marks a measurement of speed (tokens/s, seconds): recorded
-- like any metric, but `reproduce` does not expect it to repeat.
function Ctx:metric(name, value, step, opts)
  if type(name) ~= "string" or name == "" then error("ctx:metric: the name must be a non-empty string", 2) end
  if type(value) ~= "number" then
    error("ctx:metric('" .. name .. "'): the value must be a number, got " .. type(value), 2)
  end
  if step ~= nil and type(step) ~= "number" then error("ctx:metric('" .. name .. "'): step must be a number", 2) end
  self:emit({ kind = "metric", name = name, value = value, step = step, timing = opts and opts.timing or nil })
end

function Ctx:progress(total, label)
  return progress.new({ total = total, label = label or self.title, stream = io.stderr })
end

function Ctx:artifact(path, name)
  if host.kind(path) ~= "file" then error("ctx:artifact: no file " .. tostring(path), 2) end
  name = name or path:match("([^/]+)$")
  if name:find("/") or name == "." or name == ".." then
    error("ctx:artifact: the name must be a plain file name, got '" .. name .. "'", 2)
  end
  local dest = self.run.dir .. "/artifacts/" .. name
  cache.copy_file(path, dest)
  self.artifacts[name] = dest
  self:emit({ kind = "artifact", name = name, path = "artifacts/" .. name })
end

function Ctx:tmpdir()
  local dir = string.format("%s/tmp/%02d", self.run.dir, self.index)
  assert(host.mkdir_p(dir))
  return dir
end

-- Replays outputs recorded in an earlier run, as the cell produced them.
function Ctx:replay(outputs)
  for _, o in ipairs(outputs) do self:emit(o) end
end

return M
