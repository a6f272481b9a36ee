-- moonforge.bundle (mf.bundle): model bundles. A bundle is one .mfb file, a
-- zstd-compressed tar written and verified by engine/bundle.c, holding a
-- model's weights, its tokenizer, an adapter, a model card, the recipe and
-- run record it came from, and MANIFEST.json with the size and SHA-256 of
-- every file.
--
--   mf.bundle.pack{ output = "tickets.mfb",
--     model = "out/model",          -- an HF folder (every file in it) or a .gguf
--     tokenizer = "tokenizer.json", -- a tokenizer.json, a folder holding one, or a .gguf
--     adapter = "out/adapter",      -- a PEFT folder or a GGUF LoRA file
--     run = "runs/<id>",            -- adds recipe.lua, manifest.json, metrics.jsonl
--     metrics = { accuracy = 0.9 }, title = "tickets", base = "SmolLM2-135M",
--     card = "# ...",               -- default: written from what is known
--     source = { kind = "run", ... }, created = os.time() }
--   local b = mf.bundle.open("tickets.mfb")  -- b.dir, b.model, b.tokenizer, b.adapter, b.card, b.manifest
--   mf.bundle.unpack("tickets.mfb", "out/tickets")
--   mf.model.load("tickets.mfb"), mf.tokenizer.load("tickets.mfb")
--
-- Inside: model/, tokenizer/ (when given apart from the model), adapter/,
-- run/, README.md (the card) and MANIFEST.json, whose "contents" maps each
-- role to its path, so a reader needs no naming convention. `created`
-- (seconds) stamps the manifest and every member; it defaults to
-- SOURCE_DATE_EPOCH, else the newest modification time of the files, so
-- packing the same files again gives the same bytes.
--
-- open() extracts into $MOONFORGE_CACHE/bundles/<SHA-256 of the file>/ once,
-- verifying every checksum, and reuses that folder afterwards. Unpacking
-- refuses sizes past MOONFORGE_BUNDLE_MAX_BYTES (default 64 GiB in all).
local cache = require "moonforge.cache"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"
local textable = require "moonforge.textable"

local ffi, C = engine.ffi, engine.C
local check_ptr = engine.check_ptr

-- Raises the engine's message as it is: packing errors reach the user.
local function try(rc)
  if rc == -1 then error(engine.errmsg(), 0) end
  return rc
end

local M = {}

local read = host.read_file

local function file_name(title) return (title or "model"):gsub("[^%w._-]+", "-") .. ".mfb" end

local function basename(path) return (path:gsub("/+$", ""):match("([^/]+)$")) end

local function read_json(path)
  local text = read(path)
  local ok, value = pcall(json.decode, text or "")
  return text and ok and type(value) == "table" and value or nil
end

------------------------------------------------------------------------
-- The model card
------------------------------------------------------------------------

