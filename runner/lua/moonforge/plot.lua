-- moonforge.plot: line and bar charts as standalone SVG 1.1 text.
--
--   svg{ kind = "line", title =, xlabel =, ylabel =, logy = false, width =, height =,
--        series = { { name =, x = {...}, y = {...} }, ... } }
--   svg{ kind = "bar", title =, ylabel =, labels = { "base", "tuned" },
--        series = { { name = "accuracy", values = { 0.4, 0.9 } }, ... } }
--
-- Axes get "nice" ticks (1, 2 or 5 times a power of ten; decades when logy).
-- A line breaks where y is NaN, infinite or missing (and, with logy, not
-- positive); points are marked when a series is short. x defaults to 1..n.
-- Output is deterministic: coordinates are printed with fixed precision, so
-- the same spec gives the same bytes. Bad specs (no series, an empty series,
-- x and y of different lengths) raise an error naming the series.
local textable = require "moonforge.textable"

local M = {}

local escape = textable.escape_html

-- Okabe-Ito colours (distinguishable with common colour blindness), without
-- the yellow that vanishes on white; later series reuse them dashed.
local PALETTE = { "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#444444" }
local DASHES = { "6 3", "2 2", "8 3 2 3" }
local CHAR_WIDTH = 7 -- rough width of a 12 px sans-serif character
local MARKER_LIMIT = 30

