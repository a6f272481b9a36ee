-- moonforge.eval_judge: LLM-as-judge through an OpenAI-compatible endpoint
-- (reached as mf.eval.judge and mf.eval.parse_score).
--
--   local r = mf.eval.judge{ url = "http://127.0.0.1:8080", model = "judge",
--     questions = {...}, answers = {...}, references = {...} }
--   r.scores[i] (1..5, or false when the reply held none), r.mean, r.invalid, r.replies
--
-- Each item is one chat completion at {url}/v1/chat/completions (a url
-- ending in /v1 is accepted too) with temperature 0: the rubric as the
-- system message, then the question, the reference (when given) and the
-- answer. The score is the first whole number from 1 to 5 in the reply.
-- url, api_key and model may come from the environment:
-- MOONFORGE_JUDGE_URL, MOONFORGE_JUDGE_KEY or OPENAI_API_KEY,
-- MOONFORGE_JUDGE_MODEL. Options: rubric, max_retries (2), timeout (60 s),
-- ctx and prefix (the mean and invalid count as metrics "<prefix>/judge_mean"
-- and "<prefix>/judge_invalid", and a table of how often each score came).
local http = require "moonforge.http"

local M = {}

M.RUBRIC = [[You grade answers for correctness against a reference answer.
Give a score from 1 to 5:
5 - correct and complete: agrees with the reference in every point that matters
4 - correct, with a minor omission or imprecision
3 - partly correct: some key points right, some wrong or missing
2 - mostly incorrect, with a little that is relevant
1 - incorrect, irrelevant or no answer
Reply with the score alone, as one digit.]]

-- The first whole number from 1 to 5 in text, or nil.
function M.parse_score(text)
  for digits in tostring(text):gmatch("%d+") do
    local n = tonumber(digits)
    if n >= 1 and n <= 5 then return n end
  end
  return nil
end

local function prompt(question, reference, answer)
  local parts = { "Question:\n" .. question }
  if reference then parts[#parts + 1] = "Reference answer:\n" .. reference end
  parts[#parts + 1] = "Answer to grade:\n" .. answer
  return table.concat(parts, "\n\n")
end

local function endpoint(url)
  return (url:gsub("/+$", ""):gsub("/v1$", "")) .. "/v1/chat/completions"
end

local function reply_text(reply, i)
  local choice = type(reply) == "table" and type(reply.choices) == "table" and reply.choices[1]
  local message = type(choice) == "table" and choice.message
  local content = type(message) == "table" and message.content
  if type(content) ~= "string" then error("judge: reply " .. i .. " has no choices[1].message.content", 0) end
  return content
end

local function strings(list, what, n)
  if type(list) ~= "table" then error("judge: " .. what .. " must be a list of strings", 0) end
  if n and #list ~= n then error(string.format("judge: %d %s for %d questions", #list, what, n), 0) end
  for i = 1, #list do
    if type(list[i]) ~= "string" then error(string.format("judge: %s[%d] is not a string", what, i), 0) end
  end
  return list
end

local function show(result, ctx, prefix)
  local rows = {}
  for s = 5, 1, -1 do rows[#rows + 1] = { s, 0 } end
  rows[6] = { "invalid", result.invalid }
  for _, s in ipairs(result.scores) do
    if s then rows[6 - s][2] = rows[6 - s][2] + 1 end
  end
  ctx:table({ title = "judge scores", columns = { "score", "items" }, rows = rows })
  local name = (prefix and prefix .. "/" or "") .. "judge_"
  if result.mean then ctx:metric(name .. "mean", result.mean) end
  ctx:metric(name .. "invalid", result.invalid)
end

local function judge(p)
  if type(p) ~= "table" then error("judge: expected a table of parameters", 0) end
  local url = p.url or os.getenv("MOONFORGE_JUDGE_URL")
  local model = p.model or os.getenv("MOONFORGE_JUDGE_MODEL")
  if not url then error("judge: no endpoint: give url = or set MOONFORGE_JUDGE_URL", 0) end
  if not model then error("judge: no model: give model = or set MOONFORGE_JUDGE_MODEL", 0) end
  local questions = strings(p.questions, "questions")
  local answers = strings(p.answers, "answers", #questions)
  local references = p.references and strings(p.references, "references", #questions)
  local opts = { api_key = p.api_key or os.getenv("MOONFORGE_JUDGE_KEY") or os.getenv("OPENAI_API_KEY"),
    retries = p.max_retries or 2, timeout = p.timeout or 60 }
  local target = endpoint(url)
  local result = { scores = {}, replies = {}, invalid = 0, n = #questions }
  local sum, valid = 0, 0
  local bar = p.ctx and p.ctx:progress(#questions, "judge")
  for i, question in ipairs(questions) do
    local ok, reply = pcall(http.post_json, target, { model = model, temperature = 0, messages = {
      { role = "system", content = p.rubric or M.RUBRIC },
      { role = "user", content = prompt(question, references and references[i], answers[i]) } } }, opts)
    if not ok then error("judge: " .. tostring(reply), 0) end
    local text = reply_text(reply, i)
    local score = M.parse_score(text)
    result.replies[i], result.scores[i] = text, score or false
    if score then
      sum, valid = sum + score, valid + 1
    else
      result.invalid = result.invalid + 1
    end
    if bar then bar:advance(1) end
  end
  if bar then bar:finish() end
  result.mean = valid > 0 and sum / valid or nil
  if p.ctx then show(result, p.ctx, p.prefix) end
  return result
end

function M.judge(p)
  local ok, result = pcall(judge, p)
  if not ok then error(result, 2) end
  return result
end

return M
