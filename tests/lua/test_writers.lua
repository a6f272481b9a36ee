-- The run writers: the Jupyter notebook, the HTML report and text tables,
-- checked on a sample run record holding every kind of output.
local T = require "testing"
local json = require "moonforge.json"
local notebook = require "moonforge.notebook"
local report = require "moonforge.report"
local plot = require "moonforge.plot"
local textable = require "moonforge.textable"

local ARRAY_MT, OBJECT_MT = getmetatable(json.array()), getmetatable(json.object())

local function loss_curve()
  local steps, values = {}, {}
  for i = 1, 5 do steps[i], values[i] = i * 10, 3 / i end
  return steps, values
end

-- A finished run of four cells: one with text, a table, a metric and an
-- artifact; one cached with a loss curve; one failed; one not run.
local function sample_record()
  local steps, values = loss_curve()
  local loss_points, train_outputs = {}, { { kind = "text", text = "training\n" } }
  for i = 1, #steps do
    loss_points[i] = { name = "loss", value = values[i], step = steps[i], time = 1764430201 + i, cell = "train" }
    train_outputs[#train_outputs + 1] = { kind = "metric", name = "loss", value = values[i], step = steps[i] }
  end
  train_outputs[#train_outputs + 1] = { kind = "plot", title = "loss",
    svg = plot.svg{ title = "loss", series = { { name = "loss", x = steps, y = values } } } }
  local metrics = { { name = "mean", value = 1.5, time = 1764430200.7, cell = "make data" } }
  for _, p in ipairs(loss_points) do metrics[#metrics + 1] = p end
  return {
    name = "hello", run_id = "hello-20261129-153000-a1b2c3", recipe_path = "recipes/hello.lua",
    recipe_sha256 = string.rep("ab", 32), recipe_source = "local mf = require 'moonforge'\n-- cells <here>\n",
    params = { n = 1000, lr = 0.001 }, seed = 42, status = "failed",
    started = 1764430200.5, finished = 1764430210.1, duration = 9.6,
    engine_version = "0.1.0", git_commit = "abc123", threads = 2,
    platform = { os = "Linux 6.1", machine = "x86_64", cpu = "Test CPU" },
    cells = {
      { index = 1, title = "make data", uses = {}, status = "success", cache_hit = false, duration = 0.12,
        key = "k1", source = "function()\n  print('<script>alert(1)</script>')\nend",
        outputs = {
          { kind = "text", text = "<script>alert(1)</script>\nmean & spread\n" },
          { kind = "table", title = "scores", columns = { "model", "acc" }, rows = { { "base", 0.4 }, { "tuned|x", 0.8534 } } },
          { kind = "metric", name = "mean", value = 1.5 },
          { kind = "artifact", name = "model.bin", path = "artifacts/model.bin" },
          { kind = "text", text = "cut \226\130 short\n" },
        } },
      { index = 2, title = "train", uses = { "make data" }, status = "success", cache_hit = true, duration = 3.5,
        key = "k2", source = "function(data)\n  return train(data)\nend\n", outputs = train_outputs },
      { index = 3, title = "evaluate \"quoted\"", uses = { "train" }, status = "failed", duration = 0.01, key = "k3",
        source = "function()\n  error('boom')\nend",
        outputs = {
          { kind = "text", text = "evaluating\n" },
          { kind = "error", message = "recipes/hello.lua:12: boom",
            traceback = "stack traceback:\n\t[C]: in function 'error'\n\trecipes/hello.lua:12: in function <recipes/hello.lua:11>" },
        } },
      { index = 4, title = "package", uses = { "train" }, status = "not run", outputs = {}, source = "function() end" },
    },
    metrics = metrics,
  }
end

-- Validation against the nbformat 4.5 schema: required fields present, no
-- field the schema does not allow, and the right types.
local function check_keys(obj, required, optional, where)
  T.truthy(getmetatable(obj) == OBJECT_MT, where .. " is a JSON object")
  local allowed = {}
  for _, k in ipairs(required) do
    T.truthy(obj[k] ~= nil, where .. " has '" .. k .. "'")
    allowed[k] = true
  end
  for _, k in ipairs(optional or {}) do allowed[k] = true end
  for k in pairs(obj) do T.truthy(allowed[k], where .. " has no field '" .. tostring(k) .. "'") end
end

local function check_multiline(v, where)
  T.truthy(getmetatable(v) == ARRAY_MT, where .. " is a list of lines")
  for i, line in ipairs(v) do
    T.eq(type(line), "string", where .. " line type")
    if i < #v then T.truthy(line:sub(-1) == "\n", where .. " line " .. i .. " keeps its newline") end
  end
end

local function check_output(o, where)
  local kind = o.output_type
  if kind == "stream" then
    check_keys(o, { "output_type", "name", "text" }, {}, where)
    T.truthy(o.name == "stdout" or o.name == "stderr", where .. " stream name")
    check_multiline(o.text, where .. ".text")
  elseif kind == "display_data" then
    check_keys(o, { "output_type", "data", "metadata" }, {}, where)
    check_keys(o.metadata, {}, {}, where .. ".metadata")
    T.truthy(next(o.data) ~= nil, where .. " has data")
    for mime, value in pairs(o.data) do
      T.truthy(mime:match("^[%a%-]+/[%w%-%+%.]+$"), where .. " mime type " .. mime)
      check_multiline(value, where .. ".data." .. mime)
    end
  elseif kind == "error" then
    check_keys(o, { "output_type", "ename", "evalue", "traceback" }, {}, where)
    T.eq(type(o.ename), "string"); T.eq(type(o.evalue), "string")
    T.truthy(getmetatable(o.traceback) == ARRAY_MT, where .. " traceback is a list")
    for _, line in ipairs(o.traceback) do T.eq(type(line), "string", where .. " traceback line") end
  else
    error(where .. ": unexpected output_type " .. tostring(kind))
  end
end

local function validate_notebook(nb)
  check_keys(nb, { "cells", "metadata", "nbformat", "nbformat_minor" }, {}, "notebook")
  T.eq(nb.nbformat, 4); T.eq(nb.nbformat_minor, 5)
  local ks = nb.metadata.kernelspec
  check_keys(ks, { "name", "display_name" }, { "language" }, "kernelspec")
  T.eq(type(nb.metadata.language_info.name), "string", "language_info.name")
  T.truthy(getmetatable(nb.cells) == ARRAY_MT, "cells is a list")
  local ids = {}
  for i, cell in ipairs(nb.cells) do
    local where = "cell " .. i
    if cell.cell_type == "markdown" then
      check_keys(cell, { "cell_type", "id", "metadata", "source" }, { "attachments" }, where)
    elseif cell.cell_type == "code" then
      check_keys(cell, { "cell_type", "id", "metadata", "source", "outputs", "execution_count" }, {}, where)
      local n = cell.execution_count
      T.truthy(n == json.null or (type(n) == "number" and n >= 0 and n == math.floor(n)), where .. " execution_count")
      T.truthy(getmetatable(cell.outputs) == ARRAY_MT, where .. " outputs is a list")
      for k, o in ipairs(cell.outputs) do check_output(o, where .. " output " .. k) end
    else
      error(where .. ": unexpected cell_type " .. tostring(cell.cell_type))
    end
    T.truthy(getmetatable(cell.metadata) == OBJECT_MT, where .. " metadata is an object")
    T.truthy(#cell.id <= 64 and cell.id:match("^[%w%-_]+$"), where .. " id pattern")
    T.truthy(not ids[cell.id], where .. " id is unique")
    ids[cell.id] = true
    check_multiline(cell.source, where .. ".source")
  end
end

-- Every '<' opens a tag and every tag closes in order; every '&' starts an
-- entity. `void` lists HTML elements that never close.
local function check_markup(text, void)
  void = void or {}
  local stack, pos = {}, 1
  while true do
    local lt = text:find("<", pos, true)
    if not lt then break end
    local close, name, rest, gt = text:match("^<(/?)([%a][%w:%-]*)([^<>]*)()>", lt)
    if not name and text:match("^<!DOCTYPE html>", lt) then
      pos = lt + 1
    else
      T.truthy(name, "a tag at byte " .. lt .. ": " .. text:sub(lt, lt + 30))
      name = name:lower()
      if close == "/" then
        T.eq(stack[#stack], name, "closing tag at byte " .. lt)
        stack[#stack] = nil
      elseif rest:sub(-1) ~= "/" and not void[name] then
        stack[#stack + 1] = name
      end
      pos = gt
    end
  end
  T.eq(#stack, 0, "unclosed tags: " .. table.concat(stack, " "))
  for amp in text:gmatch("&[^;%s]*;?") do
    T.truthy(amp:match("^&[#%w]+;$"), "entity " .. amp)
  end
end

local function decoded_notebook(record)
  local text = notebook.render(record)
  local nb = assert(json.decode(text))
  return nb, text
end

T.test("notebook follows the nbformat 4.5 schema", function()
  local nb = decoded_notebook(sample_record())
  validate_notebook(nb)
  T.eq(nb.metadata.kernelspec.name, "moonforge")
  T.eq(nb.metadata.kernelspec.display_name, "moonforge (Lua)")
  T.eq(nb.metadata.language_info.name, "lua")
  local m = nb.metadata.moonforge
  T.eq(m.run_id, "hello-20261129-153000-a1b2c3"); T.eq(m.recipe, "hello"); T.eq(m.seed, 42)
  T.eq(m.status, "failed"); T.eq(m.engine_version, "0.1.0"); T.eq(m.params.n, 1000)
end)

T.test("notebook has a summary, then a title and a code cell per recipe cell", function()
  local record = sample_record()
  local nb = decoded_notebook(record)
  T.eq(#nb.cells, 1 + 2 * #record.cells)
  local summary = table.concat(nb.cells[1].source)
  T.truthy(summary:find("# hello", 1, true), "run title")
  for _, word in ipairs({ "failed", "n=1000", "42", "2025-11-29 15:30:00 UTC", "9.60 s", "make data" }) do
    T.truthy(summary:find(word, 1, true), "summary mentions " .. word)
  end
  for i, cell in ipairs(record.cells) do
    local title, code = nb.cells[2 * i], nb.cells[2 * i + 1]
    T.eq(title.cell_type, "markdown"); T.eq(code.cell_type, "code")
    T.truthy(table.concat(title.source):find("## " .. i .. ". ", 1, true), "numbered title")
    T.eq(table.concat(code.source), cell.source, "source round-trips")
  end
  T.truthy(table.concat(nb.cells[4].source):find("cache hit", 1, true), "cache hit noted")
  T.eq(nb.cells[3].execution_count, 1)
  T.eq(nb.cells[9].execution_count, json.null, "a cell that did not run has no count")
  T.eq(#nb.cells[9].outputs, 0)
end)

T.test("notebook outputs keep their order and kinds", function()
  local record = sample_record()
  local nb = decoded_notebook(record)
  local first = nb.cells[3].outputs
  T.eq(#first, 5)
  T.eq(first[1].output_type, "stream")
  T.eq(table.concat(first[1].text), record.cells[1].outputs[1].text)
  T.truthy(table.concat(first[2].data["text/html"]):find("0.8534", 1, true), "table as HTML")
  T.truthy(table.concat(first[2].data["text/plain"]):find("tuned|x", 1, true), "table as text")
  T.truthy(table.concat(first[3].data["text/plain"]):find("mean", 1, true), "metric table")
  T.truthy(table.concat(first[4].data["text/html"]):find('href="artifacts/model.bin"', 1, true), "artifact link")
  T.eq(table.concat(first[5].text), "cut \239\191\189 short\n", "invalid UTF-8 replaced")
  local train = nb.cells[5].outputs
  T.eq(#train, 3, "five loss points fold into one table")
  T.truthy(table.concat(train[2].data["text/plain"]):find("loss%s+0%.6%s+50%s+5"), "last loss, step, count")
  T.eq(table.concat(train[3].data["image/svg+xml"]), record.cells[2].outputs[7].svg)
  local err = nb.cells[7].outputs[2]
  T.eq(err.output_type, "error"); T.eq(err.ename, "LuaError"); T.eq(err.evalue, "recipes/hello.lua:12: boom")
  T.eq(err.traceback[1], "recipes/hello.lua:12: boom")
  T.eq(err.traceback[2], "stack traceback:")
end)

T.test("notebook text is stable and writes empty lists as lists", function()
  local _, a = decoded_notebook(sample_record())
  local _, b = decoded_notebook(sample_record())
  T.eq(a, b)
  T.truthy(a:find('"uses": []', 1, true), "empty uses is []")
  T.truthy(a:find('\n "cells": [\n', 1, true), "indent 1")
  local empty = decoded_notebook({ name = "empty", run_id = "r", status = "running", cells = {} })
  validate_notebook(empty)
  T.eq(#empty.cells, 1)
end)

T.test("record with an unknown output kind is refused", function()
  local record = sample_record()
  record.cells[1].outputs[1] = { kind = "sound" }
  T.raises(function() notebook.render(record) end, "unknown kind 'sound'")
  T.raises(function() report.render(record) end, "unknown kind 'sound'")
end)

local HTML_VOID = { meta = true, br = true, hr = true, img = true, link = true, input = true }

T.test("report is one well-formed page with every cell and escaped text", function()
  local record = sample_record()
  local html = report.render(record)
  check_markup(html, HTML_VOID)
  T.truthy(html:match("^<!DOCTYPE html>"), "doctype")
  for _, cell in ipairs(record.cells) do
    T.truthy(html:find(textable.escape_html(cell.title), 1, true), "title " .. cell.title)
  end
  T.truthy(html:find("evaluate &quot;quoted&quot;", 1, true), "quotes escaped")
  T.truthy(not html:find("<script", 1, true), "no raw script tag")
  T.truthy(html:find("&lt;script&gt;alert(1)&lt;/script&gt;", 1, true), "printed markup escaped")
  T.truthy(html:find("mean &amp; spread", 1, true), "ampersand escaped")
  T.truthy(html:find('class="status status-failed"', 1, true), "run status badge")
  T.truthy(html:find('class="status status-not-run"', 1, true), "not-run badge")
  T.truthy(html:find('<pre class="error">recipes/hello.lua:12: boom', 1, true), "error highlighted")
  T.truthy(html:find('<a href="artifacts/model.bin">model.bin</a>', 1, true), "artifact link")
  T.truthy(html:find('<a href="#cell-3">', 1, true), "table of contents")
  T.truthy(html:find("<details><summary>source</summary>", 1, true), "collapsible source")
  for _, word in ipairs({ "n=1000", "Linux 6.1", "0.1.0", "2025-11-29 15:30:00 UTC", "9.60 s" }) do
    T.truthy(html:find(word, 1, true), "header mentions " .. word)
  end
  T.truthy(not html:find("https?://[^\"]*%.css") and not html:find("<script", 1, true), "self-contained")
end)

T.test("report plots every metric logged at several steps", function()
  local html = report.render(sample_record())
  local metrics = html:match('<section id="metrics">.-</section>')
  T.truthy(metrics, "metrics section")
  local _, plots = metrics:gsub("<svg", "")
  T.eq(plots, 1, "loss has five steps, mean has none")
  T.truthy(metrics:find("<title>loss</title>", 1, true), "loss plot")
  T.truthy(metrics:find("Final values", 1, true))
  T.truthy(metrics:find(">1.5</td>", 1, true), "final value of mean")
  local _, all = html:gsub("<svg", "")
  T.eq(all, 2, "the cell's own plot and the metric plot")
end)

T.test("textable aligns columns and formats numbers compactly", function()
  local tbl = { title = "scores", columns = { "model", "acc", "n", "ok" },
    rows = { { "base", 0.8534, 100, true }, { "tuned", 1 / 3, 12345, false }, { "none", json.null, nil } } }
  local lines = {}
  for line in textable.text(tbl):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  T.eq(lines[1], "scores")
  T.eq(lines[2], "model       acc      n  ok")
  T.eq(lines[3], "-----  --------  -----  -----")
  T.eq(lines[4], "base     0.8534    100  true")
  T.eq(lines[5], "tuned  0.333333  12345  false")
  T.eq(lines[6], "none")
  T.eq(textable.format_number(3), "3")
  T.eq(textable.format_number(-2.5), "-2.5")
  T.eq(textable.format_number(0.8534), "0.8534")
  T.eq(textable.format_number(2.5e-7), "2.5e-07")
  T.eq(textable.format_number(123456.7), "123457")
  T.eq(textable.format_number(0 / 0), "nan")
  T.eq(textable.utf8_clean("a\255b \226\130 \240\159\152\128"), "a\239\191\189b \239\191\189 \240\159\152\128")
end)

T.test("textable escapes HTML and Markdown", function()
  local tbl = { columns = { "name", "v" }, rows = { { "a|b <i>", 1.25 } } }
  local md = textable.markdown(tbl)
  T.eq(md, "| name | v |\n| --- | ---: |\n| a\\|b \\<i\\> | 1.25 |\n")
  local html = textable.html(tbl)
  check_markup(html)
  T.truthy(html:find("<td style=\"text-align:left\">a|b &lt;i&gt;</td>", 1, true), "cell escaped")
  T.truthy(html:find("<td style=\"text-align:right\">1.25</td>", 1, true), "number right-aligned")
  T.raises(function() textable.text({ rows = {} }) end, "non-empty 'columns'")
end)

local function count(text, pattern)
  return select(2, text:gsub(pattern, ""))
end

local function curve_spec()
  local steps, values = loss_curve()
  return { kind = "line", title = "loss <train & eval>", xlabel = "step", ylabel = "loss",
    series = { { name = "train", x = steps, y = values }, { name = "eval", x = steps, y = { 3, 2, 0 / 0, 1, 0.9 } } } }
end

T.test("plot.nice_ticks steps by 1, 2 or 5 times a power of ten", function()
  local function ticks(lo, hi) local t, step = plot.nice_ticks(lo, hi); return table.concat(t, " "), step end
  T.eq(ticks(0, 1), "0 0.2 0.4 0.6 0.8 1")
  T.eq(ticks(0, 0.87), "0 0.2 0.4 0.6 0.8 1")
  T.eq(ticks(-3, 17), "-5 0 5 10 15 20")
  T.eq(ticks(0, 1000), "0 200 400 600 800 1000")
  T.eq(ticks(2.31, 2.38), "2.3 2.32 2.34 2.36 2.38")
  local t, step = plot.nice_ticks(1e-5, 3e-5)
  T.near(step, 5e-6, 1e-12); T.eq(#t, 5)
  local c = plot.nice_ticks(7, 7)
  T.truthy(c[1] < 7 and c[#c] > 7, "a constant range is widened")
  local z = plot.nice_ticks(0, 0)
  T.truthy(z[1] < 0 and z[#z] > 0, "zero range is widened")
end)

T.test("line plot is well-formed, labelled, deterministic SVG", function()
  local svg = plot.svg(curve_spec())
  check_markup(svg)
  T.truthy(svg:match('^<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="640" height="360" viewBox="0 0 640 360"'))
  T.truthy(svg:find("loss &lt;train &amp; eval&gt;", 1, true), "title escaped")
  T.truthy(svg:find(">step</text>", 1, true) and svg:find(">loss</text>", 1, true), "axis labels")
  T.truthy(svg:find(">train</text>", 1, true) and svg:find(">eval</text>", 1, true), "legend")
  T.eq(count(svg, "<polyline"), 3, "train whole, eval broken at its NaN")
  T.eq(count(svg, "<circle"), 9, "few points are marked")
  T.truthy(not svg:find("nan") and not svg:find("inf"), "no NaN coordinates")
  T.truthy(not svg:find("%d%.%d%d"), "coordinates have fixed precision")
  T.eq(plot.svg(curve_spec()), svg, "same spec, same bytes")
  local small = plot.svg{ width = 300, height = 200, series = { { y = { 1, 2 } } } }
  T.truthy(small:find('viewBox="0 0 300 200"', 1, true), "size override")
end)

T.test("line plot handles single points, constants and logy", function()
  local one = plot.svg{ series = { { name = "x", y = { 5 } } } }
  check_markup(one)
  T.eq(count(one, "<polyline"), 0); T.eq(count(one, "<circle"), 1)
  local long = {}
  for i = 1, 40 do long[i] = (i == 2 or i == 4) and 0 / 0 or i end
  local lone = plot.svg{ series = { { y = long } } }
  T.eq(count(lone, "<polyline"), 1, "the run after the gaps"); T.eq(count(lone, "<circle"), 2, "lone points marked")
  local flat = plot.svg{ series = { { y = { 2, 2, 2 } } } }
  T.truthy(not flat:find("nan") and not flat:find("inf"), "constant series")
  local logy = plot.svg{ logy = true, series = { { y = { 100, 10, 0, 1, 0.01 } } } }
  check_markup(logy)
  for _, label in ipairs({ ">0.01<", ">0.1<", ">1<", ">10<", ">100<" }) do
    T.truthy(logy:find(label, 1, true), "decade label " .. label)
  end
  T.eq(count(logy, "<polyline"), 2, "zero is a gap on a log axis")
  local narrow = plot.svg{ logy = true, series = { { y = { 0.16, 0.09, 0.089 } } } }
  local labels = {}
  for label in narrow:gmatch('text%-anchor="end">([^<]+)<') do labels[#labels + 1] = label end
  T.eq(table.concat(labels, " "), "0.05 0.1 0.2", "1-2-5 ticks within two decades")
  T.raises(function() plot.svg{ logy = true, series = { { y = { 0, -1 } } } } end, "logy needs y > 0")
end)

T.test("bar plot groups series per label with value labels", function()
  local svg = plot.svg{ kind = "bar", title = "accuracy", ylabel = "score", labels = { "base", "tuned" },
    series = { { name = "accuracy", values = { 0.4, 0.9 } }, { name = "macro-F1", values = { 0.35, 0.8534 } } } }
  check_markup(svg)
  T.eq(count(svg, '<rect x="[^"]*" y="[^"]*" width="[^"]*" height="[^"]*" fill='), 4 + 2, "four bars and two swatches")
  for _, label in ipairs({ ">base<", ">tuned<", ">0.8534<", ">0.35<", ">macro-F1<", ">1.0<" }) do
    T.truthy(svg:find(label, 1, true), "label " .. label)
  end
  local neg = plot.svg{ kind = "bar", labels = { "a", "b" }, series = { { values = { -1, 2 } } } }
  T.truthy(neg:find(">%-1</text>"), "negative bar labelled")
end)

T.test("plot refuses empty and mismatched series", function()
  T.raises(function() plot.svg{ series = {} } end, "no series")
  T.raises(function() plot.svg{ title = "t" } end, "no series to draw in 't'")
  T.raises(function() plot.svg{ series = { { name = "a", y = {} } } } end, "series 'a' has no y values")
  T.raises(function() plot.svg{ series = { { name = "a", x = { 1 }, y = { 1, 2 } } } } end,
    "series 'a' has 1 x values and 2 y values")
  T.raises(function() plot.svg{ series = { { y = { 0 / 0 } } } } end, "no finite points")
  T.raises(function() plot.svg{ kind = "bar", labels = { "a", "b" }, series = { { name = "s", values = { 1 } } } } end,
    "series 's' has 1 values for 2 labels")
  T.raises(function() plot.svg{ kind = "pie", series = { { y = { 1 } } } } end, "unknown kind 'pie'")
end)

return T.done()
