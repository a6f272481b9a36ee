-- Builds the Debian section dataset from apt's package indices: each row is a
-- package description (short line + long text) labelled with its archive
-- section (see CARD.md).
--
--   moonforge exec datasets/debian_sections/extract.lua --packages PACKAGES --translations TRANSLATION_EN
--       [--out DIR] [--per-section 120] [--seed 7]
--
-- PACKAGES and TRANSLATION_EN are uncompressed index files (build.sh finds
-- and decompresses them). Only packages whose section is in SECTIONS are
-- kept; descriptions shared by several packages (or equal up to case, spaces
-- and punctuation) count once; each section contributes the same number of
-- rows, drawn with the engine's seeded shuffle from the packages sorted by
-- name, and is split 80/10/10, so the same indices give the same bytes.
-- Writes DIR/raw/{train,eval,test}.jsonl ({package, description, section})
-- and DIR/chat/{...} (CHAT_COMPLETION rows), and prints counts and SHA-256s.
local data = require "moonforge.data"
local engine = require "moonforge.engine"
local host = require "moonforge.host"
local json = require "moonforge.json"

local SECTIONS = { "admin", "devel", "doc", "libs", "net", "python", "science", "text", "utils", "web" }

local SYSTEM_PROMPT = "Classify the Debian package from its description. Answer with its archive section only, "
  .. "one of: " .. table.concat(SECTIONS, ", ") .. "."

-- Calls each(fields) for every stanza of a deb822 file; a continuation line
-- (leading space) extends the field before it.
local function each_stanza(path, each)
  local f = assert(io.open(path, "rb"))
  local fields, last = {}, nil
  for line in f:lines() do
    if line == "" then
      if next(fields) then each(fields) end
      fields, last = {}, nil
    elseif line:sub(1, 1) == " " and last then
      fields[last] = fields[last] .. "\n" .. line
    else
      local key, value = line:match("^([^:]+):%s?(.*)$")
      if key then fields[key], last = value, key end
    end
  end
  if next(fields) then each(fields) end
  f:close()
end

-- The long text of a deb822 description: leading space dropped, " ." for
-- an empty line.
local function long_text(continuation)
  local lines = {}
  for line in (continuation .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("^ ", "")
    lines[#lines + 1] = line == "." and "" or line
  end
  return table.concat(lines, "\n")
end

-- Full English descriptions by package and description checksum.
local function translations(path)
  local by_key = {}
  each_stanza(path, function(s)
    local text = s["Description-en"]
    if s.Package and s["Description-md5"] and text then
      local short, rest = text:match("^([^\n]*)\n?(.*)$")
      by_key[s.Package .. " " .. s["Description-md5"]] = short .. (rest ~= "" and ("\n" .. long_text(rest)) or "")
    end
  end)
  return by_key
end

local function candidates(packages_path, full)
  local wanted = {}
  for _, s in ipairs(SECTIONS) do wanted[s] = true end
  local rows = {}
  each_stanza(packages_path, function(s)
    local description = full[(s.Package or "") .. " " .. (s["Description-md5"] or "")]
    if wanted[s.Section] and description then
      rows[#rows + 1] = { package = s.Package, section = s.Section, description = description }
    end
  end)
  table.sort(rows, function(a, b) return a.package < b.package end)
  return rows
end

local function by_section(rows)
  local groups = {}
  for _, s in ipairs(SECTIONS) do groups[s] = {} end
  for _, row in ipairs(rows) do table.insert(groups[row.section], row) end
  return groups
end

local function write_jsonl(path, rows)
  local lines = {}
  for i, row in ipairs(rows) do lines[i] = json.encode(row) end
  local ok, err = host.write_atomic(path, table.concat(lines, "\n") .. "\n")
  if not ok then error(err, 0) end
  return engine.sha256_file(path)
end

local function chat_row(row)
  return { messages = { { role = "system", content = SYSTEM_PROMPT }, { role = "user", content = row.description },
    { role = "assistant", content = row.section } } }
end

local function parse_args(args)
  local here = (args[0] or ""):match("^(.*)/[^/]*$") or "."
  local opts = { out = here, per_section = 120, seed = 7 }
  local i = 1
  while args[i] do
    local key, value = args[i], args[i + 1]
    if key == "--packages" then opts.packages = value
    elseif key == "--translations" then opts.translations = value
    elseif key == "--out" then opts.out = value
    elseif key == "--per-section" then opts.per_section = tonumber(value)
    elseif key == "--seed" then opts.seed = tonumber(value)
    else error("unknown option " .. key, 0) end
    i = i + 2
  end
  if not opts.packages or not opts.translations then
    error("usage: extract.lua --packages FILE --translations FILE [--out DIR] [--per-section N] [--seed N]", 0)
  end
  return opts
end

local opts = parse_args(arg)
local rows = candidates(opts.packages, translations(opts.translations))
local unique = data.dedup(rows, { field = "description" })
local groups = by_section(unique)
local splits = { train = {}, eval = {}, test = {} }
print(string.format("%d packages in %d sections, %d with distinct descriptions", #rows, #SECTIONS, #unique))
for _, section in ipairs(SECTIONS) do
  local group = groups[section]
  if #group < opts.per_section then
    error(string.format("section %s has %d packages, fewer than %d", section, #group, opts.per_section), 0)
  end
  local sample = {}
  local shuffled = data.shuffle(group, opts.seed)
  for i = 1, opts.per_section do sample[i] = shuffled[i] end
  local parts = data.split(sample, { train = 0.8, eval = 0.1, test = 0.1, seed = opts.seed })
  for name, part in pairs(parts) do
    for _, row in ipairs(part) do table.insert(splits[name], row) end
  end
  print(string.format("  %-8s %5d available, %d sampled", section, #group, opts.per_section))
end
for _, form in ipairs({ "raw", "chat" }) do
  assert(host.mkdir_p(opts.out .. "/" .. form))
  for _, split in ipairs({ "train", "eval", "test" }) do
    local out = data.shuffle(splits[split], opts.seed)
    if form == "chat" then
      for i, row in ipairs(out) do out[i] = chat_row(row) end
    end
    local name = form .. "/" .. split .. ".jsonl"
    print(string.format("%s  %s  %d rows", write_jsonl(opts.out .. "/" .. name, out), name, #out))
  end
end
return 0
