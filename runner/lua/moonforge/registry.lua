-- moonforge.registry (mf.registry): a local registry of trained models, with
-- versions.
--
--   local entry = mf.registry.register("tickets", {
--     model = model_or_folder,   -- a model object (saved here) or a file/folder (copied)
--     adapter = "out/adapter",   -- a PEFT adapter folder (copied)
--     base = "base.gguf",        -- what the adapter applies to (recorded, not copied)
--     tokenizer = "tokenizer.json",
--     metrics = { accuracy = 0.93 }, card = "# Ticket classifier\n...",
--   })
--   entry.name, entry.version, entry.path
--   mf.registry.list([name]) -> entries, oldest version first
--
-- Entries live under $MOONFORGE_HOME/registry/<name>/v<N>/ (MOONFORGE_HOME
-- defaults to ~/.local/share/moonforge): entry.json (name, version, created,
-- metrics, base, files), README.md (the card) and the copied files. Every
-- registration makes a new version: the folder is built under a temporary
-- name and renamed to the first free v<N>, and a rename never replaces an
-- existing version, even when two processes register at once.
local cache = require "moonforge.cache"
local host = require "moonforge.host"
local json = require "moonforge.json"
local model_mod = require "moonforge.model"
local textable = require "moonforge.textable"

local M = {}

function M.root()
  local home = os.getenv("MOONFORGE_HOME")
  if not home or home == "" then home = (os.getenv("HOME") or ".") .. "/.local/share/moonforge" end
  return home .. "/registry"
end

local function check_name(name)
  if type(name) ~= "string" or not name:find("^[%w][%w._-]*$") then
    error("registry: a name is letters, digits, '.', '_' and '-', starting with a letter or digit; got "
      .. tostring(name), 3)
  end
end

local function versions(name)
  local found = {}
  for _, entry in ipairs(host.listdir(M.root() .. "/" .. name) or {}) do
    local n = tonumber(entry:match("^v(%d+)$"))
    if n then found[#found + 1] = n end
  end
  table.sort(found)
  return found
end

-- Copies a file, or a folder's files and subfolders, to dst.
local function copy_tree(src, dst)
  if host.kind(src) == "directory" then
    assert(host.mkdir_p(dst))
    for _, name in ipairs(host.listdir(src)) do copy_tree(src .. "/" .. name, dst .. "/" .. name) end
  else
    cache.copy_file(src, dst)
  end
end

local function add_path(staging, files, what, src)
  if host.kind(src) == nil then error("registry: " .. what .. " " .. src .. " does not exist", 4) end
  local name = what .. (host.kind(src) == "file" and ("/" .. src:match("([^/]+)$")) or "")
  if host.kind(src) == "file" then assert(host.mkdir_p(staging .. "/" .. what)) end
  copy_tree(src, staging .. "/" .. name)
  files[what] = name
end

-- Writes the entry's files into the staging folder; returns the files table.
local function stage(staging, spec)
  local files = json.object()
  if model_mod.is_model(spec.model) then
    spec.model:save(staging .. "/model")
    files.model = "model"
  elseif spec.model ~= nil then
    add_path(staging, files, "model", spec.model)
  end
  for _, what in ipairs({ "adapter", "tokenizer" }) do
    if spec[what] ~= nil then add_path(staging, files, what, spec[what]) end
  end
  if spec.card then
    assert(host.write_atomic(staging .. "/README.md", spec.card))
    files.card = "README.md"
  end
  return files
end

-- register(name, spec) -> { name, version, path, created, metrics, base, files }.
function M.register(name, spec)
  check_name(name)
  spec = spec or {}
  if spec.model == nil and spec.adapter == nil then error("registry: give a model or an adapter to register", 2) end
  if spec.metrics ~= nil and type(spec.metrics) ~= "table" then error("registry: metrics must be a table", 2) end
  local folder = M.root() .. "/" .. name
  assert(host.mkdir_p(folder))
  local staging = string.format("%s/.staging.%d", folder, host.getpid())
  cache.remove_tree(staging)
  assert(host.mkdir_p(staging))
  local ok, err = pcall(function()
    local entry = { name = name, created = host.time(), metrics = json.object(), base = spec.base,
      files = stage(staging, spec) }
    for k, v in pairs(spec.metrics or {}) do entry.metrics[k] = v end
    local found = versions(name)
    local version = (found[#found] or 0) + 1
    -- A version another process took first makes the rename fail; take the next.
    while true do
      entry.version = version
      assert(host.write_atomic(staging .. "/entry.json", json.encode(entry)))
      entry.path = folder .. "/v" .. version
      if os.rename(staging, entry.path) then return entry end
      if host.kind(entry.path) == nil then error("registry: cannot move the entry into " .. entry.path, 0) end
      version = version + 1
    end
  end)
  if not ok then
    cache.remove_tree(staging)
    error(err, 2)
  end
  return err
end

local function read_entry(path)
  local f = io.open(path .. "/entry.json", "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local ok, entry = pcall(json.decode, text)
  if not ok then return nil end
  entry.path = path
  return entry
end

-- Entries of one name, or of every name (by name, then version).
function M.list(name)
  local names = name and { name } or host.listdir(M.root()) or {}
  table.sort(names)
  local entries = {}
  for _, n in ipairs(names) do
    for _, v in ipairs(versions(n)) do
      entries[#entries + 1] = read_entry(string.format("%s/%s/v%d", M.root(), n, v))
    end
  end
  return entries
end

-- The entry of name at version (default: the newest), or nil.
function M.get(name, version)
  check_name(name)
  if not version then
    local found = versions(name)
    version = found[#found]
  end
  return version and read_entry(string.format("%s/%s/v%d", M.root(), name, version))
end

local function metrics_text(metrics)
  local names = {}
  for k in pairs(metrics or {}) do names[#names + 1] = k end
  table.sort(names)
  for i, k in ipairs(names) do
    local v = metrics[k]
    names[i] = k .. "=" .. (type(v) == "number" and textable.format_number(v) or tostring(v))
  end
  return table.concat(names, " ")
end

M.usage = [[
moonforge models [NAME]
  List the models in the local registry ($MOONFORGE_HOME/registry, default
  ~/.local/share/moonforge/registry): name, version, when it was created,
  its files and key metrics. With NAME, only that model's versions.]]

function M.command(args)
  if args[1] and not args[1]:find("^[%w][%w._-]*$") then
    io.stderr:write("moonforge models: not a model name: ", args[1], "\n")
    return 2
  end
  local rows = {}
  for _, e in ipairs(M.list(args[1])) do
    local files = {}
    for k in pairs(e.files or {}) do files[#files + 1] = k end
    table.sort(files)
    rows[#rows + 1] = { e.name, "v" .. e.version, os.date("%Y-%m-%d %H:%M:%S", math.floor(e.created or 0)),
      table.concat(files, ","), metrics_text(e.metrics) }
  end
  if #rows == 0 then
    print("no models in " .. M.root() .. (args[1] and ("/" .. args[1]) or ""))
    return 0
  end
  print(textable.text({ columns = { "name", "version", "created", "files", "metrics" }, rows = rows }))
  return 0
end

return M
