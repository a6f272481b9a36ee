-- moonforge.eval (mf.eval): metrics for evaluating models.
--
--   local r = mf.eval.classify(outputs, truths, { "billing", "network outage", "other" })
--   r.accuracy, r.macro_f1, r.invalid, r.per_class[k], r.confusion, r.predicted
--   mf.eval.exact_match(preds, refs, { normalize = true, ignore_case = false })
--   mf.eval.set_prf(pred_lists, ref_lists)     -- extraction: items as sets
--   mf.eval.parse_list("aspirin, ibuprofen\n- paracetamol")
--   mf.eval.rouge_l(preds, refs)               -- as Google's rouge-score, no stemmer
--   mf.eval.perplexity(model, tokens, targets, { batch_size = 8 })
--   mf.eval.compare(results, { ctx = ctx }), confusion_table(r), report(r, { ctx =, prefix = })
--   mf.eval.judge{ url =, model =, questions =, answers =, references = }
--
-- Labels are parsed from free text: the allowed label mentioned first wins,
-- matched without regard to ASCII case and as whole words (a label's end
-- that is a letter, digit or underscore must not touch another such
-- character or any non-ASCII byte); at one position the longer label wins;
-- text naming no label is "invalid", counted and scored as wrong.
-- Per-class precision, recall and F1 and the macro-F1 over the allowed
-- labels follow scikit-learn with zero_division=0 (an undefined ratio is 0).
-- Tables, plots and judging live in eval_report.lua and eval_judge.lua.
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local ffi, C = engine.ffi, engine.C

local M = {}

local INVALID = "invalid"
local IGNORE = -100

local function check_pair(a, b, what, level)
  if type(a) ~= "table" or type(b) ~= "table" then error(what .. ": expected two lists", level + 1) end
  if #a ~= #b then error(string.format("%s: %d predictions for %d references", what, #a, #b), level + 1) end
end

local function ratio(num, den) return den > 0 and num / den or 0 end

local function f1_of(p, r) return p + r > 0 and 2 * p * r / (p + r) or 0 end

