-- moonforge.report: a run record as one self-contained HTML page.
--
-- render(record) -> HTML text (the record is described in moonforge.notebook).
-- The page needs nothing beyond itself: CSS is inline, plots are inline SVG,
-- there is no script, and artifact links are relative to the run folder the
-- page is written into. It holds a header with the run's facts, a table of
-- contents, each cell (facts, collapsible source, outputs in order, errors
-- highlighted), a metrics section with a value-vs-step plot for every metric
-- logged at more than one step and a table of final values, and the recipe.
-- All text from the record is escaped.
local textable = require "moonforge.textable"
local plot = require "moonforge.plot"
local runview = require "moonforge.runview"

local M = {}

local e = textable.escape_html

local STYLE = [[
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  color: #1f2328; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }
h1 { margin: 0 0 .4rem; } h2 { margin: 1.2rem 0 .4rem; font-size: 1.25rem; }
a { color: #0969da; }
.status { display: inline-block; padding: 0 .55rem; border-radius: .8rem; color: #fff;
  font-weight: 600; font-size: .85em; }
.status-success { background: #1a7f37; } .status-failed { background: #cf222e; }
.status-interrupted { background: #bc4c00; } .status-running { background: #0969da; }
.status-not-run { background: #8c959f; }
.facts { color: #59636e; }
table.mf-table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
table.mf-table th, table.mf-table td { border-bottom: 1px solid #d1d9e0; padding: .2rem .7rem; vertical-align: top; }
table.mf-table caption { text-align: left; font-weight: 600; padding-bottom: .2rem; }
pre { background: #f6f8fa; padding: .6rem .8rem; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 12.5px/1.4 ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
pre.error { background: #ffebe9; border-left: 4px solid #cf222e; color: #82071e; }
section.cell { border-top: 1px solid #d1d9e0; margin-top: 1.6rem; }
summary { cursor: pointer; color: #59636e; }
figure { margin: .6rem 0; } svg { max-width: 100%; height: auto; }
@media print {
  body { margin: 0; max-width: none; } a { color: inherit; text-decoration: none; }
  figure, table, h2 { break-inside: avoid; } h2 { break-after: avoid; }
}
]]

local function status_badge(status)
  status = status or "not run"
  return string.format('<span class="status status-%s">%s</span>', e((status:gsub("%W", "-"))), e(status))
end

local OUTPUT = {
  text = function(o) return "<pre>" .. e(o.text) .. "</pre>" end,
  table = function(o) return textable.html(o) end,
  metrics = function(o) return textable.html(o.table) end,
  -- The SVG comes from moonforge.plot, which escapes its own text.
  plot = function(o) return "<figure>" .. o.svg .. "</figure>" end,
  artifact = runview.artifact_html,
  error = function(o)
    local text = tostring(o.message or "error")
    if o.traceback and o.traceback ~= "" then text = text .. "\n" .. o.traceback end
    return '<pre class="error">' .. e(text) .. "</pre>"
  end,
}

local function header(record, out)
  out[#out + 1] = "<header>"
  out[#out + 1] = "<h1>" .. e(record.name or record.run_id or "run") .. "</h1>"
  out[#out + 1] = "<p>" .. status_badge(record.status) .. " <code>" .. e(record.run_id or "") .. "</code></p>"
  out[#out + 1] = textable.html(runview.summary(record))
  out[#out + 1] = "</header>"
end

local function contents(cells, out)
  out[#out + 1] = '<nav><h2>Cells</h2><ol>'
  for i, cell in ipairs(cells) do
    out[#out + 1] = string.format('<li><a href="#cell-%d">%s</a> %s <span class="facts">%s</span></li>', i,
      e(cell.title or ""), status_badge(cell.status), e(textable.duration(cell.duration)))
  end
  out[#out + 1] = "</ol></nav>"
end

local function cell_section(cell, i, out)
  local facts = runview.cell_facts(cell)
  for k = 2, #facts do facts[k] = e(facts[k]) end
  facts[1] = status_badge(cell.status)
  out[#out + 1] = string.format('<section class="cell" id="cell-%d">', i)
  out[#out + 1] = string.format("<h2>%d. %s</h2>", cell.index or i, e(cell.title or ""))
  out[#out + 1] = '<p class="facts">' .. table.concat(facts, " · ") .. "</p>"
  if cell.source and cell.source ~= "" then
    out[#out + 1] = "<details><summary>source</summary><pre><code>" .. e(cell.source) .. "</code></pre></details>"
  end
  for _, o in ipairs(runview.cell_outputs(cell)) do out[#out + 1] = OUTPUT[o.kind](o) end
  out[#out + 1] = "</section>"
end

-- One line plot of a metric against its step, a series per cell that
-- logged it; nil when fewer than two points have a step.
local function metric_plot(group)
  local series, by_cell, count = {}, {}, 0
  for _, p in ipairs(group.points) do
    if type(p.step) == "number" then
      local key = p.cell ~= nil and tostring(p.cell) or ""
      local s = by_cell[key]
      if not s then
        s = { name = key ~= "" and key or group.name, x = {}, y = {} }
        by_cell[key] = s
        series[#series + 1] = s
      end
      s.x[#s.x + 1], s.y[#s.y + 1] = p.step, p.value
      count = count + 1
    end
  end
  if count < 2 then return nil end
  return plot.svg{ kind = "line", title = group.name, xlabel = "step", ylabel = group.name, series = series }
end

local function metrics_section(record, out)
  local groups = runview.fold_metrics(record.metrics or {})
  if #groups == 0 then return end
  out[#out + 1] = '<section id="metrics"><h2>Metrics</h2>'
  for _, g in ipairs(groups) do
    local svg = metric_plot(g)
    if svg then out[#out + 1] = "<figure>" .. svg .. "</figure>" end
  end
  out[#out + 1] = textable.html(runview.metric_table(groups, "Final values"))
  out[#out + 1] = "</section>"
end

function M.render(record)
  local out = {
    "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>" .. e((record.name or "run") .. " · " .. (record.run_id or "") .. " · " .. (record.status or "")) .. "</title>",
    "<style>" .. STYLE .. "</style>", "</head>", "<body>",
  }
  header(record, out)
  local cells = record.cells or {}
  if #cells > 0 then contents(cells, out) end
  for i, cell in ipairs(cells) do cell_section(cell, i, out) end
  metrics_section(record, out)
  if record.recipe_source then
    out[#out + 1] = string.format('<section id="recipe"><h2>Recipe</h2><details><summary>%s</summary><pre><code>%s</code></pre></details></section>',
      e(record.recipe_path or record.name or "recipe"), e(record.recipe_source))
  end
  out[#out + 1] = "<footer><p class=\"facts\">" .. e(runview.engine_text(record)) .. "</p></footer>"
  out[#out + 1] = "</body>"
  out[#out + 1] = "</html>"
  return table.concat(out, "\n") .. "\n"
end

return M
