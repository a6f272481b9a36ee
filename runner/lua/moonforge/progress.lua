-- moonforge.progress: progress bars for long steps.
--
--   local bar = progress.new{ total = n, label = "train", stream = io.stderr, tty = nil }
--   bar:update(done [, info])   bar:advance([k [, info]])   bar:finish([info])
--
-- On a terminal one line is redrawn in place ("\r"): label, bar, done/total,
-- percent, rate, elapsed time and ETA, info; at most 10 redraws a second and
-- never wider than the terminal. Elsewhere (logs, pipes) a plain line is
-- written at the start, when a further tenth of the total is reached (at
-- least 1 s after the last line, so a quick step logs only its start and
-- finish), when 30 s have passed since the last line, and at finish.
-- With total = nil there is no bar or ETA, only the count and the rate.
--
-- `tty` overrides terminal detection; `clock` (seconds, monotonic) and
-- `width` replace host.clock and the terminal width, for tests.
-- format{...} builds one line from plain values and is what the bar prints.
local host = require "moonforge.host"
local textable = require "moonforge.textable"

local M = {}

local REDRAW_INTERVAL = 0.1
local LOG_INTERVAL = 30
local LOG_MIN_INTERVAL = 1
local BAR_MIN, BAR_MAX = 10, 40

-- 1234 -> "1.2k", 2.5e6 -> "2.5M"; smaller values with 3 significant digits.
local function si(x)
  local units = { { 1e12, "T" }, { 1e9, "G" }, { 1e6, "M" }, { 1e3, "k" } }
  for _, u in ipairs(units) do
    if math.abs(x) >= u[1] * 0.9995 then
      return (string.format("%.1f", x / u[1]):gsub("%.0$", "")) .. u[2]
    end
  end
  return string.format("%.3g", x)
end

function M.format_rate(rate) return si(rate) .. "/s" end

-- Counts stay exact below 100000 and turn compact above.
function M.format_count(n)
  if n == math.floor(n) and math.abs(n) < 1e5 then return string.format("%d", n) end
  return si(n)
end

local function display_width(s)
  return #s - select(2, s:gsub("[\128-\191]", ""))
end

-- The first `width` display columns of s, never cutting a UTF-8 character.
local function fit(s, width)
  if display_width(s) <= width then return s end
  local out, n = {}, 0
  for ch in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do
    if n == width then break end
    out[#out + 1] = ch
    n = n + 1
  end
  return table.concat(out)
end

-- One progress line. `width` (terminal columns) adds a bar and keeps the
-- line one column short of the edge, so the terminal never wraps it.
function M.format(p)
  local left, right = {}, {}
  if p.label and p.label ~= "" then left[1] = tostring(p.label) end
  local count = M.format_count(p.done or 0)
  if p.total then
    count = count .. "/" .. M.format_count(p.total)
    right[#right + 1] = string.format("%d%%", math.floor(100 * math.min(1, (p.done or 0) / math.max(p.total, 1e-300))))
  end
  table.insert(right, 1, count)
  if p.rate then right[#right + 1] = M.format_rate(p.rate) end
  if p.elapsed then
    right[#right + 1] = textable.clock(p.elapsed) .. (p.eta and (" eta " .. textable.clock(p.eta)) or "")
  end
  if p.info and p.info ~= "" then right[#right + 1] = tostring(p.info) end
  local tail = table.concat(right, "  ")
  if not (p.width and p.total) then
    left[#left + 1] = tail
    local line = table.concat(left, "  ")
    return p.width and fit(line, p.width - 1) or line
  end
  local head = left[1] and (left[1] .. " ") or ""
  -- A third of what the label leaves, so the bar keeps its size as the tail changes.
  local bar_width = math.max(BAR_MIN, math.min(BAR_MAX, math.floor((p.width - display_width(head)) / 3)))
  local filled = math.floor(bar_width * math.min(1, math.max(0, (p.done or 0) / math.max(p.total, 1e-300))))
  local bar = "[" .. string.rep("#", filled) .. string.rep(".", bar_width - filled) .. "]"
  return fit(head .. bar .. "  " .. tail, p.width - 1)
end

local Bar = {}
Bar.__index = Bar

local function terminal_fd(stream)
  if stream == io.stdout then return 1 end
  if stream == io.stderr then return 2 end
  return nil
end

function M.new(opts)
  opts = opts or {}
  local stream = opts.stream or io.stderr
  local fd = terminal_fd(stream)
  local tty = opts.tty
  if tty == nil then tty = fd ~= nil and host.isatty(fd) end
  local clock = opts.clock or host.clock
  local self = setmetatable({
    total = opts.total, label = opts.label, stream = stream, tty = tty, fd = fd or 2,
    clock = clock, width = opts.width, done = 0, info = nil, start = clock(), finished = false,
  }, Bar)
  self:draw()
  return self
end

-- The line as it stands now.
function Bar:line(width)
  local elapsed = self.clock() - self.start
  local rate = elapsed > 0 and self.done / elapsed or nil
  local eta
  if self.total and rate and rate > 0 then eta = math.max(0, self.total - self.done) / rate end
  return M.format{ label = self.label, done = self.done, total = self.total, rate = rate,
    elapsed = elapsed, eta = eta, info = self.info, width = width }
end

function Bar:draw()
  self.last_draw = self.clock()
  -- Text already printed on stdout must appear before the bar, not after it.
  if self.stream ~= io.stdout then io.stdout:flush() end
  if self.tty then
    self.stream:write("\r", self:line(self.width or host.term_width(self.fd)), "\27[K")
  else
    self.stream:write(self:line(nil), "\n")
    if self.total and self.total > 0 then
      self.next_mark = (math.floor(self.done / self.total * 10 + 1e-9) + 1) * self.total / 10
    end
  end
  if self.stream.flush then self.stream:flush() end
end

-- Whether an update now deserves a new line or redraw.
function Bar:due()
  local since = self.clock() - self.last_draw
  if self.tty then return since >= REDRAW_INTERVAL end
  if since >= LOG_INTERVAL then return true end
  return since >= LOG_MIN_INTERVAL and self.next_mark ~= nil and self.done >= self.next_mark
    and self.done < self.total
end

function Bar:update(done, info)
  if self.finished then return end
  self.done = done
  if info ~= nil then self.info = info end
  if self:due() then self:draw() end
end

function Bar:advance(k, info)
  self:update(self.done + (k or 1), info)
end

-- Draws the final state once; later calls do nothing.
function Bar:finish(info)
  if self.finished then return end
  if info ~= nil then self.info = info end
  self:draw()
  if self.tty then self.stream:write("\n") end
  self.finished = true
end

return M
