-- moonforge.runner: executes a recipe's cells into a new run folder.
--
-- execute(recipe, text, path, options) runs the cells in order and returns
-- the run record (see moonforge.notebook for its shape) and an exit status:
-- 0 success, 1 a cell failed, 130/143 interrupted by SIGINT/SIGTERM.
-- plan() does every check that can fail before a run folder exists, and
-- returns nil and a one-line message when the run cannot start.
--
-- A cell's cache key is the SHA-256 of its title and source text, the
-- recipe's code outside all cell functions (an edited helper invalidates
-- every cell), the keys of the cells it uses, the params, the seed, and the
-- engine and kernel versions. A hit replays the cell's recorded outputs into
-- the new run and loads its value only when a later cell needs it.
--
-- Each cell runs under xpcall: an error stops the run with the message, the
-- recipe's file:line and a traceback trimmed of moonforge's own frames; a
-- signal (host.interrupted) stops it as "interrupted". The manifest is
-- written when the run starts and before and after every cell; the
-- notebook and report after every cell and at the end.
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local cache = require "moonforge.cache"
local ctxmod = require "moonforge.ctx"
local runstore = require "moonforge.runstore"
local textable = require "moonforge.textable"

local M = {}

function M.kernel_version() return engine.ffi.string(engine.C.mfk_version()) end

local function cpu_model()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text:match("model name%s*:%s*([^\n]+)")
end

function M.platform()
  local u = host.uname() or {}
  return { os = (u.sysname or "?") .. " " .. (u.release or ""), machine = u.machine or "?",
    cpu = cpu_model() or u.machine or "?" }
end

