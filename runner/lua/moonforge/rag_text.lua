-- moonforge.rag_text: the document loaders and chunkers behind mf.rag (see
-- moonforge.rag for the public face).
--
-- A document is {path, format, text, headings, line}: text is what the
-- chunks are cut from (for HTML the extracted text, not the markup),
-- headings lists {level, title, start} with start a byte offset into text,
-- and line, for a JSONL row, is its line in the file.
--
-- HTML: tags are stripped; script, style and comments dropped; block tags
-- (p, div, li, h1..h6, br, tr, ...) end a line; runs of white space become
-- one space; entities are decoded (named ones of a common list, &#N; and
-- &#xH;; &nbsp; becomes a plain space; unknown ones stay as written);
-- h1..h3 are the headings. Markdown: ATX headings (# to ######) outside
-- fenced code blocks.
local host = require "moonforge.host"
local json = require "moonforge.json"

local M = {}

------------------------------------------------------------------------
-- Finding files
------------------------------------------------------------------------

local FORMATS = { txt = "text", text = "text", md = "markdown", markdown = "markdown", html = "html",
  htm = "html", jsonl = "jsonl" }

local function format_of(path)
  return FORMATS[(path:match("%.([%w]+)$") or ""):lower()] or "text"
end

-- A glob ("*.md", "docs/**/*.html") as an anchored Lua pattern.
local function glob_pattern(glob)
  local p = glob:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
  p = p:gsub("%*%*/?", "\1"):gsub("%*", "[^/]*"):gsub("%?", "[^/]"):gsub("\1", ".*")
  return "^" .. p .. "$"
end

-- Files under dir, in name order, whose path relative to dir matches the
-- glob (its base name, for a glob without '/'); without a glob, the files
-- of the known formats.
local function walk(dir, rel, pattern, by_name, out)
  local names = assert(host.listdir(dir .. rel))
  table.sort(names)
  for _, name in ipairs(names) do
    local path = rel .. name
    local kind = host.kind(dir .. path)
    if kind == "directory" then
      walk(dir, path .. "/", pattern, by_name, out)
    elseif kind == "file" then
      local subject = by_name and name or path
      if (pattern and subject:find(pattern)) or (not pattern and FORMATS[(name:match("%.(%w+)$") or ""):lower()]) then
        out[#out + 1] = dir .. path
      end
    end
  end
  return out
end

------------------------------------------------------------------------
-- HTML
------------------------------------------------------------------------

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'", nbsp = " ", copy = "©", reg = "®",
  mdash = "—", ndash = "–", hellip = "…", lsquo = "‘", rsquo = "’", ldquo = "“", rdquo = "”", laquo = "«",
  raquo = "»", eacute = "é", egrave = "è", agrave = "à", ccedil = "ç", uuml = "ü", ouml = "ö", auml = "ä",
  szlig = "ß", deg = "°", middot = "·", bull = "•", times = "×", euro = "€" }

local function utf8_char(c)
  if c < 0x80 then return string.char(c) end
  if c < 0x800 then return string.char(0xC0 + math.floor(c / 64), 0x80 + c % 64) end
  if c < 0x10000 then
    return string.char(0xE0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
  end
  return string.char(0xF0 + math.floor(c / 262144), 0x80 + math.floor(c / 4096) % 64, 0x80 + math.floor(c / 64) % 64,
    0x80 + c % 64)
end

local function decode_entity(whole, body)
  local n = body:match("^#(%d+)$") or (body:match("^#[xX](%x+)$") and tonumber(body:sub(3), 16))
  n = tonumber(n)
  if n then return (n > 0 and n < 0x110000) and utf8_char(n) or whole end
  return ENTITIES[body] or whole
end

function M.decode_entities(s)
  return (s:gsub("(&(#?[%w]+);)", decode_entity))
end

local BLOCK = {}
for tag in ("p div br li ul ol tr table h1 h2 h3 h4 h5 h6 section article header footer nav pre blockquote hr " ..
  "title dt dd main aside figure figcaption"):gmatch("%S+") do BLOCK[tag] = true end
local DROPPED = { script = true, style = true, noscript = true, template = true }

-- The text of an HTML page and its h1..h3 headings.
function M.html_text(html)
  local lower = html:lower()
  local parts, len, last = {}, 0, "\n"
  local headings, open_heading = {}, nil
  local function emit(s)
    if s == "" then return end
    parts[#parts + 1], len, last = s, len + #s, s:sub(-1)
  end
  local function text(s)
    s = M.decode_entities(s):gsub("%s+", " ")
    if last == "\n" or last == " " then s = s:gsub("^ ", "") end
    emit(s)
  end
  local pos = 1
  while pos <= #html do
    local lt = html:find("<", pos, true) or #html + 1
    text(html:sub(pos, lt - 1))
    if lt > #html then break end
    local close, name = lower:match("^<(/?)([%a][%w]*)", lt)
    if lower:sub(lt, lt + 3) == "<!--" then
      pos = (lower:find("-->", lt + 4, true) or #html - 2) + 3
    elseif lower:find("^<[!?]", lt) then -- doctype, processing instruction
      pos = (html:find(">", lt, true) or #html) + 1
    elseif not name then -- a lone '<' is text
      text("<")
      pos = lt + 1
    else
      local gt = html:find(">", lt, true) or #html
      pos = gt + 1
      if DROPPED[name] and close == "" then
        local stop = lower:find("</" .. name, pos, true)
        pos = stop and ((lower:find(">", stop, true) or #html) + 1) or #html + 1
      elseif BLOCK[name] then
        if last ~= "\n" then
          if last == " " then parts[#parts] = parts[#parts]:sub(1, -2); len = len - 1 end
          emit("\n")
        end
        local level = tonumber(name:match("^h([1-3])$"))
        if level and close == "" then
          open_heading = { level = level, start = len + 1, part = #parts + 1 }
        elseif level and open_heading then
          local title = table.concat(parts, "", open_heading.part):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
          headings[#headings + 1] = { level = open_heading.level, title = title, start = open_heading.start }
          open_heading = nil
        end
      end
    end
  end
  return table.concat(parts), headings
end

------------------------------------------------------------------------
-- Markdown
------------------------------------------------------------------------

function M.markdown_headings(text)
  local headings, fence = {}, nil
  for start, line in text:gmatch("()([^\n]*)") do
    local marker = line:match("^%s*(```+)") or line:match("^%s*(~~~+)")
    if marker and (not fence or marker:sub(1, 1) == fence) then
      fence = not fence and marker:sub(1, 1) or nil
    elseif not fence then
      local hashes, title = line:match("^(#+)%s+(.-)%s*#*%s*$")
      if hashes and #hashes <= 6 then headings[#headings + 1] = { level = #hashes, title = title, start = start } end
    end
  end
  return headings
end

------------------------------------------------------------------------
-- Loading
------------------------------------------------------------------------

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot open " .. tostring(err), 0) end
  local text = f:read("*a")
  f:close()
  return (text:gsub("^\239\187\191", ""))
end

-- One document per JSONL row, from its `field`.
local function jsonl_documents(path, text, field, out)
  local line = 0
  for row_text in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line + 1
    if row_text:find("%S") then
      local row, err = json.decode(row_text)
      if type(row) ~= "table" then error(string.format("%s:%d: %s", path, line, err or "not a JSON object"), 0) end
      local value = row[field]
      if type(value) ~= "string" then
        error(string.format("%s:%d: no text field '%s'", path, line, field), 0)
      end
      out[#out + 1] = { path = path, format = "jsonl", text = value, headings = {}, line = line, row = row }
    end
  end
end

local function load_file(path, opts, out)
  local format = format_of(path)
  local text = read_file(path)
  if format == "jsonl" then return jsonl_documents(path, text, opts.field or "text", out) end
  local doc = { path = path, format = format, text = text, headings = {} }
  if format == "html" then doc.text, doc.headings = M.html_text(text)
  elseif format == "markdown" then doc.headings = M.markdown_headings(text) end
  out[#out + 1] = doc
end

function M.load_documents(paths, opts)
  opts = opts or {}
  if type(paths) == "string" then paths = { paths } end
  if type(paths) ~= "table" then error("load_documents: expected a path or a list of paths", 3) end
  local pattern = opts.glob and glob_pattern(opts.glob)
  local by_name = opts.glob and not opts.glob:find("/", 1, true)
  local docs = {}
  for _, path in ipairs(paths) do
    local kind = host.kind(path)
    if kind == "directory" then
      local dir = path:gsub("/+$", "") .. "/"
      for _, file in ipairs(walk(dir, "", pattern, by_name, {})) do load_file(file, opts, docs) end
    elseif kind == "file" then
      load_file(path, opts, docs)
    else
      error("load_documents: " .. path .. ": no such file or folder", 3)
    end
  end
  return docs
end

------------------------------------------------------------------------
-- Chunking
------------------------------------------------------------------------

-- Byte ranges {start, stop} of the units of text[from..to]: words, or
-- tokens of tok (their byte lengths as tok decodes them one by one).
local function units(text, from, to, tok)
  local out = {}
  local piece = text:sub(from, to)
  if not tok then
    for s, e in piece:gmatch("()%S+()") do out[#out + 1] = { from + s - 1, from + e - 2 } end
    return out
  end
  local at = from
  for _, id in ipairs(tok:encode(piece, { add_special = false })) do
    local n = #tok:decode({ id })
    out[#out + 1] = { at, math.min(at + n - 1, to) }
    at = at + n
  end
  return out
end

-- line_of(offset): the 1-based line of a byte offset of text.
local function line_finder(text)
  local starts = { 1 }
  for p in text:gmatch("\n()") do starts[#starts + 1] = p end
  return function(offset)
    local lo, hi = 1, #starts
    while lo < hi do
      local mid = math.floor((lo + hi + 1) / 2)
      if starts[mid] <= offset then lo = mid else hi = mid - 1 end
    end
    return lo
  end
end

-- path_at(offset): the titles of the headings enclosing a byte offset.
local function heading_finder(headings)
  local paths, stack = {}, {}
  for i, h in ipairs(headings) do
    while #stack > 0 and stack[#stack].level >= h.level do stack[#stack] = nil end
    stack[#stack + 1] = h
    local path = {}
    for j, s in ipairs(stack) do path[j] = s.title end
    paths[i] = path
  end
  return function(offset)
    local found = {}
    for i, h in ipairs(headings) do
      if h.start > offset then break end
      found = paths[i]
    end
    return found
  end
end

-- 1 when byte i of text continues a UTF-8 character.
local function continues(text, i)
  local b = text:byte(i)
  return b ~= nil and b >= 0x80 and b < 0xc0
end

-- Chunks of doc's text[from..to], windows of `size` units `overlap` apart.
-- A byte-level token may hold part of a character, so a window's bytes are
-- widened to whole characters: a chunk is always valid UTF-8 text.
local function window_chunks(doc, from, to, opts, where, out)
  local text = doc.text
  local us = units(text, from, to, opts.tokenizer)
  local step = opts.size - opts.overlap
  for first = 1, #us, step do
    local last = math.min(first + opts.size - 1, #us)
    local start, stop = us[first][1], us[last][2]
    while start > from and continues(text, start) do start = start - 1 end
    while stop < to and continues(text, stop + 1) do stop = stop + 1 end
    out[#out + 1] = where(text:sub(start, stop), start, stop)
    if last == #us then break end
  end
end

local function check_sizes(opts)
  local size, overlap = opts.size or 256, opts.overlap or 0
  if type(size) ~= "number" or size < 1 or size % 1 ~= 0 then error("chunk: size must be a positive integer", 3) end
  if type(overlap) ~= "number" or overlap < 0 or overlap >= size then
    error("chunk: overlap must be an integer in 0.." .. (size - 1), 3)
  end
  return size, overlap
end

function M.chunk(docs, opts)
  opts = opts or {}
  local by = opts.by or "tokens"
  if by ~= "tokens" and by ~= "headings" then error("chunk: by must be \"tokens\" or \"headings\"", 2) end
  local size, overlap = check_sizes(opts)
  local window = { size = size, overlap = overlap, tokenizer = opts.tokenizer }
  local chunks = {}
  for d, doc in ipairs(docs) do
    local line_of, path_at = line_finder(doc.text), heading_finder(doc.headings or {})
    local function where(text, start, stop)
      local first = doc.line and doc.line or line_of(start)
      return { id = #chunks + 1, doc = d, source = doc.path, text = text, start = start, stop = stop,
        line_start = first, line_end = doc.line and doc.line or line_of(stop), headings = path_at(start) }
    end
    local sections = { 1 }
    if by == "headings" then
      for _, h in ipairs(doc.headings or {}) do if h.start > 1 then sections[#sections + 1] = h.start end end
    end
    for i, from in ipairs(sections) do
      local to = (sections[i + 1] or #doc.text + 1) - 1
      if by == "headings" and not opts.size then
        local s, e = doc.text:sub(from, to):match("^%s*()(.-)%s*$")
        if e ~= "" then chunks[#chunks + 1] = where(e, from + s - 1, from + s + #e - 2) end
      else
        window_chunks(doc, from, to, window, where, chunks)
      end
    end
  end
  return chunks
end

return M
