-- moonforge.chat: chat templates, used as tok:chat(messages, opts).
--
--   local ids, mask = tok:chat({
--     { role = "system", content = "Be brief." },
--     { role = "user", content = "Hi" },
--     { role = "assistant", content = "Hello!" },
--   }, { add_generation_prompt = false, template = nil })
--
-- template: nil (the one the model declares, recognised by its markers),
-- "chatml" (SmolLM, Qwen), "llama3", "mistral", or a function
-- (messages, opts) -> pieces. A piece is { token = "<|im_start|>" } (a
-- marker, inserted as its id) or { text = "..." } (encoded as data:
-- special-token strings in it stay text); train = true marks the pieces
-- whose ids the model should learn. mask[i] is 1 for those ids (assistant
-- contents and the marker that ends an assistant turn), 0 elsewhere.
local M = {}

local ROLES = { system = true, user = true, assistant = true }

local function validate(messages)
  if type(messages) ~= "table" then error("chat: messages must be a list of {role=, content=}", 3) end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" then error(string.format("chat: message %d is not a table", i), 3) end
    if not ROLES[m.role] then
      error(string.format("chat: message %d has role '%s' (expected system, user or assistant)", i,
        tostring(m.role)), 3)
    end
    if type(m.content) ~= "string" then
      error(string.format("chat: message %d (%s) has no content string", i, m.role), 3)
    end
  end
end

-- ChatML: <|im_start|>role\ncontent<|im_end|>\n. default_system is put
-- first when the conversation has no system message (SmolLM2 does this).
local function chatml(messages, opts)
  local pieces = {}
  local function turn(role, content, train)
    pieces[#pieces + 1] = { token = "<|im_start|>" }
    pieces[#pieces + 1] = { text = role .. "\n" }
    pieces[#pieces + 1] = { text = content, train = train }
    pieces[#pieces + 1] = { token = "<|im_end|>", train = train }
    pieces[#pieces + 1] = { text = "\n" }
  end
  if opts.default_system and (messages[1] == nil or messages[1].role ~= "system") then
    turn("system", opts.default_system, false)
  end
  for _, m in ipairs(messages) do turn(m.role, m.content, m.role == "assistant") end
  if opts.add_generation_prompt then
    pieces[#pieces + 1] = { token = "<|im_start|>" }
    pieces[#pieces + 1] = { text = "assistant\n" }
  end
  return pieces
end

-- Llama 3: <|begin_of_text|> then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
-- (contents trimmed, as its template does).
local function llama3(messages, opts)
  local pieces = { { token = "<|begin_of_text|>" } }
  local function header(role)
    pieces[#pieces + 1] = { token = "<|start_header_id|>" }
    pieces[#pieces + 1] = { text = role }
    pieces[#pieces + 1] = { token = "<|end_header_id|>" }
    pieces[#pieces + 1] = { text = "\n\n" }
  end
  for _, m in ipairs(messages) do
    local train = m.role == "assistant"
    header(m.role)
    pieces[#pieces + 1] = { text = (m.content:gsub("^%s+", ""):gsub("%s+$", "")), train = train }
    pieces[#pieces + 1] = { token = "<|eot_id|>", train = train }
  end
  if opts.add_generation_prompt then header("assistant") end
  return pieces
end

-- Mistral: <s>[INST] user [/INST] assistant</s> ...; a system message is
-- put before the first user message, as Mistral's template does.
local function mistral(messages, opts)
  local pieces = { { token = "<s>" } }
  local system
  for _, m in ipairs(messages) do
    if m.role == "system" then
      system = m.content
    elseif m.role == "user" then
      local content = system and (system .. "\n\n" .. m.content) or m.content
      system = nil
      pieces[#pieces + 1] = { token = "[INST]" }
      pieces[#pieces + 1] = { text = " " .. content .. " " }
      pieces[#pieces + 1] = { token = "[/INST]" }
    else
      pieces[#pieces + 1] = { text = m.content, train = true }
      pieces[#pieces + 1] = { token = "</s>", train = true }
    end
  end
  return pieces
end

local BUILTIN = { chatml = chatml, llama3 = llama3, mistral = mistral }

-- The built-in template a declared template source stands for.
local function recognise(source)
  if source:find("<|im_start|>", 1, true) then
    -- a literal system turn in the source is its default system prompt
    for default in source:gmatch("<|im_start|>system(.-)<|im_end|>") do
      default = default:gsub("^\\n", ""):gsub("^\n", "")
      if not default:find("[{}']") then return "chatml", default end
    end
    return "chatml"
  end
  if source:find("<|start_header_id|>", 1, true) then return "llama3" end
  if source:find("[INST]", 1, true) then return "mistral" end
end

local function choose(tok, opts)
  local template = opts.template
  if type(template) == "function" then return template, opts end
  if template == nil then
    if not tok.chat_template then
      error("chat: the tokenizer declares no chat template; pass template = 'chatml', 'llama3', " ..
        "'mistral' or a function", 3)
    end
    local name, default_system = recognise(tok.chat_template)
    if not name then error("chat: the model's chat template is not one moonforge knows; pass opts.template", 3) end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.default_system = o.default_system or default_system
    return BUILTIN[name], o
  end
  local fn = BUILTIN[template]
  if not fn then error("chat: unknown template '" .. tostring(template) .. "' (chatml, llama3, mistral)", 3) end
  return fn, opts
end

-- Pieces to ids. A marker that is a token of its own becomes its id; any
-- other marker is template text. Adjacent texts with the same train flag
-- are encoded together, as HF encodes the text between two special tokens.
function M.encode(tok, messages, opts)
  opts = opts or {}
  validate(messages)
  local template, o = choose(tok, opts)
  local ids, mask = {}, {}
  local run, run_train = {}, false
  local function push(id, train)
    ids[#ids + 1] = id
    mask[#mask + 1] = train and 1 or 0
  end
  local function flush()
    if #run > 0 then
      for _, id in ipairs(tok:encode(table.concat(run))) do push(id, run_train) end
    end
    run = {}
  end
  for i, piece in ipairs(template(messages, o)) do
    local id = piece.token and tok:id(piece.token)
    local text = piece.text or piece.token
    if type(text) ~= "string" then error(string.format("chat: template piece %d has neither token nor text", i), 2) end
    if id or (piece.train or false) ~= run_train then flush() end
    run_train = piece.train or false
    if id then push(id, run_train) else run[#run + 1] = text end
  end
  flush()
  return ids, mask
end

return M
