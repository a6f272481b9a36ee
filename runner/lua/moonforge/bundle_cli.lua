-- The `moonforge pack` and `moonforge unpack` commands (registered by
-- moonforge.cli): what a MODEL_OR_RUN argument names, turned into a
-- mf.bundle.pack spec.
--
-- A run marks what it produced by name in its artifacts/ folder: model/
-- (an HF folder) or model.gguf, adapter/ (PEFT) or adapter.gguf, and
-- tokenizer.json or tokenizer/. A cell writes them there, e.g.
-- model:save(ctx.run_dir .. "/artifacts/model").
local bundle = require "moonforge.bundle"
local host = require "moonforge.host"
local json = require "moonforge.json"
local registry = require "moonforge.registry"
local runstore = require "moonforge.runstore"
local textable = require "moonforge.textable"

local M = {}

local function stderr(...) io.stderr:write(...) end

local function fail(command, message)
  stderr("moonforge ", command, ": ", message, "\n")
  return 2
end

local function exists(path) return host.kind(path) ~= nil end

local function read(path) return assert(host.read_file(path)) end

local function first_existing(dir, names)
  for _, name in ipairs(names) do
    if exists(dir .. "/" .. name) then return dir .. "/" .. name end
  end
end

-- The last value of each metric of a run.
local function final_metrics(dir)
  local last = {}
  for _, m in ipairs(runstore.read_metrics(dir)) do last[m.name] = m.value end
  return next(last) and last or nil
end

-- The base model an adapter folder names, when it is a path here.
local function adapter_base(adapter)
  if not exists(adapter .. "/adapter_config.json") then return nil end
  local ok, cfg = pcall(json.decode, read(adapter .. "/adapter_config.json"))
  local base = ok and type(cfg) == "table" and cfg.base_model_name_or_path
  return type(base) == "string" and exists(base) and base or nil
end

local function from_run(dir, spec)
  local manifest, err = runstore.read_manifest(dir)
  if not manifest then return nil, err end
  local art = dir .. "/artifacts"
  spec.model = first_existing(art, { "model", "model.gguf" })
  spec.adapter = first_existing(art, { "adapter", "adapter.gguf" })
  spec.tokenizer = spec.tokenizer or first_existing(art, { "tokenizer.json", "tokenizer" })
  if not spec.model and not spec.adapter then
    return nil, dir .. " has no artifacts/model, artifacts/model.gguf or artifacts/adapter to pack"
  end
  spec.run, spec.title, spec.metrics = dir, manifest.name, final_metrics(dir)
  spec.source = { kind = "run", run_id = manifest.run_id, recipe = manifest.name }
  spec.source_text = "run " .. manifest.run_id
  spec.created = spec.created or manifest.finished or manifest.started
  return spec
end

local function from_entry(entry, spec)
  local files = entry.files or {}
  for _, role in ipairs({ "model", "adapter", "tokenizer" }) do
    if files[role] and not spec[role] then spec[role] = entry.path .. "/" .. files[role] end
  end
  if files.card then spec.card = read(entry.path .. "/" .. files.card) end
  spec.title = entry.name .. " v" .. entry.version
  spec.base = spec.base or entry.base
  spec.metrics = next(entry.metrics or {}) and entry.metrics or nil
  spec.source = { kind = "registry", name = entry.name, version = entry.version }
  spec.source_text = "registry entry " .. entry.name .. " v" .. entry.version
  spec.created = spec.created or entry.created
  return spec
end

local function from_path(path, spec)
  local kind = host.kind(path)
  if kind == "file" and path:find("%.gguf$") then
    spec.model = path
  elseif kind == "directory" and exists(path .. "/manifest.json") then
    return from_run(path, spec)
  elseif kind == "directory" and exists(path .. "/entry.json") then
    local entry = json.decode(read(path .. "/entry.json"))
    entry.path = path
    return from_entry(entry, spec)
  elseif kind == "directory" and exists(path .. "/config.json") then
    spec.model = path
  elseif kind == "directory" and exists(path .. "/adapter_config.json") then
    spec.adapter = path
  else
    return nil, path .. " is not a model folder, a .gguf file, an adapter folder, a run or a registry entry"
  end
  spec.title = spec.title or path:gsub("/+$", ""):match("([^/]+)$")
  spec.source, spec.source_text = { kind = "path", path = path }, "`" .. path .. "`"
  return spec
