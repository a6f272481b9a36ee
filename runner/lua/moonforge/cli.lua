-- The command line: moonforge COMMAND [ARGS]. Each command is a function
-- taking the argument list after the command and returning an exit status.
local engine = require "moonforge.engine"
local ctx = require "moonforge.ctx"
local recipe = require "moonforge.recipe"
local runner = require "moonforge.runner"
local runstore = require "moonforge.runstore"
local runview = require "moonforge.runview"
local textable = require "moonforge.textable"

local M = {}
local commands = {}
local usage = {}

local function stderr(...) io.stderr:write(...) end

usage.exec = [[
moonforge exec SCRIPT.lua [ARGS ...]
  Run a plain Lua script with the moonforge library available
  (local mf = require "moonforge"). The global `arg` is filled as the
  standalone lua interpreter does: arg[0] is the script, arg[1..] its
  arguments. Exit status 1 on error, or the number the script returns.]]

function commands.exec(args)
  local script = args[1]
  if not script then
    stderr("moonforge exec: missing SCRIPT.lua\n")
    return 2
  end
  local chunk, err = loadfile(script)
  if not chunk then
    stderr("moonforge exec: ", err, "\n")
    return 1
  end
  local script_args = { [0] = script, [-1] = "moonforge exec" }
  for i = 2, #args do script_args[i - 1] = args[i] end
  _G.arg = script_args
  local ok, result = xpcall(function() return chunk(unpack(script_args, 1, #script_args)) end,
    function(e) return debug.traceback(tostring(e), 2) end)
  if not ok then
    stderr(result, "\n")
    return 1
  end
  io.stdout:flush()
  return type(result) == "number" and result or 0
end

-- Splits args into options and the other arguments; or returns nil and a
-- message. spec maps an option name to "flag", "value" or "list"
-- (repeatable); "--name=value" works too.
local function parse_options(args, spec)
  local options, positional = {}, {}
  local i = 1
  while i <= #args do
    local name, value = args[i]:match("^%-%-([%w-]+)=(.*)$")
    name = name or args[i]:match("^%-%-([%w-]+)$")
    local kind = spec[name]
    if name and not kind then return nil, "unknown option --" .. name end
    if kind and kind ~= "flag" and not value then
      i = i + 1
      value = args[i]
      if not value then return nil, "--" .. name .. " needs a value" end
    end
    if kind == "flag" then options[name] = true
    elseif kind == "list" then
      options[name] = options[name] or {}
      table.insert(options[name], value)
    elseif kind then options[name] = value
    else positional[#positional + 1] = args[i] end
    i = i + 1
  end
  return options, positional
end

M.parse_options = parse_options

local function fail(command, message)
  stderr("moonforge ", command, ": ", message, "\n")
  return 2
end

-- Loads, checks and runs the recipe at path. Returns the exit status and
-- the run record (nil when the run could not start).
local function run_recipe(command, path, overrides, options)
  local r, text = recipe.load(path)
  if not r then return fail(command, text) end
  local params, err = r:resolve_params(overrides)
  if not params then return fail(command, path .. ": " .. err) end
  options.params = params
  options.plan, err = runner.plan(r, text, options)
  if not options.plan then return fail(command, path .. ": " .. err) end
  local record, status = runner.execute(r, text, path, options)
  return status, record
end

usage.run = [[
moonforge run RECIPE.lua [--set key=value ...] [--runs DIR] [--from CELL] [--only CELL] [--no-cache]
  Run a recipe's cells in order into a new run folder DIR/<recipe>-<time>-<id>
  (DIR defaults to ./runs), reusing cached cell results where nothing they
  depend on changed. --set overrides a param (parsed to the type of its
  default). --from CELL re-runs CELL and every later cell, taking the cells
  before it from the cache; --only CELL runs just CELL, its inputs from the
  cache (CELL: a title or a 1-based index). --no-cache neither reads nor
  writes the cache. Exit status: 0 success, 1 a cell failed, 2 the recipe or
  the command line is wrong, 130/143 interrupted.]]

function commands.run(args)
  local options, rest = parse_options(args,
    { set = "list", runs = "value", from = "value", only = "value", ["no-cache"] = "flag" })
  if not options then return fail("run", rest) end
  if #rest ~= 1 then return fail("run", "expected one RECIPE.lua (see moonforge help run)") end
  local overrides = {}
  for _, pair in ipairs(options.set or {}) do
    local key, value = pair:match("^([^=]+)=(.*)$")
    if not key then return fail("run", "--set expects key=value, got '" .. pair .. "'") end
    overrides[key] = value
  end
  return (run_recipe("run", rest[1], overrides, { runs_dir = options.runs or "runs",
    from = options.from, only = options.only, no_cache = options["no-cache"] }))
end

usage.runs = [[
moonforge runs [DIR]
  List the runs in DIR (default ./runs), oldest first: id, recipe, status
  ("died" when the process of a running run is gone), start, duration and
  the last value of a few metrics.]]

-- "name=value" for the last value of the first few metrics of a run.
local function key_metrics(dir, limit)
  local last, order = {}, {}
  for _, m in ipairs(runstore.read_metrics(dir)) do
    if last[m.name] == nil then order[#order + 1] = m.name end
    last[m.name] = m.value
  end
  local parts = {}
  for i = 1, math.min(limit, #order) do parts[i] = order[i] .. "=" .. textable.format_number(last[order[i]]) end
  return table.concat(parts, " ")
end

function commands.runs(args)
  local dir = args[1] or "runs"
  local rows = {}
  for _, run in ipairs(runstore.list(dir)) do
    rows[#rows + 1] = { run.run_id, run.name, run.status, os.date("%Y-%m-%d %H:%M:%S", math.floor(run.started or 0)),
      textable.duration(run.duration), key_metrics(run.dir, 4) }
  end
  if #rows == 0 then
    print("no runs in " .. dir)
    return 0
  end
  print(textable.text({ columns = { "run", "recipe", "status", "started", "duration", "metrics" }, rows = rows }))
  return 0
end

usage.show = [[
moonforge show RUN [--runs DIR]
  Print a run (a run id in DIR, default ./runs, or a run folder): its
  params and platform, each cell with its status, cache hit, duration and
  outputs (text, tables, plots, artifacts, errors), and its metrics.]]

-- A cell's metrics folded to one row per name: how many values, the last.
local function metrics_table(outputs)
  local rows, by_name = {}, {}
  for _, o in ipairs(outputs) do
    if o.kind == "metric" then
      local row = by_name[o.name]
      if not row then
        row = { o.name, 0 }
        by_name[o.name] = row
        rows[#rows + 1] = row
      end
      row[2], row[3], row[4] = row[2] + 1, o.step, o.value
    end
  end
  return { title = "metrics", columns = { "name", "values", "last step", "last value" }, rows = rows }
end

local function show_cell(cell)
  print(string.format("\n## %d. %s  [%s%s%s]", cell.index, cell.title, cell.status,
    cell.cache_hit and ", cached" or "", cell.duration and (", " .. textable.duration(cell.duration)) or ""))
  local outputs = cell.outputs or {}
  for _, o in ipairs(outputs) do io.stdout:write(ctx.output_text(o) or "") end
  local metrics = metrics_table(outputs)
  if #metrics.rows > 0 then io.stdout:write(textable.text(metrics), "\n") end
end

function commands.show(args)
  local options, rest = parse_options(args, { runs = "value" })
  if not options then return fail("show", rest) end
  if #rest ~= 1 then return fail("show", "expected one RUN (see moonforge help show)") end
  local dir, err = runstore.resolve(rest[1], options.runs or "runs")
  local record = dir and runstore.read(dir)
  if not record then return fail("show", err or ("cannot read the run in " .. dir)) end
  print(string.format("run %s (%s)\nrecipe %s (%s, sha256 %s)\nstatus %s, started %s, duration %s",
    record.run_id, dir, record.name, record.recipe.path, record.recipe.sha256, record.status,
    runview.when(record.started), textable.duration(record.duration)))
  print(string.format("params %s; seed %s\nmoonforge %s%s, kernels %s, %d threads, %s %s (%s)",
    runview.params_text(record.params), textable.format_number(record.seed), record.engine_version,
    record.git_commit ~= "" and (" (" .. record.git_commit .. ")") or "", record.kernel_version,
    record.threads, record.platform.os, record.platform.machine, record.platform.cpu))
  for _, cell in ipairs(record.cells) do show_cell(cell) end
  return 0
end

usage.reproduce = [[
moonforge reproduce RUN [--tolerance X] [--runs DIR]
  Run the recipe copy stored in RUN again, with its params and seed and
  without the cache, into a new run next to it; then compare the two runs'
  metrics value by value. Exit status 0 only when every value matches:
  bit for bit by default, within relative difference X with --tolerance.
  A metric logged by one run and not the other is a mismatch. Timing
  metrics (ctx:metric(..., {timing = true}), e.g. tokens/s) are not compared.]]

local function same(a, b, tolerance)
  if a == nil or b == nil then return false end
  if a == b or (a ~= a and b ~= b) then return true end
  return tolerance > 0 and math.abs(a - b) <= tolerance * math.max(math.abs(a), math.abs(b))
end

-- One row per metric value, paired by name, step and occurrence:
-- { name, step, original, new, match }.
local function compare_metrics(original, new, tolerance)
  local values, order = {}, {}
  for side, metrics in ipairs({ original, new }) do
    for _, m in ipairs(metrics) do
      if m.timing then goto continue end
      local id = m.name .. "\0" .. tostring(m.step)
      if not values[id] then
        values[id] = { name = m.name, step = m.step, {}, {} }
        order[#order + 1] = id
      end
      table.insert(values[id][side], m.value)
      ::continue::
    end
  end
  local rows = {}
  for _, id in ipairs(order) do
    local v = values[id]
    for k = 1, math.max(#v[1], #v[2]) do
      local a, b = v[1][k], v[2][k]
      rows[#rows + 1] = { v.name, v.step or "", a and string.format("%.17g", a) or "(none)",
        b and string.format("%.17g", b) or "(none)", same(a, b, tolerance) and "yes" or "NO" }
    end
  end
  return rows
end

-- The comparison rows worth printing: all of them when there are few;
-- otherwise the mismatches and the last row of each metric. Also returns
-- the number of mismatches.
local function shown_rows(rows)
  local mismatches, last_of = 0, {}
  for i, row in ipairs(rows) do
    if row[5] ~= "yes" then mismatches = mismatches + 1 end
    last_of[row[1]] = i
  end
  if #rows <= 40 then return rows, mismatches end
  local shown = {}
  for i, row in ipairs(rows) do
    if row[5] ~= "yes" or last_of[row[1]] == i then shown[#shown + 1] = row end
  end
  return shown, mismatches
end

function commands.reproduce(args)
  local options, rest = parse_options(args, { tolerance = "value", runs = "value" })
  if not options then return fail("reproduce", rest) end
  if #rest ~= 1 then return fail("reproduce", "expected one RUN (see moonforge help reproduce)") end
  local tolerance = tonumber(options.tolerance or "0")
  if not tolerance or tolerance < 0 then return fail("reproduce", "--tolerance expects a number >= 0") end
  local dir, err = runstore.resolve(rest[1], options.runs or "runs")
  if not dir then return fail("reproduce", err) end
  local manifest, merr = runstore.read_manifest(dir)
  if not manifest then return fail("reproduce", merr) end
  local status, record = run_recipe("reproduce", dir .. "/recipe.lua", manifest.params,
    { runs_dir = dir:match("^(.*)/[^/]+$") or ".", no_cache = true })
  if not record then return status end
  if status ~= 0 then
    stderr("moonforge reproduce: the new run ended ", record.status, "\n")
    return status
  end
  local rows = compare_metrics(runstore.read_metrics(dir), record.metrics, tolerance)
  local shown, mismatches = shown_rows(rows)
  print(textable.text({ title = "metrics: " .. manifest.run_id .. " vs " .. record.run_id,
    columns = { "name", "step", "original", "new", "match" }, rows = shown }))
  print(string.format("%d of %d metric values match%s%s", #rows - mismatches, #rows,
    tolerance > 0 and string.format(" (relative tolerance %g)", tolerance) or " (bit for bit)",
    #shown < #rows and string.format("; %d matching rows not shown", #rows - #shown) or ""))
  return mismatches == 0 and 0 or 1
end

usage.help = [[
moonforge help [COMMAND]
  Show the commands, or the usage of one.]]

local order = { "run", "runs", "show", "reproduce", "exec", "help" }

function commands.help(args)
  local name = args[1]
  if name then
    if not usage[name] then
      stderr("moonforge help: unknown command '", name, "'\n")
      return 2
    end
    print(usage[name])
    return 0
  end
  print("moonforge " .. engine.version() .. " - notebook-style recipes for language models\n")
  print("usage: moonforge COMMAND [ARGS]\n")
  for _, n in ipairs(order) do
    if usage[n] then print(usage[n] .. "\n") end
  end
  print("moonforge --version prints the version.")
  print("Environment: MOONFORGE_CACHE (result cache folder), MOONFORGE_THREADS (worker threads).")
  return 0
end

-- Commands defined in other modules register themselves here.
function M.register(name, fn, text)
  if not commands[name] then table.insert(order, #order, name) end
  commands[name] = fn
  usage[name] = text
end

local registry = require "moonforge.registry"
M.register("models", registry.command, registry.usage)

local bundle_cli = require "moonforge.bundle_cli"
M.register("pack", bundle_cli.pack_command, bundle_cli.pack_usage)
M.register("unpack", bundle_cli.unpack_command, bundle_cli.unpack_usage)
local serve = require "moonforge.serve"
M.register("serve", serve.command, serve.usage)
local chat_cli = require "moonforge.chat_cli"
M.register("chat", chat_cli.command, chat_cli.usage)
local playground = require "moonforge.playground"
M.register("playground", playground.command, playground.usage)

function M.main(argv)
  local name = argv[1]
  if name == "--version" or name == "version" then
    local host = require "moonforge.host"
    print("moonforge " .. engine.version() .. (host.git_commit ~= "" and (" (" .. host.git_commit .. ")") or ""))
    return 0
  end
  if not name or name == "-h" or name == "--help" then return commands.help({}) end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  local fn = commands[name]
  if not fn then
    stderr("moonforge: unknown command '", name, "' (see moonforge help)\n")
    return 2
  end
  return fn(args)
end

return M
