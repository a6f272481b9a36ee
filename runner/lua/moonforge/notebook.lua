-- moonforge.notebook: a run record as a Jupyter notebook (nbformat 4.5).
--
-- render(record) -> the .ipynb text. The record is what the cell executor
-- builds during a run:
--   { name, run_id, recipe_path, recipe_sha256, recipe_source, params, seed,
--     status, started, finished, duration, engine_version, git_commit, threads,
--     platform = { os, machine, cpu },
--     cells = { { index, title, uses, status, cache_hit, duration, key, source,
--                 outputs = { { kind = "text" | "table" | "plot" | "metric" |
--                               "artifact" | "error", ... }, ... } }, ... },
--     metrics = { { name, value, step, time, cell }, ... } }
--
-- The notebook opens with a markdown summary of the run; then each recipe
-- cell becomes a markdown cell (title and facts) and a code cell holding its
-- Lua source and its outputs: text as stdout streams, tables and metrics as
-- HTML with a plain-text twin, plots as SVG, artifacts as links relative to
-- the run folder, errors as Jupyter error outputs with the Lua traceback.
-- Cells that did not run have execution_count null. Strings are split into
-- lines and keys sorted, as Jupyter itself writes them, so a notebook
-- diffs cleanly between runs.
local json = require "moonforge.json"
local textable = require "moonforge.textable"
local runview = require "moonforge.runview"

local M = {}

-- Jupyter's multiline string: a list of lines, each keeping its "\n".
local function lines(text)
  local out = {}
  for line in tostring(text):gmatch("[^\n]*\n?") do
    if line ~= "" then out[#out + 1] = line end
  end
  return json.array(out)
end

-- A JSON array of a copy of t: the caller's table keeps its own metatable.
local function array_copy(t)
  local copy = {}
  for i, v in ipairs(t or {}) do copy[i] = v end
  return json.array(copy)
end

local function stream(text)
  return { output_type = "stream", name = "stdout", text = lines(text) }
end

local function display(bundle)
  local data = {}
  for mime, text in pairs(bundle) do data[mime] = lines(text) end
  return { output_type = "display_data", data = data, metadata = json.object() }
end

local function table_display(tbl)
  return display{ ["text/html"] = textable.html(tbl), ["text/plain"] = textable.text(tbl) }
end

local function error_output(o)
  local message = tostring(o.message or "error")
  local traceback = { message }
  for line in tostring(o.traceback or ""):gmatch("[^\n]+") do
    if line ~= message then traceback[#traceback + 1] = line end
  end
  return { output_type = "error", ename = "LuaError", evalue = message, traceback = json.array(traceback) }
end

local function artifact_display(o)
  return display{
    ["text/html"] = runview.artifact_html(o),
    ["text/plain"] = string.format("artifact: %s (%s)\n", tostring(o.name), tostring(o.path)),
  }
end

local function plot_display(o)
  return display{ ["image/svg+xml"] = o.svg, ["text/plain"] = "plot: " .. tostring(o.title or "") }
end

local OUTPUT = {
  text = function(o) return stream(o.text) end,
  table = table_display,
  metrics = function(o) return table_display(o.table) end,
  plot = plot_display,
  artifact = artifact_display,
  error = error_output,
}

local function outputs_of(cell)
  local out = {}
  for i, o in ipairs(runview.cell_outputs(cell)) do out[i] = OUTPUT[o.kind](o) end
  return json.array(out)
end

local function markdown_cell(id, text)
  return { cell_type = "markdown", id = id, metadata = json.object(), source = lines(text) }
end

local function summary_cell(record)
  local text = "# " .. textable.escape_markdown(record.name or record.run_id or "run") .. "\n\n"
    .. textable.markdown(runview.summary(record))
  if record.cells and #record.cells > 0 then
    text = text .. "\n### Cells\n\n" .. textable.markdown(runview.cells(record))
  end
  return markdown_cell("summary", text)
end

local function title_cell(cell, i)
  local facts = runview.cell_facts(cell)
  for k, f in ipairs(facts) do facts[k] = textable.escape_markdown(f) end
  facts[1] = "**" .. facts[1] .. "**"
  local text = string.format("## %d. %s\n\n%s", cell.index or i,
    textable.escape_markdown(cell.title or ""), table.concat(facts, " · "))
  return markdown_cell("cell-" .. i .. "-title", text)
end

local function code_cell(cell, i)
  local ran = cell.status ~= nil and cell.status ~= "not run"
  return {
    cell_type = "code", id = "cell-" .. i,
    execution_count = ran and (cell.index or i) or json.null,
    metadata = { moonforge = { title = cell.title, status = cell.status or "not run",
      cache_hit = cell.cache_hit == true, duration = cell.duration, key = cell.key,
      uses = array_copy(cell.uses) } },
    source = lines(cell.source or ""),
    outputs = outputs_of(cell),
  }
end

local function run_metadata(record)
  return {
    run_id = record.run_id, recipe = record.name, recipe_path = record.recipe_path,
    recipe_sha256 = record.recipe_sha256, params = record.params or json.object(), seed = record.seed,
    status = record.status, engine_version = record.engine_version, git_commit = record.git_commit,
    started = record.started, finished = record.finished, duration = record.duration,
    threads = record.threads, platform = record.platform,
  }
end

-- A copy of v in which every string is valid UTF-8 (JSON requires it, and
-- printed model output may end in the middle of a character).
local function clean(v)
  if type(v) == "string" then return textable.utf8_clean(v) end
  if type(v) ~= "table" then return v end
  local copy = {}
  for k, x in pairs(v) do copy[k] = clean(x) end
  return setmetatable(copy, getmetatable(v))
end

function M.render(record)
  local cells = { summary_cell(record) }
  for i, cell in ipairs(record.cells or {}) do
    cells[#cells + 1] = title_cell(cell, i)
    cells[#cells + 1] = code_cell(cell, i)
  end
  local doc = {
    nbformat = 4, nbformat_minor = 5,
    metadata = {
      kernelspec = { name = "moonforge", display_name = "moonforge (Lua)", language = "lua" },
      language_info = { name = "lua", file_extension = ".lua", mimetype = "text/x-lua", codemirror_mode = "lua" },
      moonforge = run_metadata(record),
    },
    cells = cells,
  }
  return json.encode(clean(doc), 1) .. "\n"
end

return M