end

-- The pack spec for what `what` names: a path, a run id in runs_dir, or a
-- registry NAME[:vN].
local function resolve(what, spec, runs_dir)
  if exists(what) then return from_path(what, spec) end
  local run = runstore.resolve(what, runs_dir)
  if run then return from_run(run, spec) end
  local name, version = what:match("^([%w][%w._-]*):v(%d+)$")
  name = name or what:match("^[%w][%w._-]*$")
  local entry = name and registry.get(name, tonumber(version))
  if entry then return from_entry(entry, spec) end
  return nil, "'" .. what .. "' is not a path, a run in " .. runs_dir .. " or a model in the registry ("
    .. registry.root() .. ")"
end

-- Splits args into positional arguments and the values of the options
-- named in spec ("-o" is "--output"); or nil and a message.
local function parse(args, names)
  local options, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name = a == "-o" and "output" or a:match("^%-%-([%w-]+)$")
    if name then
      if not names[name] then return nil, "unknown option " .. a end
      if not args[i + 1] then return nil, a .. " needs a value" end
      options[name] = args[i + 1]
      i = i + 1
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return options, rest
end

M.pack_usage = [[
moonforge pack MODEL_OR_RUN -o NAME.mfb [--tokenizer PATH] [--adapter PATH] [--base MODEL] [--runs DIR]
  Pack a model into one bundle: its weights, tokenizer, adapter, a model
  card and MANIFEST.json with the SHA-256 of every file. MODEL_OR_RUN is a
  model folder (config.json + safetensors), a .gguf file, a PEFT adapter
  folder (with --base, or the base its config names), a run (a run folder
  or an id in DIR, default ./runs: its artifacts/model or model.gguf,
  artifacts/adapter, its recipe, manifest and final metrics) or a registry
  entry NAME[:vN]. Packing the same files again gives the same bytes
  (times: the run's end, the entry's creation, else SOURCE_DATE_EPOCH or
  the files' newest modification).]]

function M.pack_command(args)
  local o, rest = parse(args, { output = true, tokenizer = true, adapter = true, base = true, runs = true })
  if not o then return fail("pack", rest) end
  if #rest ~= 1 or not o.output then return fail("pack", "expected MODEL_OR_RUN -o NAME.mfb (see moonforge help pack)") end
  local spec, err = resolve(rest[1], { output = o.output, tokenizer = o.tokenizer, adapter = o.adapter },
    o.runs or "runs")
  if not spec then return fail("pack", err) end
  if o.base then spec.model, spec.base = o.base, o.base end
  if spec.adapter and not spec.model then
    spec.model = adapter_base(spec.adapter)
    spec.base = spec.base or spec.model
    if not spec.model then return fail("pack", "the adapter needs its base model: give --base PATH") end
  end
  local ok, result = pcall(bundle.pack, spec)
  if not ok then return fail("pack", tostring(result)) end
  print(string.format("packed %s (%s bytes, sha256 %s)", result.path, textable.format_number(result.bytes),
    result.sha256))
  return 0
end

M.unpack_usage = [[
moonforge unpack BUNDLE -o DIR [--max-bytes N]
  Unpack a bundle into the new folder DIR after verifying every file
  against its MANIFEST.json. Links, special files, unsafe names, checksum
  mismatches, damaged archives and more than N unpacked bytes (default
  MOONFORGE_BUNDLE_MAX_BYTES or 64 GiB) are refused, and then nothing is
  written.]]

function M.unpack_command(args)
  local o, rest = parse(args, { output = true, ["max-bytes"] = true })
  if not o then return fail("unpack", rest) end
  if #rest ~= 1 or not o.output then return fail("unpack", "expected BUNDLE -o DIR (see moonforge help unpack)") end
  local max = o["max-bytes"] and tonumber(o["max-bytes"])
  if o["max-bytes"] and not max then return fail("unpack", "--max-bytes expects a number") end
  local ok, err = pcall(bundle.unpack, rest[1], o.output, { max_bytes = max })
  if not ok then
    stderr("moonforge unpack: ", tostring(err), "\n")
    return 1
  end
  local b = bundle.describe(o.output)
  print(string.format("unpacked %d verified files into %s", #b.manifest.files + 1, o.output))
  return 0
end

return M
