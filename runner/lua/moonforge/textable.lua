-- moonforge.textable: tables of results for the terminal, HTML and Markdown,
-- and the value formatting every run writer shares.
--
--   tbl = { title = "optional", columns = { "a", "b" }, rows = { { 1, "x" }, ... } }
--   text(tbl)      aligned plain text; columns of numbers are right-aligned
--   html(tbl)      a <table> with inline alignment, so it renders anywhere
--   markdown(tbl)  a GitHub/Jupyter pipe table
--
-- Values: numbers print compactly (integers as integers, others with the
-- fewest of 4..6 significant digits that keep the value), nil and json.null
-- print as empty, booleans as true/false. Every string that reaches HTML or
-- Markdown is escaped, and invalid UTF-8 is replaced, so the output is
-- always a valid document fragment.
local json = require "moonforge.json"

local M = {}

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- Length of the UTF-8 sequence starting at byte i of s, and whether it is
-- valid. An invalid one is as long as its longest valid-looking start, so a
-- character cut short becomes one replacement, as the Unicode standard advises.
local function utf8_sequence(s, i)
  local c = s:byte(i)
  local n, lo, hi = nil, 0x80, 0xBF
  if c >= 0xC2 and c <= 0xDF then n = 2
  elseif c >= 0xE0 and c <= 0xEF then
    n = 3
    if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
  elseif c >= 0xF0 and c <= 0xF4 then
    n = 4
    if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
  else return 1, false end
  -- Only the second byte has a narrowed range (no overlongs, surrogates, > U+10FFFF).
  for k = 1, n - 1 do
    local b = s:byte(i + k)
    if not b or b < lo or b > hi then return k, false end
    lo, hi = 0x80, 0xBF
  end
  return n, true
end

