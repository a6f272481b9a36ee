-- Helpers for the mf.data tests: files in a scratch folder, a byte-level
-- tokenizer with the interface of mf.tokenizer (ids 0-255 are bytes), and a
-- ctx that records what a step prints.
local D = {}

function D.write(dir, name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local BOS, EOS, START, END = 256, 257, 258, 259

local function bytes(text, out)
  for i = 1, #text do out[#out + 1] = text:byte(i) end
  return out
end

-- Turns are <START> role "\n" content <END> "\n"; the mask covers an
-- assistant turn's content and its <END>.
D.tokenizer = { bos_id = BOS, eos_id = EOS, vocab_size = 260 }

function D.tokenizer:encode(text, opts)
  local ids = (opts and opts.add_special) and { BOS } or {}
  return bytes(text, ids)
end

function D.tokenizer:decode(ids)
  local chars = {}
  for _, id in ipairs(ids) do if id < 256 then chars[#chars + 1] = string.char(id) end end
  return table.concat(chars)
end

function D.tokenizer:chat(messages, opts)
  local ids, mask = {}, {}
  local function add(list, trained)
    for _, id in ipairs(list) do
      ids[#ids + 1], mask[#mask + 1] = id, trained and 1 or 0
    end
  end
  for _, m in ipairs(messages) do
    local trained = m.role == "assistant"
    add(bytes(m.role .. "\n", { START }), false)
    add(bytes(m.content, {}), trained)
    add({ END }, trained)
    add({ 10 }, false)
  end
  if opts and opts.add_generation_prompt then add(bytes("assistant\n", { START }), false) end
  return ids, mask
end

-- A ctx whose tables are kept in .tables.
function D.ctx()
  local ctx = { tables = {} }
  function ctx:table(t) self.tables[#self.tables + 1] = t end
  return ctx
end

return D
