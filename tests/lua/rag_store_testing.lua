-- The served RAG store of the end-to-end tests: three short documents (one
-- markdown file with a heading, two plain ones), one chunk each, embedded
-- with the committed tiny random BERT into an exact cosine index.
--
--   local R = require "rag_store_testing"
--   local store_dir = R.make_store(dir)   -- dir/docs/*, dir/docs.mfrag
--
-- As a script, `moonforge exec rag_store_testing.lua DIR` makes them in DIR
-- (run from the repository's root, as the encoder's path is relative).
local mf = require "moonforge"
local host = require "moonforge.host"

local M = {}

M.ENCODER = "tests/reference/golden/embed/tiny-bert"
M.DOCS = {
  ["cats.txt"] = "the cat sat on the mat\n",
  ["dogs.md"] = "# Dogs\na dog ran quickly\n",
  ["words.txt"] = "resume of unknown word\n",
}

function M.make_store(dir)
  assert(host.mkdir_p(dir .. "/docs"))
  for name, text in pairs(M.DOCS) do assert(host.write_atomic(dir .. "/docs/" .. name, text)) end
  local enc = mf.embed.load(M.ENCODER)
  local chunks = mf.rag.chunk(mf.rag.load_documents(dir .. "/docs"), { by = "headings" })
  local texts = {}
  for i, c in ipairs(chunks) do texts[i] = c.text end
  local ix = mf.rag.vector_index { dim = enc.dim, kind = "exact" }
  ix:add(nil, enc:encode(texts))
  return mf.rag.save_store(dir .. "/docs.mfrag", { index = ix, chunks = chunks, encoder = M.ENCODER })
end

if arg and arg[0] and arg[0]:match("rag_store_testing%.lua$") then
  M.make_store(assert(arg[1], "usage: rag_store_testing.lua DIR"))
end

return M
