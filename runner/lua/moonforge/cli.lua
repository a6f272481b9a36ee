-- The command line: moonforge COMMAND [ARGS]. Each command is a function
-- taking the argument list after the command and returning an exit status.
local engine = require "moonforge.engine"

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
  commands[name] = fn
  usage[name] = text
end

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
