-- moonforge.data_read: the readers and reports behind mf.data (see
-- moonforge.data for the public face).
--
-- Readers return rows and a report. A bad row (malformed JSON, a CSV record
-- with the wrong field count, invalid UTF-8, an empty file in a folder) is an
-- error naming its file and line, or with {strict = false} an entry of
-- report.bad = {{where = "train.jsonl:17", message = ...}, ...}; either way
-- it is never dropped unnoticed. Every row remembers where it came from
-- (M.where(row)), so later steps (validation) can name the line too.
local host = require "moonforge.host"
local json = require "moonforge.json"
local textable = require "moonforge.textable"

local M = {}
local OBJECT_MT = getmetatable(json.object())

------------------------------------------------------------------------
-- Reports
------------------------------------------------------------------------

-- A report of one step: how many items were kept and dropped, and why.
-- Steps add their own counts (tokens, rows, sizes of split parts).
function M.report(step)
  return { step = step, kept = 0, dropped = 0, reasons = {}, bad = {} }
end

-- Records a dropped item. With strict, the message is raised instead.
function M.drop(report, reason, where, message, strict)
  local text = where and (where .. ": " .. message) or message
  if strict then error(text, 0) end
  report.dropped = report.dropped + 1
  report.reasons[reason] = (report.reasons[reason] or 0) + 1
  report.bad[#report.bad + 1] = { where = where, message = message }
end

local SHOWN_BAD = 20

-- Prints the report into a cell's output when opts.ctx is given.
function M.show(report, opts)
  local ctx = opts and opts.ctx
  if not ctx then return report end
  local rows = { { "kept", report.kept }, { "dropped", report.dropped } }
  local reasons = {}
  for reason in pairs(report.reasons) do reasons[#reasons + 1] = reason end
  table.sort(reasons)
  for _, reason in ipairs(reasons) do rows[#rows + 1] = { "  " .. reason, report.reasons[reason] } end
  for _, key in ipairs({ "rows", "tokens", "trained_tokens", "truncated" }) do
    if report[key] then rows[#rows + 1] = { key, report[key] } end
  end
  local names = {}
  for name in pairs(report.sizes or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do rows[#rows + 1] = { "part " .. name, report.sizes[name] } end
  ctx:table({ title = report.step, columns = { "", "count" }, rows = rows })
  if #report.bad > 0 then
    local bad = {}
    for i = 1, math.min(#report.bad, SHOWN_BAD) do bad[i] = { report.bad[i].where or "", report.bad[i].message } end
    local more = #report.bad > SHOWN_BAD and string.format(" (first %d of %d)", SHOWN_BAD, #report.bad) or ""
    ctx:table({ title = report.step .. ": dropped rows" .. more, columns = { "where", "why" }, rows = bad })
  end
  return report
end

------------------------------------------------------------------------
-- Where rows came from
------------------------------------------------------------------------

local origins = setmetatable({}, { __mode = "k" })

-- "file:line" of a row read from a file; otherwise "row i".
function M.where(row, i)
  return type(row) == "table" and origins[row] or ("row " .. i)
end

-- Keeps a row (with its origin) in rows.
local function keep(rows, report, row, where)
  origins[row] = where
  rows[#rows + 1] = row
  report.kept = report.kept + 1
end

-- The file's text without a UTF-8 byte-order mark (which is not content).
local function read_file(path)
  local text, err = host.read_file(path)
  if not text then error(err, 0) end
  return (text:gsub("^\239\187\191", ""))
end

local function read_nonempty(path)
  local text = read_file(path)
  if text == "" then error(path .. ": empty file", 0) end
  return text
end

local function valid_utf8(s) return textable.utf8_clean(s) == s end

------------------------------------------------------------------------
-- JSON Lines
------------------------------------------------------------------------

function M.read_jsonl(path, opts)
  local strict = not (opts and opts.strict == false)
  local rows, report = {}, M.report("read " .. path)
  local line = 0
  for text in (read_nonempty(path) .. "\n"):gmatch("([^\n]*)\n") do
    line = line + 1
    text = text:gsub("\r$", "")
    local where = path .. ":" .. line
    if text:find("%S") then
      local row, err = json.decode(text)
      if row == nil then
        local column, message = err:match("^line %d+, column (%d+): (.*)$")
        M.drop(report, "malformed JSON", where, (message or err) .. (column and (" (column " .. column .. ")") or ""),
          strict)
      elseif type(row) ~= "table" or getmetatable(row) ~= OBJECT_MT then
        M.drop(report, "not an object", where, "expected a JSON object, got " .. text:sub(1, 40), strict)
      else
        keep(rows, report, row, where)
      end
    end
  end
  if report.kept + report.dropped == 0 then error(path .. ": no rows (only blank lines)", 0) end
  return rows, M.show(report, opts)
end

------------------------------------------------------------------------
-- CSV (RFC 4180): fields separated by sep, records by CRLF or LF; a field
-- in double quotes may hold separators, line breaks and doubled quotes.
------------------------------------------------------------------------

local function count_lines(s) return select(2, s:gsub("\n", "")) end

-- A quoted field starting at pos (on the opening quote): value, next pos.
local function quoted_field(text, pos)
  local parts, i = {}, pos + 1
  while true do
    local q = text:find('"', i, true)
    if not q then return nil, "unterminated quoted field" end
    parts[#parts + 1] = text:sub(i, q - 1)
    if text:sub(q + 1, q + 1) ~= '"' then return table.concat(parts), q + 1 end
    parts[#parts + 1] = '"'
    i = q + 2
  end
end

-- Where a line ends: the position after the next "\n" at or after pos.
local function next_line(text, pos)
  return (text:find("\n", pos, true) or #text) + 1
end

-- One record starting at pos: its fields and the position after it; or nil,
-- the position of the next line (to resume from) and what was wrong.
local function csv_record(text, pos, sep, special)
  local fields = {}
  while true do
    local field, after
    if text:sub(pos, pos) == '"' then
      field, after = quoted_field(text, pos)
      if not field then return nil, #text + 1, after end
      after = text:match("^\r()\n", after) or after
      local c = text:sub(after, after)
      if c ~= sep and c ~= "\n" and c ~= "" then
        return nil, next_line(text, after), "text after a closing quote"
      end
    else
      after = text:find(special, pos) or #text + 1
      if text:sub(after, after) == '"' then
        return nil, next_line(text, after), "a quote inside an unquoted field"
      end
      field = text:sub(pos, after - 1)
      if text:sub(after, after) ~= sep then field = field:gsub("\r$", "") end
    end
    fields[#fields + 1] = field
    if text:sub(after, after) ~= sep then return fields, after + 1 end
    pos = after + 1
  end
end

-- Records {fields =, line =} in file order; a malformed one is
-- {problem =, line =} instead.
local function csv_records(text, sep)
  local special = "[" .. sep:gsub("%p", "%%%0") .. '"\n]'
  local records, pos, line = {}, 1, 1
  while pos <= #text do
    local fields, stop, problem = csv_record(text, pos, sep, special)
    if not (fields and #fields == 1 and fields[1] == "") then -- a blank line holds no record
      records[#records + 1] = { fields = fields, problem = problem, line = line }
    end
    line = line + count_lines(text:sub(pos, stop - 1))
    pos = stop
  end
  return records
end

local function header_names(path, record)
  if not record.fields then error(string.format("%s:%d: %s", path, record.line, record.problem), 0) end
  local seen = {}
  for i, name in ipairs(record.fields) do
    if name == "" then error(string.format("%s:%d: column %d has no name", path, record.line, i), 0) end
    if seen[name] then error(string.format("%s:%d: column '%s' appears twice", path, record.line, name), 0) end
    seen[name] = true
  end
  return record.fields
end

function M.read_csv(path, opts)
  opts = opts or {}
  local strict, sep = opts.strict ~= false, opts.sep or ","
  if #sep ~= 1 or sep == '"' or sep == "\n" or sep == "\r" then
    error("read_csv: sep must be one character other than a quote or line break", 2)
  end
  local report = M.report("read " .. path)
  local records = csv_records(read_nonempty(path), sep)
  local names = opts.header ~= false and records[1] and header_names(path, table.remove(records, 1))
  local rows = {}
  for _, record in ipairs(records) do
    local where = path .. ":" .. record.line
    local fields = record.fields
    if not fields then
      M.drop(report, "malformed CSV", where, record.problem, strict)
    elseif names and #fields ~= #names then
      M.drop(report, "wrong field count", where,
        string.format("%d fields, the header has %d", #fields, #names), strict)
    elseif not valid_utf8(table.concat(fields)) then
      M.drop(report, "invalid UTF-8", where, "not valid UTF-8", strict)
    else
      local row = fields
      if names then
        row = {}
        for i, name in ipairs(names) do row[name] = fields[i] end
      end
      keep(rows, report, row, where)
    end
  end
  if report.kept + report.dropped == 0 then error(path .. ": no rows", 0) end
  return rows, M.show(report, opts)
end

------------------------------------------------------------------------
-- Folders of text files: one row {text =, file =} per file, in name order.
------------------------------------------------------------------------

function M.read_text_folder(dir, opts)
  opts = opts or {}
  local strict, ext = opts.strict ~= false, opts.ext or ".txt"
  local names, err = host.listdir(dir)
  if not names then error(err, 0) end
  local rows, report = {}, M.report("read " .. dir)
  for _, name in ipairs(names) do
    local path = dir .. "/" .. name
    if name:sub(-#ext) == ext and host.kind(path) == "file" then
      local text = read_file(path)
      if text == "" then
        M.drop(report, "empty file", path, "empty file", strict)
      elseif not valid_utf8(text) then
        M.drop(report, "invalid UTF-8", path, "not valid UTF-8", strict)
      else
        keep(rows, report, { text = text, file = name }, path)
      end
    end
  end
  if report.kept + report.dropped == 0 then error(dir .. ": no *" .. ext .. " files", 0) end
  return rows, M.show(report, opts)
end

return M
