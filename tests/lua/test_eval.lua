-- mf.eval: label parsing, classification metrics against scikit-learn and
-- ROUGE-L against rouge-score (golden files from
-- tests/reference/make_eval_golden.py), exact match, set precision/recall/F1,
-- perplexity over batches, and the tables, plots and metrics of a cell.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"

local eval = mf.eval
local root = os.getenv("MF_SOURCE_DIR") or "."

local function golden(name)
  local f = assert(io.open(root .. "/tests/reference/golden/eval/" .. name, "rb"))
  local value = assert(json.decode(f:read("*a")))
  f:close()
  return value
end

-- A ctx that keeps what a cell would show.
local function fake_ctx()
  local ctx = { tables = {}, plots = {}, metrics = {} }
  function ctx:table(t) self.tables[#self.tables + 1] = t end
  function ctx:plot(spec) self.plots[#self.plots + 1] = mf.plot.svg(spec) end
  function ctx:metric(name, value) self.metrics[name] = value end
  return ctx
end

local REL = 1e-12

T.test("labels are parsed from free text: earliest whole-word mention, longer at a tie", function()
  local labels = { "network", "network outage", "billing", "other", "c++" }
  local cases = {
    { "Network Outage", "network outage" },
    { "The category is **billing**.", "billing" },
    { "billing, not network", "billing" },
    { "not billing: network", "billing" },
    { "network-outage", "network" },
    { "networking trouble", "invalid" },
    { "another", "invalid" },
    { "billing_code", "invalid" },
    { "caf\195\169billing", "invalid" },
    { "label:OTHER\n", "other" },
    { "I like C++!", "c++" },
    { "", "invalid" },
  }
  for _, c in ipairs(cases) do T.eq(eval.parse_label(c[1], labels), c[2], c[1]) end
  T.raises(function() eval.parse_label("x", { "a", "A" }) end, "label 'A' is given twice")
  T.raises(function() eval.parse_label("x", { "ok", "Invalid" }) end, "'invalid' names unparseable answers")
  T.raises(function() eval.parse_label("x", {}) end, "labels must be a non-empty list")
end)

T.test("classify matches scikit-learn on the golden cases", function()
  for _, case in ipairs(golden("classify.json")) do
    local r = eval.classify(case.outputs, case.references, case.labels)
    for i, p in ipairs(case.predicted) do T.eq(r.predicted[i], p, case.name .. " parse of " .. case.outputs[i]) end
    T.eq(r.n, #case.outputs)
    T.eq(r.invalid, case.invalid, case.name .. " invalid")
    T.near(r.accuracy, case.accuracy, REL, case.name .. " accuracy")
    T.near(r.macro_f1, case.macro_f1, REL, case.name .. " macro_f1")
    for k, want in ipairs(case.per_class) do
      local got = r.per_class[k]
      T.eq(got.label, want.label)
      T.eq(got.support, want.support, want.label .. " support")
      for _, field in ipairs({ "precision", "recall", "f1" }) do
        T.near(got[field], want[field], REL, case.name .. " " .. want.label .. " " .. field)
      end
    end
    for t, row in ipairs(case.confusion) do
      for p, count in ipairs(row) do T.eq(r.confusion[t][p], count, case.name .. " confusion") end
    end
  end
end)

T.test("classify refuses references outside the labels and lists of unequal length", function()
  T.raises(function() eval.classify({ "a" }, { "c" }, { "a", "b" }) end, "reference 1 (c) is not one of the labels")
  T.raises(function() eval.classify({ "a", "b" }, { "a" }, { "a", "b" }) end, "2 predictions for 1 references")
end)

T.test("exact_match normalises whitespace and optionally case", function()
  local preds, refs = { "  Paris ", "new  york", "Rome", "x" }, { "Paris", "New York", "rome", "y" }
  local r = eval.exact_match(preds, refs)
  T.eq(r.matches, 1)
  T.eq(r.exact_match, 0.25)
  T.eq(r.per_item[1], true)
  T.eq(eval.exact_match(preds, refs, { ignore_case = true }).matches, 3)
  T.eq(eval.exact_match(preds, refs, { normalize = false, ignore_case = true }).matches, 1)
end)

T.test("parse_list splits a model's list and strips its decoration", function()
  local items = eval.parse_list('- Aspirin\n2) ibuprofen, "Paracetamol".\n\n\226\128\162 warfarin; metformin ,')
  T.eq(table.concat(items, "|"), "Aspirin|ibuprofen|Paracetamol|warfarin|metformin")
  T.eq(#eval.parse_list("  \n , "), 0)
end)

T.test("set_prf gives micro and per-example precision, recall and F1", function()
  local preds = { "aspirin, Ibuprofen, heparin", { "warfarin" }, {}, "none" }
  local refs = { { "ibuprofen", "aspirin" }, { "warfarin", "insulin" }, {}, { "metformin" } }
  local r = eval.set_prf(preds, refs)
  -- true positives 2 + 1 + 0 + 0 over 3 + 1 + 0 + 1 predicted and 2 + 2 + 0 + 1 expected
  T.eq(r.true_positives, 3)
  T.eq(r.predicted, 5)
  T.eq(r.expected, 5)
  T.near(r.micro.precision, 0.6, REL)
  T.near(r.micro.recall, 0.6, REL)
  T.near(r.micro.f1, 0.6, REL)
  -- examples: (2/3, 1, 0.8), (1, 1/2, 2/3), (1, 1, 1), (0, 0, 0)
  T.near(r.per_example.precision, (2 / 3 + 1 + 1 + 0) / 4, REL)
  T.near(r.per_example.recall, (1 + 0.5 + 1 + 0) / 4, REL)
  T.near(r.per_example.f1, (0.8 + 2 / 3 + 1 + 0) / 4, REL)
end)

T.test("rouge_l matches rouge-score on the golden pairs", function()
  local g = golden("rouge_l.json")
  local preds, refs = {}, {}
  for i, item in ipairs(g.items) do preds[i], refs[i] = item.prediction, item.reference end
  local r = eval.rouge_l(preds, refs)
  for i, item in ipairs(g.items) do
    for _, field in ipairs({ "precision", "recall", "fmeasure" }) do
      T.near(r.per_item[i][field], item[field], REL, string.format("pair %d %s", i, field))
    end
  end
  T.near(r.fmeasure, g.fmeasure, REL, "mean fmeasure")
  T.near(r.precision, g.precision, REL, "mean precision")
  T.near(r.recall, g.recall, REL, "mean recall")
end)

T.test("rouge tokens follow rouge-score's tokenizer", function()
  T.eq(table.concat(eval.rouge_tokens("Don't STOP-me now, 5\226\132\170!"), " "), "don t stop me now 5k")
  T.eq(table.concat(eval.rouge_tokens("\196\176stanbul caf\195\169"), " "), "i stanbul caf")
end)

local tiny = { model_type = "llama", vocab_size = 32, hidden_size = 16, intermediate_size = 32,
  num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 1, seed = 3 }

T.test("perplexity weighs batch losses by their counted targets", function()
  local model = mf.model.new(tiny)
  local examples = {}
  for e = 1, 7 do
    local ids, labels = {}, {}
    for t = 1, 3 + e % 4 do
      ids[t] = (e * 5 + t * 3) % 32
      labels[t] = t <= 2 and -100 or ids[t]
    end
    examples[e] = { ids = ids, labels = labels }
  end
  local tokens, targets = mf.data.pack(examples, { length = 8 })
  local whole = model:loss(tokens, targets)
  for _, batch_size in ipairs({ 1, 2, 3, 100 }) do
    local r = eval.perplexity(model, tokens, targets, { batch_size = batch_size })
    T.near(r.loss, whole, 1e-6, "batch_size " .. batch_size)
    T.near(r.perplexity, math.exp(whole), 1e-6)
  end
  local rows, target_rows = tokens:totable(), targets:totable()
  local r = eval.perplexity(model, rows, target_rows, { batch_size = 2 })
  T.near(r.loss, whole, 1e-6, "tables of rows")
  local counted = 0
  for _, row in ipairs(target_rows) do
    for _, id in ipairs(row) do counted = counted + (id ~= -100 and 1 or 0) end
  end
  T.eq(r.tokens, counted)
  -- A batch that is all padding is skipped, not an error.
  rows[#rows + 1], target_rows[#target_rows + 1] = { 0, 0, 0, 0, 0, 0, 0, 0 }, { -100, -100, -100, -100, -100,
    -100, -100, -100 }
  T.near(eval.perplexity(model, rows, target_rows, { batch_size = 1 }).loss, whole, 1e-6, "padding row")
  T.raises(function() eval.perplexity(model, { { 1, 2 } }, { { -100, -100 } }) end, "nothing to score")
end)

T.test("compare shows a table and a grouped bar plot and records metrics", function()
  local ctx = fake_ctx()
  local tbl, plot = eval.compare({ { name = "base", metrics = { accuracy = 0.4, macro_f1 = 0.3 } },
    { name = "tuned", metrics = { accuracy = 0.9, macro_f1 = 0.85, loss = 1.2 } } }, { ctx = ctx })
  T.eq(table.concat(tbl.columns, ","), "model,accuracy,loss,macro_f1")
  T.eq(tbl.rows[1][1], "base")
  T.eq(tbl.rows[1][3], nil, "a metric a result lacks is empty")
  T.eq(plot.kind, "bar")
  T.eq(#plot.series, 2)
  T.eq(plot.series[2].values[3], 0.85)
  T.eq(#ctx.tables, 1)
  T.truthy(ctx.plots[1]:find("<svg", 1, true), "plot rendered")
  T.eq(ctx.metrics["tuned/macro_f1"], 0.85)
  T.eq(ctx.metrics["base/accuracy"], 0.4)
  T.eq(ctx.metrics["base/loss"], nil)
  local ordered = eval.compare({ { name = "a", metrics = { x = 1, y = 2 } } }, { metrics = { "y", "x" } })
  T.eq(table.concat(ordered.columns, ","), "model,y,x")
end)

T.test("report and confusion_table print a classification into a cell", function()
  local labels = { "spam", "ham" }
  local r = eval.classify({ "spam", "ham", "spam!", "no idea" }, { "spam", "ham", "ham", "spam" }, labels)
  T.eq(r.invalid, 1)
  local conf = eval.confusion_table(r)
  T.eq(table.concat(conf.columns, ","), "truth,spam,ham,invalid")
  T.eq(table.concat(conf.rows[1], ","), "spam,1,0,1")
  T.eq(table.concat(conf.rows[2], ","), "ham,1,1,0")
  local ctx = fake_ctx()
  local tbl = eval.report(r, { ctx = ctx, prefix = "base" })
  T.eq(tbl.title, "base: classification report")
  T.eq(tbl.rows[1][1], "spam")
  T.near(tbl.rows[1][2], 0.5, REL, "spam precision")
  T.eq(tbl.rows[4][1], "accuracy")
  T.eq(#ctx.tables, 2)
  T.eq(ctx.metrics["base/accuracy"], 0.5)
  T.eq(ctx.metrics["base/invalid"], 1)
  T.truthy(mf.textable.text(tbl):find("macro avg", 1, true))
end)

T.test("judge scores are the first whole number from 1 to 5", function()
  T.eq(eval.parse_score("4"), 4)
  T.eq(eval.parse_score("Score: 3/5"), 3)
  T.eq(eval.parse_score("I rate it 10 out of 10, no, 2"), 2)
  T.eq(eval.parse_score("4.5"), 4)
  T.eq(eval.parse_score("no score"), nil)
  T.eq(eval.parse_score("0 or 6"), nil)
end)

T.test("rouge_l on long texts is quick", function()
  local words = {}
  for i = 1, 3000 do words[i] = "w" .. (i * 7919 % 211) end
  local a = table.concat(words, " ")
  local b = table.concat(words, " ", 500) .. " tail"
  local t0 = os.clock()
  local r = eval.rouge_l({ a }, { b })
  T.truthy(r.fmeasure > 0.8, "overlap")
  T.truthy(os.clock() - t0 < 2, "3000 x 2500 tokens in under 2 s")
end)

return T.done()