------------------------------------------------------------------------
-- Cache keys
------------------------------------------------------------------------
local function split_lines(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

-- Each cell's source text, and the recipe text with every cell function
-- replaced by a placeholder line (so a cell growing does not move it).
local function sources(recipe, text)
  local lines = split_lines(text)
  local owner = {}
  local cell_sources = {}
  for i, cell in ipairs(recipe.cells) do
    cell_sources[i] = table.concat(lines, "\n", cell.first_line, cell.last_line) .. "\n"
    for l = cell.first_line, cell.last_line do owner[l] = i end
  end
  local shared = {}
  for l, line in ipairs(lines) do
    if not owner[l] then shared[#shared + 1] = line
    elseif owner[l] ~= owner[l - 1] then shared[#shared + 1] = "--[[ cell " .. owner[l] .. " ]]" end
  end
  return cell_sources, table.concat(shared, "\n")
end

local function number_text(x) return string.format("%.17g", x) end

local function params_text(params)
  local names = {}
  for name in pairs(params) do names[#names + 1] = name end
  table.sort(names)
  for i, name in ipairs(names) do
    local v = params[name]
    names[i] = name .. "=" .. type(v) .. ":" .. (type(v) == "number" and number_text(v) or tostring(v))
  end
  return table.concat(names, "\n")
end

-- The cache key of every cell, and every cell's source text.
function M.keys(recipe, text, params)
  local cell_sources, shared = sources(recipe, text)
  local common = { "params", params_text(params), "seed", number_text(recipe.seed),
    "engine", engine.version(), "kernels", M.kernel_version(), "shared", shared }
  local keys = {}
  for i, cell in ipairs(recipe.cells) do
    local fields = { "moonforge-cell-1", "title", cell.title, "source", cell_sources[i] }
    for _, f in ipairs(common) do fields[#fields + 1] = f end
    for _, j in ipairs(cell.inputs) do
      fields[#fields + 1] = "input"
      fields[#fields + 1] = keys[j]
    end
    local parts = {}
    for k, f in ipairs(fields) do parts[k] = #f .. ":" .. f end
    keys[i] = engine.sha256(table.concat(parts, "\n"))
  end
  return keys, cell_sources
end

------------------------------------------------------------------------
-- Planning: what each cell will do, checked before anything is written.
------------------------------------------------------------------------

-- What cell j does when a run starts at (--from) or runs only (--only)
-- cell `target`: "run", "cached" or "skip".
local function partial_action(recipe, options, target, j)
  if options.from then return j < target and "cached" or "run" end
  if j == target then return "run" end
  for _, input in ipairs(recipe.cells[target].inputs) do
    if input == j then return "cached" end
  end
  return "skip"
end

-- options: params, no_cache, from, only (cell titles or indices), cache_root.
-- Returns a plan { keys, sources, actions, store } where actions[i] is
-- "run", "cached" (replay from the cache) or "skip"; or nil and a message.
function M.plan(recipe, text, options)
  local keys, cell_sources = M.keys(recipe, text, options.params)
  local store = cache.open(options.cache_root)
  local actions = {}
  local which = options.from or options.only
  if which and options.no_cache then
    return nil, "--from and --only take earlier cells from the cache; they cannot go with --no-cache"
  end
  if options.from and options.only then return nil, "give --from or --only, not both" end
  local target, err = 1, nil
  if which then
    target, err = recipe:find_cell(which)
    if not target then return nil, (options.from and "--from: " or "--only: ") .. err end
  end
  for j, cell in ipairs(recipe.cells) do
    local cached = store:has(keys[j])
    if which then
      actions[j] = partial_action(recipe, options, target, j)
      if actions[j] == "cached" and not cached then
        return nil, string.format("cell %d '%s' is not in the cache (it must be, to start at '%s'); " ..
          "run the recipe without --from/--only first", j, cell.title, recipe.cells[target].title)
      end
    else
      actions[j] = (cached and not options.no_cache) and "cached" or "run"
    end
  end
  return { keys = keys, sources = cell_sources, actions = actions, store = store }
end

------------------------------------------------------------------------
-- Errors in cells
------------------------------------------------------------------------

-- Keeps the recipe's frames: drops moonforge's own and everything from the
-- executor's xpcall down.
local function trim_traceback(tb)
  local kept = {}
  for line in tb:gmatch("[^\n]+") do
    if line:find("in function 'xpcall'", 1, true) then break end
    if not line:find("runner/lua/", 1, true) then kept[#kept + 1] = line end
  end
  return table.concat(kept, "\n")
end

-- The innermost frame running the recipe's code, as "file:line".
local function recipe_frame(source, level)
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.source == source and info.currentline > 0 then return info.short_src .. ":" .. info.currentline end
    level = level + 1
  end
end

local function error_handler(source)
  return function(e)
    if host.interrupted() then return { interrupted = true } end
    local message = tostring(e)
    local where = recipe_frame(source, 2)
    if where and not message:find(where:match("^(.*):%d+$") .. ":", 1, true) then
      message = where .. ": " .. message
    end
    return { message = textable.utf8_clean(message),
      traceback = textable.utf8_clean(trim_traceback(debug.traceback("", 2))) }
  end
end

------------------------------------------------------------------------
-- Running
------------------------------------------------------------------------
local function new_record(recipe, text, path, options, id)
  local cells = json.array()
  local plan = options.plan
  for i, cell in ipairs(recipe.cells) do
    cells[i] = { index = i, title = cell.title, uses = json.array(recipe:uses_titles(i)), status = "not run",
      cache_hit = false, key = plan.keys[i], source = plan.sources[i], outputs = json.array() }
  end
  return {
    name = recipe.name, run_id = id, recipe_path = path, recipe_sha256 = engine.sha256(text),
    recipe_source = text, params = options.params, seed = recipe.seed, status = "running",
    started = host.time(), engine_version = engine.version(), kernel_version = M.kernel_version(),
    git_commit = host.git_commit, threads = engine.threads(), platform = M.platform(), pid = host.getpid(),
    no_cache = options.no_cache or false, cells = cells, metrics = json.array(),
  }
end

-- The value of cell j: computed in this run, or loaded from the cache once.
local function input_value(run, j)
  local slot = run.values[j]
  if not slot then
    slot = { value = run.plan.store:load_value(run.plan.keys[j]) }
    run.values[j] = slot
  end
  return slot.value
end

-- Replays cell i from the cache; returns like run_cell.
local function replay_cell(run, i, cell)
  local store, key = run.plan.store, run.plan.keys[i]
  local ok, err = pcall(function()
    store:restore_artifacts(key, run.dir .. "/artifacts")
    ctxmod.new(run, cell, run.record.params, run.recipe.seed):replay(store:load_outputs(key))
  end)
  if not ok then return false, { message = "cannot replay it from the cache: " .. tostring(err) } end
  cell.cache_hit = true
  return true
end

local function save_result(run, i, cell, ctx, value)
  if run.options.no_cache then return true end
  local ok, err = pcall(run.plan.store.save, run.plan.store, run.plan.keys[i], value, cell.outputs, ctx.artifacts)
  if ok then return true end
  return false, { message = "its result cannot be cached: " .. err }
end

-- Runs cell i; returns true, or false and { message, traceback } or
-- { interrupted = true }.
local function run_cell(run, i, cell)
  local spec = run.recipe.cells[i]
  local ctx = ctxmod.new(run, cell, run.record.params, run.recipe.seed)
  local ok, inputs = pcall(function()
    local values = {}
    for k, j in ipairs(spec.inputs) do values[k] = input_value(run, j) end
    return values
  end)
  if not ok then
    return false, { message = "cannot load its inputs from the cache: " .. tostring(inputs) }
  end
  local global_print = _G.print
  _G.print = function(...) ctx:print(...) end
  local result
  ok, result = xpcall(spec.fn, error_handler(run.recipe.source), ctx, unpack(inputs, 1, #spec.inputs))
  _G.print = global_print
  if not ok then return false, result end
  run.values[i] = { value = result }
  return save_result(run, i, cell, ctx, result)
end

local function mark_failure(run, cell, failure)
  local signal = host.interrupted()
  if failure.interrupted or signal then
    cell.status = "interrupted"
    cell.outputs[#cell.outputs + 1] = { kind = "error", message = "interrupted (" .. (signal or "signal") .. ")" }
    run.record.status = "interrupted"
    io.stderr:write(string.format("cell %d '%s' interrupted (%s)\n", cell.index, cell.title, signal or "signal"))
    return
  end
  cell.status = "failed"
  cell.outputs[#cell.outputs + 1] = { kind = "error", message = failure.message, traceback = failure.traceback }
  run.record.status = "failed"
  io.stdout:flush()
  io.stderr:write(string.format("cell %d '%s' failed: %s\n", cell.index, cell.title, failure.message),
    failure.traceback and (failure.traceback .. "\n") or "")
end

local function cell_step(run, i, cell)
  local action = run.plan.actions[i]
  if action == "skip" then return true end
  local n = #run.record.cells
  run.terminal:write(string.format("[%d/%d] %s%s\n", i, n, cell.title, action == "cached" and " (cached)" or ""))
  cell.status = "running"
  cell.started = host.time()
  runstore.write_manifest(run.dir, run.record)
  local t0 = host.clock()
  local ok, failure = (action == "cached" and replay_cell or run_cell)(run, i, cell)
  cell.finished = host.time()
  cell.duration = host.clock() - t0
  if ok then cell.status = "success" else mark_failure(run, cell, failure) end
  run.terminal:flush()
  runstore.write_record(run.dir, run.record)
  return ok
end

-- Drops the results no cell after i uses, then collects: a model a cell
-- made or used holds its memory in C, which the Lua collector does not see,
-- so without this a finished cell's models outlive it.
local function release_values(run, i)
  local needed = {}
  for k = i + 1, #run.recipe.cells do
    for _, j in ipairs(run.recipe.cells[k].inputs) do needed[j] = true end
  end
  for j = 1, i do
    if not needed[j] then run.values[j] = nil end
  end
  collectgarbage()
end

local function run_cells(run)
  for i, cell in ipairs(run.record.cells) do
    if host.interrupted() then
      run.record.status = "interrupted"
      return
    end
    if not cell_step(run, i, cell) then return end
    release_values(run, i)
  end
  run.record.status = "success"
end

local function exit_status(record)
  if record.status == "success" then return 0 end
  if record.status == "interrupted" then return host.interrupted() == "SIGTERM" and 143 or 130 end
  return 1
end

-- options: params (resolved), runs_dir, plan (from M.plan), no_cache.
function M.execute(recipe, text, path, options)
  local id, dir = runstore.create(options.runs_dir, recipe.name)
  local record = new_record(recipe, text, path, options, id)
  local run = { recipe = recipe, record = record, dir = dir, plan = options.plan, options = options,
    values = {}, terminal = io.stdout }
  function run.on_metric(m)
    record.metrics[#record.metrics + 1] = m
    runstore.append_metric(dir, m)
  end
  local ok_copy, err = host.write_atomic(dir .. "/recipe.lua", text)
  if not ok_copy then error(err, 0) end
  runstore.write_record(dir, record)
  io.stdout:write("run ", id, " (", dir, ")\n")
  -- A signal can land in the executor's own code, between two cells'
  -- xpcalls; anything else caught here is a fault of moonforge itself.
  local ok, internal = xpcall(run_cells, debug.traceback, run)
  if not ok then record.status = host.interrupted() and "interrupted" or "failed" end
  for _, cell in ipairs(record.cells) do
    if cell.status == "running" then cell.status = record.status end
  end
  record.finished = host.time()
  record.duration = record.finished - record.started
  runstore.write_record(dir, record)
  if not ok and not host.interrupted() then error(internal, 0) end
  io.stdout:write(string.format("run %s: %s in %.2f s\n  %s/notebook.ipynb\n  %s/report.html\n", id,
    record.status, record.duration, dir, dir))
  return record, exit_status(record)
end

return M
