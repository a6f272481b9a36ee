-- Trains a byte-level BPE vocabulary on the pretraining corpus and writes
-- the corpus as token shards, one document per paragraph, each ended by
-- <|endoftext|>:
--
--   bash datasets/pretrain_corpus/build.sh          # the text, first
--   moonforge exec datasets/pretrain_corpus/tokenize.lua [VOCAB_SIZE [DIR]]
--
-- DIR (default datasets/cache/pretrain_corpus) holds train.txt and
-- eval.txt; tokenizer.json (loadable by HF tokenizers), train.shard and
-- eval.shard are written beside them. VOCAB_SIZE defaults to 4096.
local mf = require "moonforge"
local engine = require "moonforge.engine"

local vocab_size = tonumber(arg[1] or "4096")
local dir = arg[2] or "datasets/cache/pretrain_corpus"
if not vocab_size or vocab_size < 257 then error("VOCAB_SIZE must be a number above 256", 0) end

local tok = mf.tokenizer.train{ files = { dir .. "/train.txt" }, vocab_size = vocab_size,
  special_tokens = { "<|endoftext|>" }, output = dir .. "/tokenizer.json" }
local eot = tok:id("<|endoftext|>")
print(string.format("%-32s vocab %d  sha256 %s", dir .. "/tokenizer.json", tok.vocab_size,
  engine.sha256_file(dir .. "/tokenizer.json")))

for _, split in ipairs({ "train", "eval" }) do
  local docs, bytes = {}, 0
  for line in io.lines(dir .. "/" .. split .. ".txt") do
    local ids = tok:encode(line)
    ids[#ids + 1] = eot
    docs[#docs + 1] = ids
    bytes = bytes + #line + 1
  end
  local path = dir .. "/" .. split .. ".shard"
  local report = mf.data.write_shard(path, docs)
  print(string.format("%-32s %8d documents %9d tokens (%s, %.2f bytes/token)  sha256 %s", path, report.documents,
    report.tokens, report.dtype, bytes / report.tokens, engine.sha256_file(path)))
end
