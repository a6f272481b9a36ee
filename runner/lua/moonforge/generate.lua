-- moonforge.generate: text from a model and a tokenizer (chat replies, stop
-- strings, streamed text) on top of model:generate_batch.
--
--   local reply, info = model:chat(tok, messages, { max_tokens = 64, temperature = 0.7, seed = 1,
--     stop = { "\n\n" }, on_text = function(piece) io.write(piece) end })
--   -- info = { prompt_tokens =, completion_tokens =, finish_reason = "stop" | "length" }
--   local replies, infos = model:chat_batch(tok, { messages1, messages2 }, opts)
--
-- opts: max_tokens (256), temperature (0: greedy), top_k, top_p,
-- repetition_penalty, seed, batch_size (see model:generate_batch), stop (a
-- list of strings), on_text(piece [, i]), template (see moonforge.chat),
-- progress (a bar from ctx:progress: advanced as each reply starts,
-- finished when all are done).
-- A reply ends at the tokenizer's or the model's eos, at the chat
-- template's end-of-turn token (e.g. <|im_end|>), or before the first stop
-- string in its text; the end token is not part of the reply, and special
-- tokens are skipped when decoding. on_text sees the reply as it grows, in
-- pieces of whole UTF-8 characters that never hold the start of a stop
-- string, so the pieces concatenate to the reply.
local M = {}

-- The length of the longest prefix of s[1..n] that does not end inside a
-- UTF-8 character. Bytes that cannot start a character pass as they are.
local function whole_chars(s, n)
  for back = 0, math.min(3, n - 1) do
    local b = s:byte(n - back)
    if b < 0x80 then return n end
    if b >= 0xC0 then
      local size = b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2
      return size <= back + 1 and n or n - back - 1
    end
  end
  return n
end

-- The length of the longest tail of text that begins some stop string.
local function stop_prefix(text, stop)
  local hold = 0
  for _, s in ipairs(stop) do
    for k = math.min(#s - 1, #text), hold + 1, -1 do
      if text:sub(-k) == s:sub(1, k) then
        hold = k
        break
      end
    end
  end
  return hold
end

-- Where the first stop string in text begins (searching from init), or nil.
local function find_stop(text, stop, init)
  local first
  for _, s in ipairs(stop) do
    local at = text:find(s, math.max(1, init - #s + 1), true)
    if at and (not first or at < first) then first = at end
  end
  return first
end

local Stream = {}
Stream.__index = Stream

-- generate.stream(tok, {stop =, end_ids =, on_text =}): turns ids into the
-- reply's text as they come. end_ids is a set ({[id] = true}) of ids that
-- end the reply without being part of it.
function M.stream(tok, opts)
  opts = opts or {}
  local stop = opts.stop or {}
  for i, s in ipairs(stop) do
    if type(s) ~= "string" or s == "" then error(string.format("stop[%d] must be a non-empty string", i), 2) end
  end
  return setmetatable({ tok = tok, stop = stop, end_ids = opts.end_ids or {}, on_text = opts.on_text,
    ids = {}, text = "", sent = 0, stopped = false }, Stream)
end

function Stream:emit(n)
  if n > self.sent then
    if self.on_text then self.on_text(self.text:sub(self.sent + 1, n)) end
    self.sent = n
  end
end

-- Adds the next id; true when the reply is complete (an end id or a stop
-- string), after which further ids are ignored.
function Stream:push(id)
  if self.stopped then return true end
  if self.end_ids[id] then
    self.stopped = true
    return true
  end
  self.ids[#self.ids + 1] = id
  local text = self.tok:decode(self.ids, { skip_special = true })
  local at = find_stop(text, self.stop, #self.text + 1)
  if at then
    self.text = text:sub(1, at - 1)
    self.stopped = true
    return true
  end
  self.text = text
  self:emit(whole_chars(text, #text - stop_prefix(text, self.stop)))
  return false
end

-- The reply, after sending on_text whatever it still holds back.
function Stream:finish()
  self:emit(#self.text)
  return self.text
end

-- generate.text_batch(model, tok, prompts, opts, end_ids) -> replies, infos:
-- replies to prompts (lists of ids), generated together. end_ids is a set
-- of ids that end a reply (see M.stream).
function M.text_batch(model, tok, prompts, opts, end_ids)
  opts = opts or {}
  local streams = {}
  local bar = opts.progress
  for i = 1, #prompts do
    local started = false
    local on_text = (opts.on_text or bar) and function(piece)
      if bar and not started then
        started = true
        bar:advance(1)
      end
      if opts.on_text then opts.on_text(piece, i) end
    end
    streams[i] = M.stream(tok, { stop = opts.stop, end_ids = end_ids, on_text = on_text })
  end
  local stop_ids = {}
  for id in pairs(end_ids or {}) do stop_ids[#stop_ids + 1] = id end
  table.sort(stop_ids)
  local new = model:generate_batch(prompts, {
    max_tokens = opts.max_tokens or 256, temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p,
    repetition_penalty = opts.repetition_penalty, seed = opts.seed, batch_size = opts.batch_size,
    max_len = opts.max_len, stop = stop_ids,
    on_token = function(id, i)
      if streams[i]:push(id) then return false end
    end,
  })
  if bar then bar:finish() end
  local replies, infos = {}, {}
  for i, s in ipairs(streams) do
    replies[i] = s:finish()
    infos[i] = { prompt_tokens = #prompts[i], completion_tokens = #new[i],
      finish_reason = s.stopped and "stop" or "length" }
  end
  return replies, infos
end

-- The token that closes an assistant turn in tok's chat template (the last
-- id the template marks for training after an assistant message), or nil
-- when that marker is plain text.
function M.end_of_turn(tok, template)
  local ids, mask = tok:chat({ { role = "user", content = "?" }, { role = "assistant", content = "!" } },
    { template = template })
  for i = #ids, 1, -1 do
    if mask[i] == 1 then return tok:is_special(ids[i]) and ids[i] or nil end
  end
end

-- The ids that end a chat reply: eos of the tokenizer and of the model, and
-- the template's end of turn.
local function chat_end_ids(model, tok, template)
  local set = {}
  for _, id in ipairs { tok.eos_id or -1, model:config().eos_token_id or -1, M.end_of_turn(tok, template) or -1 } do
    if id >= 0 then set[id] = true end
  end
  return set
end

-- generate.chat_batch(model, tok, conversations, opts) -> replies, infos.
function M.chat_batch(model, tok, conversations, opts)
  opts = opts or {}
  if type(conversations) ~= "table" or #conversations == 0 then
    error("chat_batch: conversations must be a non-empty list of message lists", 2)
  end
  local prompts = {}
  for i, messages in ipairs(conversations) do
    prompts[i] = tok:chat(messages, { add_generation_prompt = true, template = opts.template })
  end
  return M.text_batch(model, tok, prompts, opts, chat_end_ids(model, tok, opts.template))
end

-- generate.chat(model, tok, messages, opts) -> reply, info.
function M.chat(model, tok, messages, opts)
  local replies, infos = M.chat_batch(model, tok, { messages }, opts)
  return replies[1], infos[1]
end

return M
