-- Builds the Debian FAQ dataset from the installed `debian-faq` package:
-- one cleaned markdown document per chapter, for retrieval, and the FAQ's
-- questions with their answers, for evaluation (see CARD.md).
--
--   moonforge exec datasets/debian_faq/extract.lua [--faq DIR] [--out DIR]
--
-- DIR defaults: --faq /usr/share/doc/debian/FAQ (the per-chapter XHTML of
-- the package), --out datasets/cache/debian_faq. Writes
--   docs/NN-NAME.md   a chapter: "# Chapter N. Title", then "## N.M. Heading"
--                     (and "###" for N.M.K) sections with their text;
--   qa.jsonl          {id, chapter, section, question, answer} for every
--                     section heading that asks a question and has text of
--                     its own (text before its first subsection);
--   source.json       the package and version read from dpkg.
-- The chapter pages' tables of contents, navigation and footnotes are left
-- out (a footnote marker "[1]" would read like a citation); a
-- cross-reference keeps its section number but not the heading DocBook
-- quotes after it ("Section 12.1", not "Section 12.1, “What other
-- documentation exists...?”"), which would put other sections' questions
-- word for word into a section's text. The same package version gives the
-- same bytes.
local host = require "moonforge.host"
local json = require "moonforge.json"
local rag = require("moonforge").rag

local FAQ = "/usr/share/doc/debian/FAQ"
local INSTALL = "install it: apt-get install debian-faq"

local function parse_args(args)
  local here = (args[0] or ""):match("^(.*)/datasets/debian_faq/[^/]*$") or "."
  local opts = { faq = FAQ, out = here .. "/datasets/cache/debian_faq" }
  for i = 1, #args, 2 do
    local key, value = args[i], args[i + 1]
    if key == "--faq" then opts.faq = value
    elseif key == "--out" then opts.out = value
    else error("usage: extract.lua [--faq DIR] [--out DIR]", 0) end
  end
  return opts
end

-- The version of the installed package, or nil.
local function package_version()
  local p = io.popen("dpkg-query -W -f '${Version}' debian-faq 2>/dev/null")
  local version = p and p:read("*a") or ""
  if p then p:close() end
  return version ~= "" and version or nil
end

-- The chapter pages, NAME.en.html, without the title page index.en.html.
local function chapter_files(dir)
  local files = {}
  for _, name in ipairs(host.listdir(dir) or {}) do
    if name:find("%.en%.html$") and name ~= "index.en.html" then files[#files + 1] = name end
  end
  table.sort(files)
  return files
end

-- The chapter's own content, as markup: the navigation bars, the table of
-- contents and the footnotes go, cross-references lose their quoted
-- headings; no-break spaces (DocBook puts them in "Chapter 1" and
-- "Section 2.1") become plain ones.
local function chapter_markup(html, name)
  local body = html:match('<div class="chapter">(.*)<div class="navfooter">')
  if not body then error(name .. ": no <div class=\"chapter\"> followed by the navigation footer", 0) end
  body = body:gsub('<div class="toc">.-</dl></div>', "")
  body = body:gsub('<a [^>]*class="footnote"[^>]*><sup class="footnote">%[%d+%]</sup></a>', "")
  body = body:gsub('<a class="xref"[^>]*>(.-)</a>', function(shown) return shown:match("^(.-), “") or shown end)
  return (body:gsub('<div class="footnotes">.*$', ""):gsub("\194\160", " "))
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- A line of text that starts with '#' (a root shell prompt in an example)
-- is escaped so that markdown does not read it as a heading.
local function markdown_text(text)
  return (("\n" .. text):gsub("\n#", "\n\\#"):sub(2))
end

-- The sections of a chapter page: {level, id, title, text} per h1..h3 in
-- order, text being what lies between the heading and the next one.
local function sections(markup, name)
  local ids = {}
  for level, id in markup:gmatch('<h([1-3]) class="title"[^>]*><a id="([^"]+)"></a>') do
    ids[#ids + 1] = { level = tonumber(level), id = id }
  end
  local text, headings = rag.html_text(markup)
  if #headings ~= #ids then
    error(string.format("%s: %d headings but %d heading anchors", name, #headings, #ids), 0)
  end
  local out = {}
  for i, h in ipairs(headings) do
    if h.level ~= ids[i].level then error(string.format("%s: heading %d '%s' has no anchor", name, i, h.title), 0) end
    local stop = headings[i + 1] and headings[i + 1].start - 1 or #text
    local body = text:sub(h.start, stop):gsub("^[^\n]*\n?", "")
    out[i] = { level = h.level, id = ids[i].id, title = h.title, text = trim(body) }
  end
  return out
end

local function chapter_document(secs)
  local parts = {}
  for _, s in ipairs(secs) do
    parts[#parts + 1] = string.rep("#", s.level) .. " " .. s.title .. "\n"
    if s.text ~= "" then parts[#parts + 1] = "\n" .. markdown_text(s.text) .. "\n" end
    parts[#parts + 1] = "\n"
  end
  return table.concat(parts)
end

-- The questions of a chapter: section headings "N.M. Text" or "N.M.K. Text"
-- whose text asks something and whose section has text of its own.
local function questions(secs, chapter, out)
  for _, s in ipairs(secs) do
    local number, question = s.title:match("^(%d+%.%d+[%.%d]*)%.%s+(.*)$")
    if number and question:find("?", 1, true) and s.text ~= "" then
      out[#out + 1] = { id = s.id, chapter = chapter, section = number, question = question, answer = s.text }
    end
  end
end

local function write(path, text)
  local ok, err = host.write_atomic(path, text)
  if not ok then error(err, 0) end
end

local opts = parse_args(arg)
local version = package_version()
if host.kind(opts.faq) ~= "directory" then
  io.stderr:write("debian_faq: the Debian FAQ is not installed (" .. opts.faq .. "); " .. INSTALL .. "\n")
  return 1
end
local files = chapter_files(opts.faq)
if #files == 0 then
  io.stderr:write("debian_faq: no chapter pages *.en.html in " .. opts.faq .. "; " .. INSTALL .. "\n")
  return 1
end

local chapters = {}
for _, name in ipairs(files) do
  local html = assert(host.read_file(opts.faq .. "/" .. name))
  local secs = sections(chapter_markup(html, name), name)
  local number = secs[1] and secs[1].level == 1 and tonumber(secs[1].title:match("^Chapter (%d+)%."))
  if not number then error(name .. ": does not start with a heading \"Chapter N. Title\"", 0) end
  chapters[#chapters + 1] = { number = number, name = name:gsub("%.en%.html$", ""), secs = secs }
end
table.sort(chapters, function(a, b) return a.number < b.number end)

assert(host.mkdir_p(opts.out .. "/docs"))
local qa = {}
for _, c in ipairs(chapters) do
  local file = string.format("docs/%02d-%s.md", c.number, c.name)
  write(opts.out .. "/" .. file, chapter_document(c.secs))
  local before = #qa
  questions(c.secs, c.secs[1].title, qa)
  print(string.format("%-28s %3d sections, %3d questions", file, #c.secs - 1, #qa - before))
end
local lines = {}
for i, row in ipairs(qa) do lines[i] = json.encode(row) end
write(opts.out .. "/qa.jsonl", table.concat(lines, "\n") .. "\n")
write(opts.out .. "/source.json", json.encode({ package = "debian-faq", version = version or "unknown",
  pages = opts.faq }, 2) .. "\n")
print(string.format("%d chapters, %d questions -> %s (debian-faq %s)", #chapters, #qa, opts.out,
  version or "of unknown version"))
return 0
