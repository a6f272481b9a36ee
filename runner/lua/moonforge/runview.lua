-- moonforge.runview: the facts of a run record that both the notebook and
-- the HTML report show, as short strings and textable tables, so the two
-- documents always say the same thing. The record is the one the cell
-- executor builds (see moonforge.notebook for its shape).
local json = require "moonforge.json"
local textable = require "moonforge.textable"

local M = {}

-- A parameter value as one short string; tables as compact JSON.
function M.value_text(v)
  if type(v) == "table" then return json.encode(v) end
  return textable.format_value(v)
end

-- "lr=0.001, n=1000", keys sorted so the text does not depend on hashing.
function M.params_text(params)
  local keys = {}
  for k in pairs(params or {}) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = k .. "=" .. M.value_text(params[k]) end
  return table.concat(parts, ", ")
end

-- Wall-clock time in UTC, the same wherever the document is rendered.
function M.when(t)
  if type(t) ~= "number" then return "" end
  return os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(t))
end

function M.platform_text(p)
  if type(p) ~= "table" then return "" end
  local parts = {}
  for _, k in ipairs({ "os", "machine", "cpu" }) do
    if p[k] and p[k] ~= "" then parts[#parts + 1] = tostring(p[k]) end
  end
  return table.concat(parts, ", ")
end

function M.engine_text(record)
  local v = "moonforge " .. tostring(record.engine_version or "?")
  if record.git_commit and record.git_commit ~= "" then v = v .. " (" .. record.git_commit .. ")" end
  return v
end

-- The run at a glance: one row per fact.
function M.summary(record)
  local rows = {
    { "run", record.run_id }, { "recipe", record.recipe_path or record.name },
    { "status", record.status }, { "params", M.params_text(record.params) }, { "seed", record.seed },
    { "started", M.when(record.started) }, { "duration", textable.duration(record.duration) },
    { "engine", M.engine_text(record) }, { "platform", M.platform_text(record.platform) },
    { "threads", record.threads }, { "recipe sha256", record.recipe_sha256 },
  }
  return { columns = { "field", "value" }, rows = rows }
end

function M.cells(record)
  local rows = {}
  for i, cell in ipairs(record.cells or {}) do
    rows[i] = { cell.index or i, cell.title, cell.status, cell.cache_hit and "hit" or "",
      textable.duration(cell.duration) }
  end
  return { columns = { "#", "cell", "status", "cache", "duration" }, rows = rows }
end

-- Short facts about one cell: status, cache hit, duration, what it uses.
function M.cell_facts(cell)
  local facts = { cell.status or "not run" }
  if cell.cache_hit then facts[#facts + 1] = "cache hit" end
  if type(cell.duration) == "number" then facts[#facts + 1] = textable.duration(cell.duration) end
  if cell.uses and #cell.uses > 0 then
    local names = {}
    for i, u in ipairs(cell.uses) do names[i] = tostring(u) end
    facts[#facts + 1] = "uses " .. table.concat(names, ", ")
  end
  return facts
end

-- An artifact as a link relative to the run folder, where the notebook and
-- the report are written.
function M.artifact_html(o)
  local e = textable.escape_html
  return string.format('<p>artifact: <a href="%s">%s</a></p>', e(o.path or o.name), e(o.name or o.path))
end

-- Metric points ({ name, value, step, cell }) grouped by name, in order of
-- first appearance; each group keeps its points and its last point.
function M.fold_metrics(points)
  local groups, by_name = {}, {}
  for _, p in ipairs(points) do
    local g = by_name[p.name]
    if not g then
      g = { name = p.name, points = {} }
      by_name[p.name] = g
      groups[#groups + 1] = g
    end
    g.points[#g.points + 1] = p
    g.last = p
  end
  return groups
end

-- The last value of each metric, with its step and how many points it has.
function M.metric_table(groups, title)
  local rows = {}
  for i, g in ipairs(groups) do rows[i] = { g.name, g.last.value, g.last.step, #g.points } end
  return { title = title, columns = { "metric", "value", "step", "points" }, rows = rows }
end

-- A cell's outputs as the documents show them: its metric outputs fold
-- into one { kind = "metrics", table = ... } where the first was logged,
-- since a training loop may log thousands of points. An output of a kind
-- the writers do not know is an error in the record, raised here.
local KINDS = { text = true, table = true, plot = true, metric = true, artifact = true, error = true }

function M.cell_outputs(cell)
  local shown, points = {}, {}
  for _, o in ipairs(cell.outputs or {}) do
    if not KINDS[o.kind] then
      error(string.format("run record: cell '%s' has an output of unknown kind '%s'", tostring(cell.title),
        tostring(o.kind)), 0)
    end
    if o.kind == "metric" then
      if #points == 0 then shown[#shown + 1] = { kind = "metrics" } end
      points[#points + 1] = o
    else
      shown[#shown + 1] = o
    end
  end
  for _, o in ipairs(shown) do
    if o.kind == "metrics" then o.table = M.metric_table(M.fold_metrics(points)) end
  end
  return shown
end

return M
