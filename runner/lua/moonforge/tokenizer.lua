-- moonforge.tokenizer (mf.tokenizer): BPE tokenizers, encoded and decoded in C
-- exactly as HF tokenizers does.
--
--   local tok = mf.tokenizer.load("path/to/folder")  -- tokenizer.json (+ tokenizer_config.json) or a .gguf
--   local ids = tok:encode("Hello", { add_special = false, parse_special = false })
--   tok:decode(ids, { skip_special = true })  --> "Hello"
--   tok:id("<|im_end|>"), tok:token(42), tok.vocab_size, tok.bos_id, tok.eos_id
--   local ids, mask = tok:chat(messages, { add_generation_prompt = true })
--   mf.tokenizer.train{ files = { "corpus.txt" }, vocab_size = 8000, output = "out/tokenizer.json" }
--
-- Text is data: a special token written in the text stays text unless
-- parse_special is true. add_special puts the tokenizer's own ids around
-- the text (e.g. the BOS of Llama). Ids are 0-based, as in every format.
local engine = require "moonforge.engine"
local tensor = require "moonforge.tensor"

local ffi, C = engine.ffi, engine.C
local check, check_ptr = engine.check, engine.check_ptr

local M = {}
local Tokenizer = {}
Tokenizer.__index = Tokenizer

local function optional_id(id)
  return id >= 0 and id or nil
end

-- mf.tokenizer.load(path): a tokenizer.json, a folder holding one, a .gguf,
-- or a bundle (*.mfb; see moonforge.bundle).
function M.load(path)
  if type(path) ~= "string" then error("mf.tokenizer.load(path): path must be a string", 2) end
  local bundle = require "moonforge.bundle"
  if bundle.is_bundle(path) then
    path = bundle.open(path).tokenizer or error("mf.tokenizer.load: " .. path .. " holds no tokenizer", 2)
  end
  local ptr = ffi.gc(check_ptr(C.mf_tokenizer_load(path), 2), C.mf_tokenizer_free)
  local template = ffi.string(C.mf_tokenizer_chat_template(ptr))
  return setmetatable({
    ptr = ptr,
    path = path,
    vocab_size = C.mf_tokenizer_vocab_size(ptr),
    bos_id = optional_id(C.mf_tokenizer_bos_id(ptr)),
    eos_id = optional_id(C.mf_tokenizer_eos_id(ptr)),
    pad_id = optional_id(C.mf_tokenizer_pad_id(ptr)),
    chat_template = template ~= "" and template or nil,
  }, Tokenizer)
end

