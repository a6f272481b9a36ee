-- Progress bars: the line format, and how often a bar writes on a terminal
-- and in a log, driven by a fake clock.
local T = require "testing"
local progress = require "moonforge.progress"

-- A stream that keeps what is written, and a clock the test moves.
local function fake()
  local f = { written = {}, now = 0 }
  f.stream = { write = function(_, ...) for _, s in ipairs({ ... }) do f.written[#f.written + 1] = s end end }
  f.clock = function() return f.now end
  f.text = function() return table.concat(f.written) end
  return f
end

local function count(text, pattern)
  return select(2, text:gsub(pattern, ""))
end

T.test("format: count, percent, rate, elapsed and ETA", function()
  T.eq(progress.format{ label = "train", done = 45, total = 100, rate = 12.3, elapsed = 65, eta = 3723, info = "loss 2.31" },
    "train  45/100  45%  12.3/s  1:05 eta 1:02:03  loss 2.31")
  T.eq(progress.format{ label = "tokens", done = 123456, rate = 2.5e6, elapsed = 4 }, "tokens  123.5k  2.5M/s  0:04")
  T.eq(progress.format{ done = 0, total = 10 }, "0/10  0%")
  T.eq(progress.format_rate(1234), "1.2k/s")
  T.eq(progress.format_rate(0.5), "0.5/s")
  T.eq(progress.format_rate(999), "999/s")
  T.eq(progress.format_rate(3.2e9), "3.2G/s")
  T.eq(progress.format_count(99999), "99999")
  T.eq(progress.format_count(1e6), "1M")
end)

T.test("format with a width draws a bar and never reaches the edge", function()
  local line = progress.format{ label = "train", done = 50, total = 100, rate = 10, elapsed = 5, eta = 5, width = 80 }
  T.truthy(#line <= 79, "fits in 79 columns: " .. #line)
  local bar = line:match("%[([#%.]+)%]")
  T.truthy(bar, "a bar")
  T.eq(count(bar, "#"), #bar / 2, "half full")
  local narrow = progress.format{ label = "ünïcode", done = 5, total = 10, info = string.rep("x", 100), width = 40 }
  T.eq(#narrow - count(narrow, "[\128-\191]"), 39, "cut to the width in characters")
  local unknown = progress.format{ label = "read", done = 7, rate = 3, elapsed = 2, width = 80 }
  T.truthy(not unknown:find("[", 1, true) and not unknown:find("%", 1, true), "no bar without a total")
end)

T.test("in a log: a line at start, at each tenth and at finish", function()
  local f = fake()
  local bar = progress.new{ total = 1000, label = "x", stream = f.stream, tty = false, clock = f.clock }
  for i = 1, 1000 do
    f.now = i * 0.02
    bar:update(i)
  end
  bar:finish("done")
  bar:finish("again")
  local text = f.text()
  T.eq(count(text, "\n"), 11)
  T.truthy(text:match("^x  0/1000  0%%"), "start line")
  T.truthy(text:find("\nx  500/1000  50%  50/s  0:10 eta 0:10\n", 1, true), "half way")
  T.truthy(text:match("x  1000/1000  100%%  50/s  0:20 eta 0:00  done\n$"), "finish line")
  T.truthy(not text:find("\r", 1, true), "no carriage returns in a log")
end)

T.test("in a log: a quick step writes only its start and finish", function()
  local f = fake()
  local bar = progress.new{ total = 20, label = "x", stream = f.stream, tty = false, clock = f.clock }
  for i = 1, 20 do
    f.now = i * 0.002
    bar:advance()
  end
  bar:finish()
  T.eq(count(f.text(), "\n"), 2)
end)

T.test("in a log without a total: a line every 30 s", function()
  local f = fake()
  local bar = progress.new{ label = "read", stream = f.stream, tty = false, clock = f.clock }
  for i = 1, 100 do
    f.now = i
    bar:advance(1)
  end
  bar:finish()
  local text = f.text()
  T.eq(count(text, "\n"), 5, "start, 30 s, 60 s, 90 s, finish")
  T.truthy(text:find("read  30  1/s  0:30\n", 1, true))
end)

T.test("on a terminal: redrawn in place at most 10 times a second", function()
  local f = fake()
  local bar = progress.new{ total = 1000, label = "x", stream = f.stream, tty = true, width = 60, clock = f.clock }
  for i = 1, 1000 do
    f.now = i * 0.001
    bar:update(i, "step " .. i)
  end
  bar:finish()
  local text = f.text()
  local draws = count(text, "\r")
  T.truthy(draws >= 10 and draws <= 12, "draws in one second: " .. draws)
  T.truthy(text:sub(-1) == "\n", "finish ends the line")
  T.eq(count(text, "\n"), 1)
  for line in text:gmatch("\r([^\r\n]*)\27%[K") do
    T.truthy(#line <= 59, "each redraw fits the width")
  end
  T.truthy(text:find("1000/1000  100%", 1, true), "final state drawn")
end)

return T.done()