-- s with every invalid UTF-8 sequence replaced by U+FFFD: model output may
-- stop in the middle of a character, and JSON must not.
function M.utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, i = {}, 1
  while true do
    local j = s:find("[\128-\255]", i)
    if not j then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, j - 1)
    local len, valid = utf8_sequence(s, j)
    out[#out + 1] = valid and s:sub(j, j + len - 1) or REPLACEMENT
    i = j + len
  end
  return table.concat(out)
end

local HTML_ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- Text for HTML or XML content and attribute values alike.
function M.escape_html(s)
  return (M.utf8_clean(tostring(s)):gsub("[&<>\"']", HTML_ENTITIES))
end

-- Text for Markdown inline content: the characters that would start markup
-- (emphasis, code, links, headings, table cells, raw HTML) are backslashed,
-- and line breaks become spaces so a value stays on its table row.
function M.escape_markdown(s)
  return (M.utf8_clean(tostring(s)):gsub("[\\`*_%[%]<>#|]", "\\%0"):gsub("\r?\n", " "))
end

local function shortest_exact(x)
  for digits = 4, 5 do
    local s = string.format("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
  return string.format("%.6g", x)
end

function M.format_number(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format("%.0f", x) end
  return shortest_exact(x)
end

function M.format_value(v)
  if v == nil or v == json.null then return "" end
  if type(v) == "number" then return M.format_number(v) end
  return tostring(v)
end

-- "M:SS" or "H:MM:SS", for elapsed times and ETAs.
function M.clock(seconds)
  local s = math.floor(seconds + 0.5)
  local h, m = math.floor(s / 3600), math.floor(s % 3600 / 60)
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s % 60) end
  return string.format("%d:%02d", m, s % 60)
end

-- "0.12 s" under a minute, the clock form above it; "" when unknown.
function M.duration(seconds)
  if type(seconds) ~= "number" then return "" end
  if seconds < 60 then return string.format("%.2f s", seconds) end
  return M.clock(seconds)
end

-- A column is numeric when every value it holds is a number.
local function numeric_columns(ncols, rows)
  local numeric = {}
  for c = 1, ncols do
    local any, all = false, true
    for _, row in ipairs(rows) do
      local v = row[c]
      if type(v) == "number" then any = true
      elseif v ~= nil and v ~= json.null then all = false end
    end
    numeric[c] = any and all
  end
  return numeric
end

local function check(tbl)
  if type(tbl) ~= "table" or type(tbl.columns) ~= "table" or #tbl.columns == 0 then
    error("textable: a table needs a non-empty 'columns' list", 3)
  end
  if tbl.rows ~= nil and type(tbl.rows) ~= "table" then error("textable: 'rows' must be a list", 3) end
  return tbl.rows or {}
end

-- Width in terminal columns: UTF-8 continuation bytes take none.
local function display_width(s)
  return #s - select(2, s:gsub("[\128-\191]", ""))
end

local function pad(s, width, right)
  local fill = string.rep(" ", width - display_width(s))
  return right and fill .. s or s .. fill
end

function M.text(tbl)
  local rows = check(tbl)
  local numeric = numeric_columns(#tbl.columns, rows)
  local cells = { {} }
  for c, name in ipairs(tbl.columns) do cells[1][c] = tostring(name) end
  for r, row in ipairs(rows) do
    cells[r + 1] = {}
    for c = 1, #tbl.columns do cells[r + 1][c] = (M.format_value(row[c]):gsub("\r?\n", " ")) end
  end
  local widths = {}
  for c = 1, #tbl.columns do
    widths[c] = 0
    for _, line in ipairs(cells) do widths[c] = math.max(widths[c], display_width(line[c])) end
  end
  local out = {}
  if tbl.title then out[1] = tostring(tbl.title) end
  local function emit(line)
    local parts = {}
    for c = 1, #tbl.columns do parts[c] = pad(line[c], widths[c], numeric[c]) end
    out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  emit(cells[1])
  local rules = {}
  for c = 1, #tbl.columns do rules[c] = string.rep("-", widths[c]) end
  emit(rules)
  for r = 2, #cells do emit(cells[r]) end
  return table.concat(out, "\n") .. "\n"
end

function M.html(tbl)
  local rows = check(tbl)
  local numeric = numeric_columns(#tbl.columns, rows)
  local function align(c) return numeric[c] and ' style="text-align:right"' or ' style="text-align:left"' end
  local out = { '<table class="mf-table">' }
  if tbl.title then out[#out + 1] = "<caption>" .. M.escape_html(tbl.title) .. "</caption>" end
  out[#out + 1] = "<thead><tr>"
  for c, name in ipairs(tbl.columns) do
    out[#out + 1] = "<th" .. align(c) .. ">" .. M.escape_html(name) .. "</th>"
  end
  out[#out + 1] = "</tr></thead>\n<tbody>\n"
  for _, row in ipairs(rows) do
    out[#out + 1] = "<tr>"
    for c = 1, #tbl.columns do
      out[#out + 1] = "<td" .. align(c) .. ">" .. M.escape_html(M.format_value(row[c])) .. "</td>"
    end
    out[#out + 1] = "</tr>\n"
  end
  out[#out + 1] = "</tbody></table>\n"
  return table.concat(out)
end

function M.markdown(tbl)
  local rows = check(tbl)
  local numeric = numeric_columns(#tbl.columns, rows)
  local out = {}
  if tbl.title then out[1] = "**" .. M.escape_markdown(tbl.title) .. "**\n" end
  local function line(values)
    out[#out + 1] = "| " .. table.concat(values, " | ") .. " |"
  end
  local header, rule = {}, {}
  for c, name in ipairs(tbl.columns) do
    header[c] = M.escape_markdown(name)
    rule[c] = numeric[c] and "---:" or "---"
  end
  line(header)
  line(rule)
  for _, row in ipairs(rows) do
    local values = {}
    for c = 1, #tbl.columns do values[c] = M.escape_markdown(M.format_value(row[c])) end
    line(values)
  end
  return table.concat(out, "\n") .. "\n"
end

return M