local function style_of(i)
  local k = (i - 1) % #PALETTE + 1
  local round = math.floor((i - 1) / #PALETTE)
  return PALETTE[k], round > 0 and DASHES[(round - 1) % #DASHES + 1] or nil
end

local function num(x)
  local s = string.format("%.1f", x)
  return s == "-0.0" and "0.0" or s
end

local function finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

-- Ticks covering [lo, hi] about `target` times, at multiples of a step of
-- 1, 2 or 5 times a power of ten. Returns the ticks (first <= lo, last >= hi)
-- and the step. A zero-width range is widened first.
function M.nice_ticks(lo, hi, target)
  target = target or 5
  if hi < lo then lo, hi = hi, lo end
  if hi == lo then
    local pad = lo == 0 and 1 or math.abs(lo) * 0.1
    lo, hi = lo - pad, hi + pad
  end
  local raw = (hi - lo) / target
  local magnitude = 10 ^ math.floor(math.log10(raw))
  local step
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    step = m * magnitude
    if raw <= step * (1 + 1e-9) then break end
  end
  local first = math.floor(lo / step + 1e-9)
  local last = math.ceil(hi / step - 1e-9)
  local ticks = {}
  for k = first, last do ticks[#ticks + 1] = k * step end
  return ticks, step
end

-- Ticks for a log axis covering [lo, hi] (both > 0): 1, 2 and 5 times each
-- power of ten, trimmed to the data, when it spans two decades or less;
-- otherwise powers of ten, every `stride` decades so there are at most about 8.
local function log_ticks(lo, hi)
  if lo == hi then lo, hi = lo / 2, hi * 2 end
  local first, last = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
  local ticks = {}
  if last - first <= 2 then
    local from, to
    for k = first, last do
      for _, m in ipairs({ 1, 2, 5 }) do
        local t = m * 10 ^ k
        if t <= lo * (1 + 1e-9) then from = #ticks + 1 end
        if t >= hi * (1 - 1e-9) and not to then to = #ticks + 1 end
        ticks[#ticks + 1] = t
      end
    end
    return { unpack(ticks, from, to) }
  end
  local stride = math.ceil((last - first) / 8)
  first = math.floor(first / stride) * stride
  last = math.ceil(last / stride) * stride
  for k = first, last, stride do ticks[#ticks + 1] = 10 ^ k end
  return ticks
end

-- Labels for linear ticks: as many decimals as the step needs, %g for
-- magnitudes where fixed notation is unreadable.
local function linear_labels(ticks, step)
  local big = math.max(math.abs(ticks[1]), math.abs(ticks[#ticks]))
  local labels = {}
  for i, t in ipairs(ticks) do
    if big >= 1e6 or step < 1e-4 then
      labels[i] = string.format("%g", t)
    else
      local decimals = step < 1 and math.ceil(-math.log10(step) - 1e-9) or 0
      labels[i] = string.format("%." .. decimals .. "f", t)
      if tonumber(labels[i]) == 0 then labels[i] = string.format("%." .. decimals .. "f", 0) end
    end
  end
  return labels
end

local function log_labels(ticks)
  local labels = {}
  for i, t in ipairs(ticks) do labels[i] = string.format("%g", t) end
  return labels
end

-- An axis maps data values onto pixels between p0 and p1.
local function axis(ticks, labels, p0, p1, log)
  local f = log and math.log10 or function(v) return v end
  local lo, hi = f(ticks[1]), f(ticks[#ticks])
  return {
    ticks = ticks, labels = labels,
    pos = function(v) return p0 + (f(v) - lo) / (hi - lo) * (p1 - p0) end,
  }
end

local function longest(labels)
  local n = 0
  for _, l in ipairs(labels) do n = math.max(n, #l) end
  return n
end

-- What every chart starts with: the <svg> element, background, title and
-- axis labels, and the plot area's bounds (left, right, top, bottom), whose
-- margins make room for the y tick labels and, with several series, the legend.
local function frame(spec, ylabels, legend_names)
  local w, h = spec.width or 640, spec.height or 360
  local f = {
    out = {},
    left = 16 + (spec.ylabel and 18 or 0) + CHAR_WIDTH * longest(ylabels),
    right = w - 16, top = spec.title and 36 or 16, bottom = h - (spec.xlabel and 44 or 28),
  }
  if #legend_names > 1 then f.right = w - 44 - CHAR_WIDTH * math.min(longest(legend_names), 24) end
  local out = f.out
  out[1] = string.format('<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" '
    .. 'viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">', w, h, w, h)
  if spec.title then out[#out + 1] = "<title>" .. escape(spec.title) .. "</title>" end
  out[#out + 1] = string.format('<rect width="%d" height="%d" fill="#ffffff"/>', w, h)
  if spec.title then
    out[#out + 1] = string.format('<text x="%s" y="22" text-anchor="middle" font-size="14" font-weight="bold">%s</text>',
      num(w / 2), escape(spec.title))
  end
  if spec.xlabel then
    out[#out + 1] = string.format('<text x="%s" y="%s" text-anchor="middle">%s</text>',
      num((f.left + f.right) / 2), num(h - 10), escape(spec.xlabel))
  end
  if spec.ylabel then
    local cy = (f.top + f.bottom) / 2
    out[#out + 1] = string.format('<text x="16" y="%s" text-anchor="middle" transform="rotate(-90 16 %s)">%s</text>',
      num(cy), num(cy), escape(spec.ylabel))
  end
  return f
end

local function draw_y_axis(f, ax)
  local out = f.out
  for i, t in ipairs(ax.ticks) do
    local y = num(ax.pos(t))
    out[#out + 1] = string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e5e5e5"/>',
      num(f.left), y, num(f.right), y)
    out[#out + 1] = string.format('<text x="%s" y="%s" text-anchor="end">%s</text>',
      num(f.left - 6), num(ax.pos(t) + 4), escape(ax.labels[i]))
  end
  out[#out + 1] = string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333333"/>',
    num(f.left), num(f.top), num(f.left), num(f.bottom))
  out[#out + 1] = string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333333"/>',
    num(f.left), num(f.bottom), num(f.right), num(f.bottom))
end

local function draw_legend(f, names, swatch)
  if #names < 2 then return end
  local out = f.out
  for i, name in ipairs(names) do
    local y = f.top + 8 + (i - 1) * 18
    out[#out + 1] = swatch(i, f.right + 12, y)
    out[#out + 1] = string.format('<text x="%s" y="%s">%s</text>', num(f.right + 36), num(y + 4), escape(name))
  end
end

local function finish(f)
  f.out[#f.out + 1] = "</svg>"
  return table.concat(f.out, "\n") .. "\n"
end

local function series_name(s, i)
  return s.name ~= nil and tostring(s.name) or ("series " .. i)
end

local function usable(x, y, logy)
  return finite(x) and finite(y) and (not logy or y > 0)
end

-- Raises, at the caller of svg(), the first problem that makes spec undrawable.
local function validate(spec)
  local function fail(fmt, ...) error("plot: " .. string.format(fmt, ...), 4) end
  if type(spec.series) ~= "table" or #spec.series == 0 then
    fail("no series to draw%s", spec.title and (" in '" .. tostring(spec.title) .. "'") or "")
  end
  if spec.kind == "bar" then
    if type(spec.labels) ~= "table" or #spec.labels == 0 then fail("a bar chart needs a non-empty 'labels' list") end
    for i, s in ipairs(spec.series) do
      if type(s.values) ~= "table" or #s.values ~= #spec.labels then
        fail("series '%s' has %d values for %d labels", series_name(s, i),
          type(s.values) == "table" and #s.values or 0, #spec.labels)
      end
    end
    return
  end
  local any = false
  for i, s in ipairs(spec.series) do
    if type(s.y) ~= "table" or #s.y == 0 then fail("series '%s' has no y values", series_name(s, i)) end
    if s.x ~= nil and (type(s.x) ~= "table" or #s.x ~= #s.y) then
      fail("series '%s' has %d x values and %d y values", series_name(s, i),
        type(s.x) == "table" and #s.x or 0, #s.y)
    end
    for k = 1, #s.y do any = any or usable(s.x and s.x[k] or k, s.y[k], spec.logy) end
  end
  if not any then fail("no finite points to draw%s", spec.logy and " (logy needs y > 0)" or "") end
end

-- Points of one line series as { x, y } pairs, with false marking a gap.
local function line_points(s, logy)
  local points = {}
  for k = 1, #s.y do
    local x, y = s.x and s.x[k] or k, s.y[k]
    points[k] = usable(x, y, logy) and { x, y }
  end
  return points
end

local function data_range(all_points, which)
  local lo, hi = math.huge, -math.huge
  for _, points in ipairs(all_points) do
    for _, p in ipairs(points) do
      if p then lo, hi = math.min(lo, p[which]), math.max(hi, p[which]) end
    end
  end
  return lo, hi
end

local function dash_attr(dash)
  return dash and (' stroke-dasharray="' .. dash .. '"') or ""
end

-- One series: a polyline per unbroken run of points; every point marked
-- when there are few, so a lone point between gaps is never invisible.
local function draw_line_series(out, points, i, xa, ya)
  local color, dash = style_of(i)
  local coords, count = {}, 0
  for k, p in ipairs(points) do
    if p then
      coords[k] = { num(xa.pos(p[1])), num(ya.pos(p[2])) }
      count = count + 1
    end
  end
  local marked = count <= MARKER_LIMIT
  local function marker(c)
    return string.format('<circle cx="%s" cy="%s" r="2.5" fill="%s"/>', c[1], c[2], color)
  end
  local run = {}
  local function flush()
    if #run > 1 then
      local xy = {}
      for j, c in ipairs(run) do xy[j] = c[1] .. "," .. c[2] end
      out[#out + 1] = string.format('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>',
        color, dash_attr(dash), table.concat(xy, " "))
    elseif #run == 1 and not marked then
      out[#out + 1] = marker(run[1])
    end
    run = {}
  end
  for k = 1, #points do
    if coords[k] then run[#run + 1] = coords[k] else flush() end
  end
  flush()
  if not marked then return end
  for k = 1, #points do
    if coords[k] then out[#out + 1] = marker(coords[k]) end
  end
end

local function line_chart(spec)
  local all, names = {}, {}
  for i, s in ipairs(spec.series) do
    all[i] = line_points(s, spec.logy)
    names[i] = series_name(s, i)
  end
  local ylo, yhi = data_range(all, 2)
  local yticks, ylabels
  if spec.logy then
    yticks = log_ticks(ylo, yhi)
    ylabels = log_labels(yticks)
  else
    local step
    yticks, step = M.nice_ticks(ylo, yhi)
    ylabels = linear_labels(yticks, step)
  end
  local f = frame(spec, ylabels, names)
  local xticks, xstep = M.nice_ticks(data_range(all, 1))
  local xa = axis(xticks, linear_labels(xticks, xstep), f.left, f.right)
  local ya = axis(yticks, ylabels, f.bottom, f.top, spec.logy)
  draw_y_axis(f, ya)
  local out = f.out
  for i, t in ipairs(xticks) do
    local x = num(xa.pos(t))
    out[#out + 1] = string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333333"/>',
      x, num(f.bottom), x, num(f.bottom + 4))
    out[#out + 1] = string.format('<text x="%s" y="%s" text-anchor="middle">%s</text>',
      x, num(f.bottom + 17), escape(xa.labels[i]))
  end
  for i, points in ipairs(all) do draw_line_series(out, points, i, xa, ya) end
  draw_legend(f, names, function(i, x, y)
    local color, dash = style_of(i)
    return string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"%s/>',
      num(x), num(y), num(x + 18), num(y), color, dash_attr(dash))
  end)
  return finish(f)
end

-- A bar's value, short enough to sit over it; the exact value belongs in a table.
local function bar_label(v)
  if v == math.floor(v) then return textable.format_number(v) end
  return string.format("%.4g", v)
end

local function bar_chart(spec)
  local labels = spec.labels
  local names, lo, hi = {}, 0, 0
  for i, s in ipairs(spec.series) do
    names[i] = series_name(s, i)
    for _, v in ipairs(s.values) do
      if finite(v) then lo, hi = math.min(lo, v), math.max(hi, v) end
    end
  end
  -- Room beyond the longest bars for their value labels.
  local pad = 0.08 * (hi - lo)
  local yticks, step = M.nice_ticks(lo < 0 and lo - pad or lo, hi > 0 and hi + pad or hi)
  local ylabels = linear_labels(yticks, step)
  local f = frame(spec, ylabels, names)
  local ya = axis(yticks, ylabels, f.bottom, f.top)
  draw_y_axis(f, ya)
  local out = f.out
  local group = (f.right - f.left) / #labels
  local bar = group * 0.8 / #spec.series
  local zero = ya.pos(0)
  for g, label in ipairs(labels) do
    local gx = f.left + (g - 1) * group
    out[#out + 1] = string.format('<text x="%s" y="%s" text-anchor="middle">%s</text>',
      num(gx + group / 2), num(f.bottom + 17), escape(label))
    for i, s in ipairs(spec.series) do
      local v = s.values[g]
      if finite(v) then
        local x, y = gx + group * 0.1 + (i - 1) * bar, ya.pos(v)
        out[#out + 1] = string.format('<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>',
          num(x), num(math.min(y, zero)), num(bar - 1), num(math.abs(zero - y)), (style_of(i)))
        out[#out + 1] = string.format('<text x="%s" y="%s" text-anchor="middle" font-size="10">%s</text>',
          num(x + bar / 2), num(v >= 0 and y - 4 or y + 12), escape(bar_label(v)))
      end
    end
  end
  draw_legend(f, names, function(i, x, y)
    return string.format('<rect x="%s" y="%s" width="18" height="10" fill="%s"/>', num(x), num(y - 5), (style_of(i)))
  end)
  return finish(f)
end

local CHARTS = { line = line_chart, bar = bar_chart }

function M.svg(spec)
  if type(spec) ~= "table" then error("plot: svg expects a spec table", 2) end
  local chart = CHARTS[spec.kind or "line"]
  if not chart then error("plot: unknown kind '" .. tostring(spec.kind) .. "' (line or bar)", 2) end
  validate(spec)
  return chart(spec)
end

return M