local function value_text(v)
  if type(v) == "number" then return textable.format_number(v) end
  return tostring(v)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function table_lines(lines, heading, t, names)
  if #names == 0 then return end
  lines[#lines + 1] = "\n## " .. heading .. "\n\n| " .. (heading == "Metrics" and "metric" or "name") .. " | value |\n|---|---|"
  for _, k in ipairs(names) do lines[#lines + 1] = "| " .. k .. " | " .. value_text(t[k]) .. " |" end
end

local CONFIG_KEYS = { "model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
  "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings" }

-- A markdown card from what is known: the model's config, the adapter's
-- config, the run manifest, the metrics.
function M.card(k)
  local lines = { "# " .. (k.title or "moonforge model"), "",
    "Packed by moonforge " .. engine.version() .. (k.source_text and (" from " .. k.source_text) or "") .. "." }
  if k.base then lines[#lines + 1] = "\nBase model: `" .. k.base .. "`." end
  if k.config then
    local names = {}
    for _, key in ipairs(CONFIG_KEYS) do
      if k.config[key] ~= nil then names[#names + 1] = key end
    end
    table_lines(lines, "Model", k.config, names)
  elseif k.model_file then
    lines[#lines + 1] = "\n## Model\n\nGGUF file `" .. k.model_file .. "`."
  end
  if k.adapter_config then
    local a = k.adapter_config
    local targets = type(a.target_modules) == "table" and table.concat(a.target_modules, ", ") or tostring(a.target_modules)
    lines[#lines + 1] = string.format("\n## Adapter\n\nLoRA rank %s, alpha %s, dropout %s, on %s.", value_text(a.r),
      value_text(a.lora_alpha), value_text(a.lora_dropout or 0), targets)
  end
  local run = k.run_manifest
  if run then
    lines[#lines + 1] = string.format("\n## Training\n\nRecipe `%s` (sha256 %s), run `%s` (%s), seed %s, moonforge %s.",
      tostring(run.name), tostring(run.recipe and run.recipe.sha256), tostring(run.run_id), tostring(run.status),
      value_text(run.seed), tostring(run.engine_version))
    table_lines(lines, "Parameters", run.params, sorted_keys(run.params))
    if type(run.datasets) == "table" then table_lines(lines, "Data", run.datasets, sorted_keys(run.datasets)) end
  end
  table_lines(lines, "Metrics", k.metrics, sorted_keys(k.metrics))
  local file = file_name(k.title)
  lines[#lines + 1] = "\n## Use\n\n```sh\nmoonforge serve " .. file .. "\n```\n\n```lua\nlocal model = mf.model.load(\""
    .. file .. "\")\n```"
  return table.concat(lines, "\n") .. "\n"
end

------------------------------------------------------------------------
-- Packing
------------------------------------------------------------------------

local TOKENIZER_FILES = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" }

-- Adds every regular, non-hidden file of a folder under prefix/.
local function add_folder(w, prefix, dir)
  local added = 0
  for _, name in ipairs(host.listdir(dir) or {}) do
    if not name:find("^%.") and host.kind(dir .. "/" .. name) == "file" then
      try(C.mf_bundle_add_file(w, prefix .. "/" .. name, dir .. "/" .. name))
      added = added + 1
    end
  end
  if added == 0 then error("bundle: " .. dir .. " holds no files", 0) end
end

-- Adds a file or a folder under prefix/; returns its path in the bundle.
local function add_path(w, prefix, path, what)
  local kind = host.kind(path)
  if kind == "directory" then
    add_folder(w, prefix, path)
    return prefix
  end
  if kind ~= "file" then error("bundle: " .. what .. " " .. tostring(path) .. " does not exist", 0) end
  local name = prefix .. "/" .. basename(path)
  try(C.mf_bundle_add_file(w, name, path))
  return name
end

local function add_tokenizer(w, path)
  if host.kind(path) == "directory" then
    for _, name in ipairs(TOKENIZER_FILES) do
      if host.kind(path .. "/" .. name) == "file" then try(C.mf_bundle_add_file(w, "tokenizer/" .. name, path .. "/" .. name)) end
    end
    if host.kind(path .. "/tokenizer.json") ~= "file" then error("bundle: no tokenizer.json in " .. path, 0) end
    return "tokenizer"
  end
  if host.kind(path) ~= "file" then error("bundle: tokenizer " .. tostring(path) .. " does not exist", 0) end
  if path:find("%.gguf$") then return add_path(w, "tokenizer", path, "tokenizer") end
  -- A tokenizer.json under any name, with the tokenizer_config.json beside it.
  try(C.mf_bundle_add_file(w, "tokenizer/tokenizer.json", path))
  local beside = (path:match("^(.*)/[^/]*$") or ".") .. "/tokenizer_config.json"
  if host.kind(beside) == "file" then try(C.mf_bundle_add_file(w, "tokenizer/tokenizer_config.json", beside)) end
  return "tokenizer"
end

local RUN_FILES = { "recipe.lua", "manifest.json", "metrics.jsonl" }

-- Adds the members of spec to w; returns the contents map and what the card needs.
local function add_members(w, spec)
  local contents, known = json.object(), { title = spec.title, base = spec.base, metrics = spec.metrics,
    source_text = spec.source_text }
  if spec.model then
    contents.model = add_path(w, "model", spec.model, "model")
    if contents.model == "model" then
      known.config = read_json(spec.model .. "/config.json")
      if host.kind(spec.model .. "/tokenizer.json") == "file" then contents.tokenizer = "model" end
    else
      known.model_file = basename(spec.model)
      contents.tokenizer = contents.model
    end
  end
  if spec.tokenizer then contents.tokenizer = add_tokenizer(w, spec.tokenizer) end
  if spec.adapter then
    contents.adapter = add_path(w, "adapter", spec.adapter, "adapter")
    known.adapter_config = read_json(spec.adapter .. "/adapter_config.json")
  end
  if spec.run then
    for _, name in ipairs(RUN_FILES) do
      if host.kind(spec.run .. "/" .. name) == "file" then try(C.mf_bundle_add_file(w, "run/" .. name, spec.run .. "/" .. name)) end
    end
    contents.run = "run"
    known.run_manifest = read_json(spec.run .. "/manifest.json")
  end
  local card = spec.card or M.card(known)
  try(C.mf_bundle_add_bytes(w, "README.md", card, #card))
  contents.card = "README.md"
  return contents
end

local function created_time(spec)
  if spec.created then return math.floor(spec.created) end
  return tonumber(os.getenv("SOURCE_DATE_EPOCH") or "") or -1
end

-- Writes the bundle of a resolved spec; parts is a scratch folder for a
-- model object's files.
local function write(s, parts)
  local model_mod = require "moonforge.model"
  if model_mod.is_model(s.model) then
    local model = s.model
    s.model = parts .. "/model"
    model:save(s.model)
    if #model:lora_params() > 0 then
      s.adapter = parts .. "/adapter"
      model:save_adapter(s.adapter)
    end
  end
  if not s.model then error("mf.bundle.pack: give a model (and with an adapter, its base model)", 0) end
  local w = ffi.gc(check_ptr(C.mf_bundle_writer_new()), C.mf_bundle_writer_free)
  local info = { contents = add_members(w, s), title = s.title, base = s.base, source = s.source,
    metrics = s.metrics and json.object(s.metrics) or nil }
  try(C.mf_bundle_write(w, s.output, json.encode(info), created_time(s)))
  local _, bytes = host.kind(s.output)
  return { path = s.output, sha256 = engine.sha256_file(s.output), bytes = bytes }
end

-- mf.bundle.pack(spec) -> { path, sha256, bytes }. spec.model may also be
-- a model object: its base weights are saved as model/ and its LoRA
-- adapters, if any, as adapter/. With spec.ctx (in a cell) the bundle also
-- holds the run's recipe and manifest, is titled after the recipe, and
-- becomes the cell's artifact <title>.mfb when no output is given.
function M.pack(spec)
  if type(spec) ~= "table" then error("mf.bundle.pack(spec): spec must be a table", 2) end
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  local ctx = s.ctx
  if ctx then
    s.run, s.title = s.run or ctx.run_dir, s.title or ctx.run.record.name
    s.source = s.source or { kind = "run", run_dir = ctx.run_dir, cell = ctx.title }
  end
  if type(s.output) ~= "string" and not ctx then error("mf.bundle.pack: output (a path) is required outside a cell", 2) end
  local parts = ctx and (ctx:tmpdir() .. "/bundle") or (s.output .. ".parts." .. host.getpid())
  s.output = s.output or (parts .. "/" .. file_name(s.title))
  assert(host.mkdir_p(parts))
  local ok, result = pcall(write, s, parts)
  if ok and ctx and not spec.output then
    ctx:artifact(s.output)
    result.path = ctx.artifacts[s.output:match("[^/]+$")]
  end
  cache.remove_tree(parts)
  if not ok then error(result, 2) end
  return result
end

------------------------------------------------------------------------
-- Opening
------------------------------------------------------------------------

-- The unpacking limits: MOONFORGE_BUNDLE_MAX_BYTES caps the files in all
-- (and each file); opts.max_bytes overrides it.
local function limits(opts)
  local l = ffi.new("mf_bundle_limits")
  local max = opts and opts.max_bytes or tonumber(os.getenv("MOONFORGE_BUNDLE_MAX_BYTES") or "")
  if max then l.max_total_bytes = max end
  return l
end

-- mf.bundle.unpack(path, dir [, {max_bytes =}]) -> the archive's SHA-256.
-- dir must not exist; it appears only once everything is verified.
function M.unpack(path, dir, opts)
  local sha = ffi.new("char[65]")
  engine.check(C.mf_bundle_unpack(path, (dir:gsub("/+$", "")), limits(opts), sha), 2)
  return ffi.string(sha, 64)
end

-- The roles of an unpacked bundle as paths: model, tokenizer, adapter, card, run.
function M.describe(dir)
  local manifest = read_json(dir .. "/MANIFEST.json")
  if not manifest then error("bundle: no readable MANIFEST.json in " .. dir, 2) end
  local b = { dir = dir, manifest = manifest }
  for role, rel in pairs(manifest.contents or {}) do b[role] = dir .. "/" .. rel end
  return b
end

-- mf.bundle.open(path) -> { dir, model, tokenizer, adapter, card, run,
-- manifest, sha256, path }: the bundle extracted and verified once into
-- the cache.
function M.open(path, opts)
  if type(path) ~= "string" then error("mf.bundle.open(path): path must be a string", 2) end
  local sha = engine.sha256_file(path)
  local root = cache.default_root() .. "/bundles"
  local dir = root .. "/" .. sha
  if host.kind(dir .. "/MANIFEST.json") ~= "file" then
    assert(host.mkdir_p(root))
    local out = ffi.new("char[65]")
    -- A process that opened the same bundle at the same time may have won the rename.
    if C.mf_bundle_unpack(path, dir, limits(opts), out) ~= 0 then
      if host.kind(dir .. "/MANIFEST.json") ~= "file" then error(engine.errmsg(), 2) end
    elseif ffi.string(out, 64) ~= sha then
      cache.remove_tree(dir)
      error("bundle: " .. path .. " changed while it was being opened", 2)
    end
  end
  local b = M.describe(dir)
  b.path, b.sha256 = path, sha
  return b
end

-- The model of a bundle with its adapter, if any (mf.model.load of a .mfb).
function M.load_model(path, opts)
  local b = M.open(path)
  if not b.model then error("bundle: " .. path .. " holds no model", 2) end
  local model = require("moonforge.model").load(b.model, opts)
  if b.adapter then model:load_adapter(b.adapter) end
  return model
end

function M.is_bundle(path) return type(path) == "string" and path:find("%.mfb$") ~= nil end

return M