-- The ids of text in an int32 buffer, and their count.
local function encode_buffer(self, text, opts, level)
  if type(text) ~= "string" then error("encode: text must be a string, got " .. type(text), level + 1) end
  opts = opts or {}
  local add, parse = opts.add_special and 1 or 0, opts.parse_special and 1 or 0
  local cap = #text + 16
  for _ = 1, 2 do -- a second pass only when the first buffer was short
    local buf = ffi.new("int32_t[?]", cap)
    local n = tonumber(check(C.mf_tokenizer_encode(self.ptr, text, #text, add, parse, buf, cap), level + 1))
    if n <= cap then return buf, n end
    cap = n
  end
end

function Tokenizer:encode(text, opts)
  local buf, n = encode_buffer(self, text, opts, 2)
  local ids = {}
  for i = 1, n do ids[i] = buf[i - 1] end
  return ids
end

-- tok:encode_tensor(text [, opts]): the ids as an I32 tensor [n], for bulk work.
function Tokenizer:encode_tensor(text, opts)
  local buf, n = encode_buffer(self, text, opts, 2)
  local shape = ffi.new("int64_t[1]", n)
  local t = ffi.gc(check_ptr(C.mf_tensor_new(C.MF_I32, 1, shape), 2), C.mf_tensor_free)
  ffi.copy(t.data, buf, n * 4)
  return tensor.borrow(t, t)
end

-- ids: a table of ids or an I32 tensor.
function Tokenizer:decode(ids, opts)
  local buf, n
  if tensor.is_tensor(ids) then
    if tensor.dtype(ids) ~= "I32" then error("decode: expected an I32 tensor, got " .. tensor.dtype(ids), 2) end
    buf, n = ffi.cast("int32_t *", tensor.data(ids)), tensor.numel(ids)
  elseif type(ids) == "table" then
    n = #ids
    buf = ffi.new("int32_t[?]", math.max(n, 1))
    for i = 1, n do
      local id = ids[i]
      if type(id) ~= "number" or id % 1 ~= 0 or id < 0 or id >= self.vocab_size then
        error(string.format("decode: ids[%d] = %s is not an id of this vocabulary [0, %d)", i, tostring(id),
          self.vocab_size), 2)
      end
      buf[i - 1] = id
    end
  else
    error("decode: ids must be a table or an I32 tensor", 2)
  end
  local skip = opts and opts.skip_special and 1 or 0
  local cap = n * 8 + 16
  for _ = 1, 2 do
    local out = ffi.new("char[?]", cap)
    local len = tonumber(check(C.mf_tokenizer_decode(self.ptr, buf, n, skip, out, cap), 2))
    if len <= cap then return ffi.string(out, len) end
    cap = len
  end
end

-- The id of a token as the vocabulary spells it, or nil.
function Tokenizer:id(token)
  local id = C.mf_tokenizer_token_id(self.ptr, token, #token)
  return optional_id(id)
end

function Tokenizer:token(id)
  local len = ffi.new("size_t[1]")
  local s = check_ptr(C.mf_tokenizer_token(self.ptr, id, len), 2)
  return ffi.string(s, len[0])
end

function Tokenizer:is_special(id) return C.mf_tokenizer_is_special(self.ptr, id) ~= 0 end

-- tok:chat(messages, opts) -> ids, train_mask (see moonforge.chat).
function Tokenizer:chat(messages, opts)
  return require("moonforge.chat").encode(self, messages, opts)
end

local function string_list(v, what)
  if v == nil then return {} end
  if type(v) ~= "table" then error("mf.tokenizer.train: " .. what .. " must be a list of strings", 3) end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then error(string.format("mf.tokenizer.train: %s[%d] is not a string", what, i), 3) end
  end
  return v
end

local function cstrings(list)
  local arr = ffi.new("const char *[?]", math.max(#list, 1))
  local lens = ffi.new("size_t[?]", math.max(#list, 1))
  for i, s in ipairs(list) do
    arr[i - 1] = s
    lens[i - 1] = #s
  end
  return arr, lens
end

-- mf.tokenizer.train{files=, texts=, vocab_size=, min_frequency=2,
-- special_tokens=, output=}: byte-level BPE with GPT-2's pre-tokenizer,
-- written to output as a tokenizer.json; returns the loaded tokenizer.
function M.train(opts)
  if type(opts) ~= "table" then error("mf.tokenizer.train(opts): opts must be a table", 2) end
  local files, texts = string_list(opts.files, "files"), string_list(opts.texts, "texts")
  local specials = string_list(opts.special_tokens, "special_tokens")
  if #files + #texts == 0 then error("mf.tokenizer.train: give files or texts to train on", 2) end
  if type(opts.vocab_size) ~= "number" or opts.vocab_size % 1 ~= 0 then
    error("mf.tokenizer.train: vocab_size must be an integer", 2)
  end
  if type(opts.output) ~= "string" then error("mf.tokenizer.train: output must be a path", 2) end
  local file_ptrs = cstrings(files)
  local text_ptrs, text_lens = cstrings(texts)
  local special_ptrs = cstrings(specials)
  local o = ffi.new("mf_bpe_train_opts")
  o.files, o.nfiles = file_ptrs, #files
  o.texts, o.text_lens, o.ntexts = text_ptrs, text_lens, #texts
  o.vocab_size, o.min_frequency = opts.vocab_size, opts.min_frequency or 2
  o.special_tokens, o.nspecial = special_ptrs, #specials
  check(C.mf_tokenizer_train(o, opts.output), 2)
  return M.load(opts.output)
end

return M
