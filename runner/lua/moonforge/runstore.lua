-- moonforge.runstore: run folders on disk.
--
-- A run lives in RUNS/<recipe>-<YYYYmmdd-HHMMSS>-<6 hex>/:
--   manifest.json     what ran, where, with what, and how each cell ended
--   recipe.lua        the exact recipe text that ran
--   metrics.jsonl     one JSON object per metric value: name, value, step, time, cell
--   cells/NN-slug.json  one cell of the run record: source, status, outputs
--   artifacts/        files the cells published
--   notebook.ipynb, report.html   rendered from the run record
-- Every file but metrics.jsonl is replaced atomically, so a killed run leaves
-- only whole files; metrics.jsonl grows by whole lines. A manifest whose
-- status is "running" and whose pid is gone belongs to a run that died.
-- Non-finite metric values are written as the strings "inf", "-inf", "nan".
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local notebook = require "moonforge.notebook"
local report = require "moonforge.report"

local M = {}

local function write(path, text)
  local ok, err = host.write_atomic(path, text)
  if not ok then error(err, 0) end
end

local read = host.read_file

local function slug(title)
  local s = title:lower():gsub("[^%w]+", "-"):gsub("^-+", ""):gsub("-+$", "")
  return s:sub(1, 40)
end

function M.cell_file(cell)
  return string.format("cells/%02d-%s.json", cell.index, slug(cell.title))
end

-- Creates a new, empty run folder under runs_dir; returns its id and path.
function M.create(runs_dir, name)
  local now = host.time()
  local tag = engine.hash64(string.format("%d %.6f %.9f", host.getpid(), now, host.clock()))
  local id = string.format("%s-%s-%06x", name, os.date("%Y%m%d-%H%M%S", math.floor(now)),
    tonumber(tag % 0x1000000))
  local dir = runs_dir .. "/" .. id
  for _, sub in ipairs({ "/cells", "/artifacts" }) do
    local ok, err = host.mkdir_p(dir .. sub)
    if not ok then error(err, 0) end
  end
  return id, dir
end

local function encode_number(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  return x
end

local function decode_number(v)
  if v == "nan" then return 0 / 0 end
  if v == "inf" then return math.huge end
  if v == "-inf" then return -math.huge end
  return v
end

function M.append_metric(dir, m)
  local line = json.encode({ name = m.name, value = encode_number(m.value), step = m.step, time = m.time,
    cell = m.cell, timing = m.timing })
  local ok, err = host.append_line(dir .. "/metrics.jsonl", line)
  if not ok then error(err, 0) end
end

-- The metrics of a run, in the order logged. A torn last line (a kill in
-- the middle of a write) is skipped.
function M.read_metrics(dir)
  local metrics = json.array()
  local text = read(dir .. "/metrics.jsonl") or ""
  for line in text:gmatch("[^\n]+") do
    local m = json.decode(line)
    if type(m) == "table" and type(m.name) == "string" then
      m.value = decode_number(m.value)
      if m.step == json.null then m.step = nil end
      metrics[#metrics + 1] = m
    end
  end
  return metrics
end

local function manifest_of(record)
  local cells = json.array()
  for i, c in ipairs(record.cells) do
    cells[i] = { index = c.index, title = c.title, uses = c.uses, status = c.status, cache_hit = c.cache_hit,
      key = c.key, started = c.started, finished = c.finished, duration = c.duration, file = M.cell_file(c) }
  end
  return {
    format = "moonforge-run-1", run_id = record.run_id, name = record.name,
    recipe = { path = record.recipe_path, copy = "recipe.lua", sha256 = record.recipe_sha256 },
    params = json.object(record.params), seed = record.seed, status = record.status, pid = record.pid,
    started = record.started, finished = record.finished, duration = record.duration,
    engine_version = record.engine_version, kernel_version = record.kernel_version,
    git_commit = record.git_commit, threads = record.threads, platform = record.platform,
    no_cache = record.no_cache, cells = cells,
  }
end

function M.write_manifest(dir, record)
  write(dir .. "/manifest.json", json.encode(manifest_of(record), 1) .. "\n")
end

-- Every file of the record as it stands: manifest, cells, notebook, report.
function M.write_record(dir, record)
  M.write_manifest(dir, record)
  for _, cell in ipairs(record.cells) do
    write(dir .. "/" .. M.cell_file(cell), json.encode(cell, 1) .. "\n")
  end
  write(dir .. "/notebook.ipynb", notebook.render(record))
  write(dir .. "/report.html", report.render(record))
end

-- The run folder that `spec` names: a path to a run folder, or a run id in
-- runs_dir. Returns nil and a message when there is none.
function M.resolve(spec, runs_dir)
  for _, dir in ipairs({ spec, runs_dir .. "/" .. spec }) do
    if host.kind(dir .. "/manifest.json") == "file" then return (dir:gsub("/+$", "")) end
  end
  return nil, string.format("no run '%s' (give a run id from `moonforge runs %s` or a run folder)", spec, runs_dir)
end

-- "died" for a run whose manifest says running but whose process is gone.
local function live_status(manifest)
  if manifest.status == "running" and not host.pid_alive(manifest.pid or -1) then return "died" end
  return manifest.status
end

function M.read_manifest(dir)
  local text = read(dir .. "/manifest.json")
  if not text then return nil, "no manifest.json in " .. dir end
  local manifest, err = json.decode(text)
  if type(manifest) ~= "table" then return nil, dir .. "/manifest.json: " .. tostring(err) end
  manifest.status = live_status(manifest)
  return manifest
end

-- The run record stored in dir: the manifest, each cell's file, the metrics.
function M.read(dir)
  local record, err = M.read_manifest(dir)
  if not record then return nil, err end
  for i, c in ipairs(record.cells) do
    local cell = json.decode(read(dir .. "/" .. c.file) or "")
    record.cells[i] = type(cell) == "table" and cell or c
  end
  record.metrics = M.read_metrics(dir)
  return record
end

-- Summaries of the runs in runs_dir, oldest first.
function M.list(runs_dir)
  local runs = {}
  for _, name in ipairs(host.listdir(runs_dir) or {}) do
    local manifest = M.read_manifest(runs_dir .. "/" .. name)
    if manifest then
      manifest.dir = runs_dir .. "/" .. name
      runs[#runs + 1] = manifest
    end
  end
  table.sort(runs, function(a, b) return (a.started or 0) < (b.started or 0) end)
  return runs
end

return M
