-- moonforge.eval_report: evaluation results as tables, plots and metrics
-- of a cell (reached as mf.eval.compare, confusion_table and report).
--
--   compare({ { name = "base", metrics = { accuracy = 0.41, macro_f1 = 0.30 } },
--             { name = "tuned", metrics = { accuracy = 0.88, macro_f1 = 0.86 } } },
--           { ctx = ctx, metrics = { "accuracy", "macro_f1" }, title = })
--     -> a table (one row per result, one column per metric) and a grouped
--        bar plot spec; with ctx both go into the cell's output and each
--        value is recorded as the metric "<name>/<metric>".
--   confusion_table(result) -> the confusion matrix of mf.eval.classify
--   report(result, { ctx =, prefix = }) -> the per-class table; with ctx it
--     and the confusion matrix are shown and accuracy, macro_f1 and invalid
--     recorded (as "<prefix>/accuracy", ... when prefix is given).
local M = {}

local function is_result(r) return type(r) == "table" and type(r.labels) == "table" and type(r.confusion) == "table" end

-- Metric names in the order opts.metrics gives, else sorted.
local function metric_names(results, opts)
  if opts and opts.metrics then return opts.metrics end
  local names, seen = {}, {}
  for _, r in ipairs(results) do
    for name, v in pairs(r.metrics) do
      if type(v) == "number" and not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  return names
end

function M.compare(results, opts)
  if type(results) ~= "table" or #results == 0 then error("compare: expected a non-empty list of results", 2) end
  for i, r in ipairs(results) do
    if type(r) ~= "table" or type(r.name) ~= "string" or type(r.metrics) ~= "table" then
      error("compare: result " .. i .. " must be { name = string, metrics = { name = number } }", 2)
    end
  end
  local names = metric_names(results, opts)
  local title = opts and opts.title or "comparison"
  local tbl = { title = title, columns = { "model" }, rows = {} }
  for j, name in ipairs(names) do tbl.columns[j + 1] = name end
  local plot = { kind = "bar", title = title, labels = names, series = {} }
  for i, r in ipairs(results) do
    local row, values = { r.name }, {}
    for j, name in ipairs(names) do
      local v = r.metrics[name]
      row[j + 1] = v
      values[j] = type(v) == "number" and v or 0 / 0 -- a gap in the plot
    end
    tbl.rows[i] = row
    plot.series[i] = { name = r.name, values = values }
  end
  local ctx = opts and opts.ctx
  if ctx then
    ctx:table(tbl)
    if #names > 0 then ctx:plot(plot) end
    for _, r in ipairs(results) do
      for _, name in ipairs(names) do
        local v = r.metrics[name]
        if type(v) == "number" then ctx:metric(r.name .. "/" .. name, v) end
      end
    end
  end
  return tbl, plot
end

function M.confusion_table(result)
  if not is_result(result) then error("confusion_table: expected a result of mf.eval.classify", 2) end
  local tbl = { title = "confusion matrix (rows: truth, columns: predicted)", columns = { "truth" }, rows = {} }
  for k, label in ipairs(result.labels) do tbl.columns[k + 1] = label end
  tbl.columns[#tbl.columns + 1] = "invalid"
  for t, label in ipairs(result.labels) do
    local row = { label }
    for p, count in ipairs(result.confusion[t]) do row[p + 1] = count end
    tbl.rows[t] = row
  end
  return tbl
end

function M.report(result, opts)
  if not is_result(result) then error("report: expected a result of mf.eval.classify", 2) end
  local prefix = opts and opts.prefix
  local tbl = { title = (prefix and prefix .. ": " or "") .. "classification report",
    columns = { "label", "precision", "recall", "f1", "support" }, rows = {} }
  for k, c in ipairs(result.per_class) do tbl.rows[k] = { c.label, c.precision, c.recall, c.f1, c.support } end
  tbl.rows[#tbl.rows + 1] = { "macro avg", result.macro_precision, result.macro_recall, result.macro_f1, result.n }
  tbl.rows[#tbl.rows + 1] = { "accuracy", nil, nil, result.accuracy, result.n }
  tbl.rows[#tbl.rows + 1] = { "invalid", nil, nil, nil, result.invalid }
  local ctx = opts and opts.ctx
  if ctx then
    ctx:table(tbl)
    ctx:table(M.confusion_table(result))
    local name = prefix and function(m) return prefix .. "/" .. m end or function(m) return m end
    for _, m in ipairs({ "accuracy", "macro_f1", "invalid" }) do ctx:metric(name(m), result[m]) end
  end
  return tbl
end

return M