local function mean(list, field)
  local sum = 0
  for _, x in ipairs(list) do sum = sum + x[field] end
  return ratio(sum, #list)
end

------------------------------------------------------------------------
-- Classification
------------------------------------------------------------------------

local WORD = "[%w_\128-\255]"

local function touches_word(s, i) return i >= 1 and i <= #s and s:find(WORD, i) == i end

-- Position of the first whole-word mention of needle in text (both lower case).
local function first_mention(text, needle)
  local open_start, open_end = not needle:find("^" .. WORD), not needle:find(WORD .. "$")
  local from = 1
  while true do
    local i, j = text:find(needle, from, true)
    if not i then return nil end
    if (open_start or not touches_word(text, i - 1)) and (open_end or not touches_word(text, j + 1)) then
      return i
    end
    from = i + 1
  end
end

-- Labels checked once: non-empty strings, distinct in lower case, not the
-- name kept for unparseable answers. Returns them and their lower-case forms.
local function checked_labels(labels, level)
  if type(labels) ~= "table" or #labels == 0 then error("classify: labels must be a non-empty list", level + 1) end
  local lower, seen = {}, {}
  for i, label in ipairs(labels) do
    if type(label) ~= "string" or not label:find("%S") then
      error("classify: label " .. i .. " must be a non-empty string", level + 1)
    end
    lower[i] = label:lower()
    if seen[lower[i]] then error("classify: label '" .. label .. "' is given twice", level + 1) end
    if lower[i] == INVALID then error("classify: 'invalid' names unparseable answers and cannot be a label", level + 1) end
    seen[lower[i]] = i
  end
  return lower, seen
end

local function parse_index(text, lower)
  local best, best_at
  local s = tostring(text):lower()
  for k, needle in ipairs(lower) do
    local at = first_mention(s, needle)
    if at and (not best or at < best_at or (at == best_at and #needle > #lower[best])) then
      best, best_at = k, at
    end
  end
  return best
end

-- The allowed label text mentions first, or "invalid".
function M.parse_label(text, labels)
  local k = parse_index(text, (checked_labels(labels, 2)))
  return k and labels[k] or INVALID
end

local function truth_index(ref, seen, i)
  local k = type(ref) == "string" and seen[(ref:gsub("^%s+", ""):gsub("%s+$", ""):lower())]
  if not k then error(string.format("classify: reference %d (%s) is not one of the labels", i, tostring(ref)), 3) end
  return k
end

-- classify(outputs, references, labels): outputs are free text, references
-- allowed labels (any case). Returns { n, accuracy, macro_f1 (and
-- macro_precision, macro_recall), invalid, labels, per_class = {{label,
-- precision, recall, f1, support}, ...}, confusion (rows: truth; columns:
-- labels then invalid), predicted (the parsed labels) }.
function M.classify(outputs, references, labels)
  check_pair(outputs, references, "classify", 2)
  local lower, seen = checked_labels(labels, 2)
  local nl = #labels
  local confusion, predicted = {}, {}
  for t = 1, nl do
    confusion[t] = {}
    for p = 1, nl + 1 do confusion[t][p] = 0 end
  end
  local correct, invalid = 0, 0
  for i, text in ipairs(outputs) do
    local t, p = truth_index(references[i], seen, i), parse_index(text, lower)
    predicted[i] = p and labels[p] or INVALID
    if p == t then correct = correct + 1 end
    if not p then invalid = invalid + 1 end
    confusion[t][p or nl + 1] = confusion[t][p or nl + 1] + 1
  end
  local per_class = {}
  for k = 1, nl do
    local tp, predicted_k, support = confusion[k][k], 0, 0
    for t = 1, nl do predicted_k = predicted_k + confusion[t][k] end
    for p = 1, nl + 1 do support = support + confusion[k][p] end
    local precision, recall = ratio(tp, predicted_k), ratio(tp, support)
    per_class[k] = { label = labels[k], precision = precision, recall = recall,
      f1 = ratio(2 * tp, predicted_k + support), support = support }
  end
  local labels_copy = {}
  for k, label in ipairs(labels) do labels_copy[k] = label end
  return { n = #outputs, accuracy = ratio(correct, #outputs), macro_f1 = mean(per_class, "f1"),
    macro_precision = mean(per_class, "precision"), macro_recall = mean(per_class, "recall"), invalid = invalid,
    labels = labels_copy, per_class = per_class, confusion = confusion, predicted = predicted }
end

------------------------------------------------------------------------
-- Exact match and extraction
------------------------------------------------------------------------

local function squeeze(s) return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end

-- exact_match(preds, refs, {normalize = true, ignore_case = false}):
-- normalize trims and collapses runs of whitespace; ignore_case folds ASCII
-- case. Returns { exact_match (the fraction), matches, n, per_item }.
function M.exact_match(preds, refs, opts)
  check_pair(preds, refs, "exact_match", 2)
  local normalize = not (opts and opts.normalize == false)
  local fold = opts and opts.ignore_case
  local function form(s)
    s = tostring(s)
    if normalize then s = squeeze(s) end
    return fold and s:lower() or s
  end
  local matches, per_item = 0, {}
  for i = 1, #preds do
    per_item[i] = form(preds[i]) == form(refs[i])
    if per_item[i] then matches = matches + 1 end
  end
  return { exact_match = ratio(matches, #preds), matches = matches, n = #preds, per_item = per_item }
end

local BULLET = { "^[-*+]%s+", "^\226\128\162%s*", "^%d+[.)]%s+" }

-- Items of a list a model wrote: separated by commas, semicolons or line
-- breaks, with bullets, numbering, surrounding quotes and a final period
-- taken off; empty items dropped.
function M.parse_list(text)
  local items = {}
  for piece in (tostring(text) .. "\n"):gmatch("([^,;\n]*)[,;\n]") do
    local item = squeeze(piece)
    for _, bullet in ipairs(BULLET) do item = item:gsub(bullet, "") end
    item = item:gsub("%.$", ""):gsub("^[\"'`](.*)[\"'`]$", "%1")
    item = squeeze(item)
    if item ~= "" then items[#items + 1] = item end
  end
  return items
end

-- A set of normalised items (trimmed, whitespace collapsed, lower case)
-- from a list of strings, or from text through parse_list.
local function item_set(x, i, what)
  if type(x) == "string" then x = M.parse_list(x) end
  if type(x) ~= "table" then error(string.format("set_prf: %s %d must be a list or text", what, i), 3) end
  local set, n = {}, 0
  for _, item in ipairs(x) do
    local key = squeeze(tostring(item)):lower()
    if key ~= "" and not set[key] then
      set[key] = true
      n = n + 1
    end
  end
  return set, n
end

local function prf(tp, npred, nref)
  -- Nothing expected and nothing predicted is a perfect answer.
  if npred == 0 and nref == 0 then return { precision = 1, recall = 1, f1 = 1 } end
  local p, r = ratio(tp, npred), ratio(tp, nref)
  return { precision = p, recall = r, f1 = f1_of(p, r) }
end

-- set_prf(pred_lists, ref_lists): each entry a list of items or text for
-- parse_list. Returns { micro = {precision, recall, f1} over all items,
-- per_example = the same averaged over examples, n, true_positives,
-- predicted, expected }. An example with neither predicted nor expected
-- items scores 1; otherwise a ratio with nothing below it is 0.
function M.set_prf(pred_lists, ref_lists)
  check_pair(pred_lists, ref_lists, "set_prf", 2)
  local tp, npred, nref, examples = 0, 0, 0, {}
  for i = 1, #pred_lists do
    local pred, np = item_set(pred_lists[i], i, "prediction")
    local ref, nr = item_set(ref_lists[i], i, "reference")
    local hits = 0
    for item in pairs(pred) do
      if ref[item] then hits = hits + 1 end
    end
    examples[i] = prf(hits, np, nr)
    tp, npred, nref = tp + hits, npred + np, nref + nr
  end
  return { micro = prf(tp, npred, nref), per_example = { precision = mean(examples, "precision"),
    recall = mean(examples, "recall"), f1 = mean(examples, "f1") }, n = #pred_lists, true_positives = tp,
    predicted = npred, expected = nref }
end

------------------------------------------------------------------------
-- ROUGE-L
------------------------------------------------------------------------

-- rouge-score's tokenizer: Python's lower(), every run of characters other
-- than [a-z0-9] a separator. Only two non-ASCII characters lower-case into
-- ASCII: U+0130 to "i" plus a combining dot (a separator) and the Kelvin
-- sign U+212A to "k".
function M.rouge_tokens(text)
  local s = tostring(text):gsub("\196\176", "i "):gsub("\226\132\170", "k"):lower()
  local tokens = {}
  for token in s:gmatch("[a-z0-9]+") do tokens[#tokens + 1] = token end
  return tokens
end

-- Length of the longest common subsequence, one DP row over the shorter
-- list. Tokens are interned strings, so comparing them is cheap.
local function lcs_length(a, b)
  if #a < #b then a, b = b, a end
  local m = #b
  local row = ffi.new("int32_t[?]", m + 1)
  for i = 1, #a do
    local ai, diag = a[i], 0
    for j = 1, m do
      local up = row[j]
      if ai == b[j] then
        row[j] = diag + 1
      elseif row[j - 1] > up then
        row[j] = row[j - 1]
      end
      diag = up
    end
  end
  return row[m]
end

-- rouge_l(preds, refs): per pair, LCS over tokens; precision against the
-- prediction's length, recall against the reference's, F-measure their
-- harmonic mean (all 0 when either side has no tokens). Returns the means
-- { precision, recall, fmeasure, n, per_item = {{precision, recall, fmeasure}} }.
function M.rouge_l(preds, refs)
  check_pair(preds, refs, "rouge_l", 2)
  local per_item = {}
  for i = 1, #preds do
    local p, r = M.rouge_tokens(preds[i]), M.rouge_tokens(refs[i])
    local score = { precision = 0, recall = 0, fmeasure = 0 }
    if #p > 0 and #r > 0 then
      local lcs = lcs_length(p, r)
      score.precision, score.recall = lcs / #p, lcs / #r
      score.fmeasure = f1_of(score.precision, score.recall)
    end
    per_item[i] = score
  end
  return { precision = mean(per_item, "precision"), recall = mean(per_item, "recall"),
    fmeasure = mean(per_item, "fmeasure"), n = #preds, per_item = per_item }
end

------------------------------------------------------------------------
-- Loss and perplexity
------------------------------------------------------------------------

-- Rows of a table of rows or of an I32 tensor [rows, T], as batches.
local function row_source(x, what)
  if tensor.is_tensor(x) then
    local shape = tensor.shape(x)
    if tensor.dtype(x) ~= "I32" or #shape ~= 2 then
      error(string.format("perplexity: %s must be an I32 tensor [rows, T], got %s [%s]", what, tensor.dtype(x),
        table.concat(shape, ", ")), 3)
    end
    local rows, T = shape[1], shape[2]
    local base = ffi.cast("int32_t *", tensor.data(x))
    local function batch(first, n) -- 0-based first row
      local dims = ffi.new("int64_t[2]", n, T)
      local view = ffi.gc(engine.check_ptr(C.mf_tensor_view(C.MF_I32, 2, dims, base + first * T)), C.mf_tensor_free)
      return tensor.borrow(view, x)
    end
    local function counted(first, n)
      local c = 0
      for i = first * T, (first + n) * T - 1 do
        if base[i] ~= IGNORE then c = c + 1 end
      end
      return c
    end
    return rows, batch, counted
  end
  if type(x) ~= "table" or #x == 0 then error("perplexity: " .. what .. " must be rows or an I32 tensor", 3) end
  local rows = type(x[1]) == "table" and x or { x }
  local function batch(first, n) return { unpack(rows, first + 1, first + n) } end
  local function counted(first, n)
    local c = 0
    for r = first + 1, first + n do
      for _, id in ipairs(rows[r]) do
        if id ~= IGNORE then c = c + 1 end
      end
    end
    return c
  end
  return #rows, batch, counted
end

-- perplexity(model, tokens, targets, {batch_size = 8, ctx =}): the mean
-- cross-entropy over every counted target (not -100), batch losses weighted
-- by their counted targets, and its exp. tokens and targets as model:loss
-- takes them (targets shifted), e.g. mf.data.pack's tensors. Returns
-- { loss, perplexity, tokens (counted), batches }.
function M.perplexity(model, tokens, targets, opts)
  local batch_size = opts and opts.batch_size or 8
  if type(batch_size) ~= "number" or batch_size < 1 or batch_size % 1 ~= 0 then
    error("perplexity: batch_size must be a positive integer", 2)
  end
  local rows, token_batch = row_source(tokens, "tokens")
  local target_rows, target_batch, counted = row_source(targets, "targets")
  if rows ~= target_rows then error(string.format("perplexity: %d token rows, %d target rows", rows, target_rows), 2) end
  local nbatches = math.ceil(rows / batch_size)
  local bar = opts and opts.ctx and opts.ctx:progress(nbatches, "perplexity")
  local sum, total = 0, 0
  for first = 0, rows - 1, batch_size do
    local n = math.min(batch_size, rows - first)
    local c = counted(first, n)
    -- A batch of padding only has no loss to weigh.
    if c > 0 then
      sum = sum + model:loss(token_batch(first, n), target_batch(first, n)) * c
      total = total + c
    end
    if bar then bar:advance(1) end
  end
  if bar then bar:finish() end
  if total == 0 then error("perplexity: every target is -100, nothing to score", 2) end
  return { loss = sum / total, perplexity = math.exp(sum / total), tokens = total, batches = nbatches }
end

------------------------------------------------------------------------
-- The rest of the module
------------------------------------------------------------------------

local report = require "moonforge.eval_report"
M.compare, M.confusion_table, M.report = report.compare, report.confusion_table, report.report

local judge = require "moonforge.eval_judge"
M.judge, M.parse_score = judge.judge, judge.parse_score

return M
