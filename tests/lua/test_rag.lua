-- mf.rag: loaders (text, markdown, HTML, JSONL), chunking by words, tokens
-- and headings with positions, BM25 against rank-bm25's scores, vector
-- indexes from Lua (exact, HNSW, files, the cache protocol), fusion and
-- retrieval metrics.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"
local cache = require "moonforge.cache"
local engine = require "moonforge.engine"

local rag = mf.rag
local ROOT = os.getenv("MF_SOURCE_DIR") or "."
local dir = T.tmpdir("rag")

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

T.test("HTML: tags stripped, entities decoded, script and style dropped, h1-h3 kept", function()
  local text, headings = rag.html_text(
    "<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>" ..
    "<script>var x = '<p>no</p>';</script></head><body><h1>Guide &amp; FAQ</h1>" ..
    "<p>Caf&eacute; &lt;open&gt;   24&#47;7 &#x2014; <b>really</b>.</p><!-- hidden -->" ..
    "<h2>Billing</h2><ul><li>one</li><li>two&nbsp;items</li></ul><h4>Minor</h4>x < y</body></html>")
  T.eq(text, "T\nGuide & FAQ\nCafé <open> 24/7 — really.\nBilling\none\ntwo items\nMinor\nx < y")
  T.eq(#headings, 2)
  T.eq(headings[1].title, "Guide & FAQ")
  T.eq(headings[2].level, 2)
  T.eq(text:sub(headings[2].start, headings[2].start + 6), "Billing")
end)

local MARKDOWN = "Intro line\n# Setup\nInstall it.\n\n## Linux\nRun make.\n```\n# not a heading\n```\n" ..
  "## macOS\nUse brew.\n# Usage\nCall it.\n"

T.test("loaders: a folder by glob, formats by extension, JSONL rows", function()
  local docs_dir = dir .. "/docs"
  assert(require("moonforge.host").mkdir_p(docs_dir .. "/sub"))
  write(docs_dir .. "/guide.md", MARKDOWN)
  write(docs_dir .. "/sub/page.html", "<h1>Page</h1><p>Body text</p>")
  write(docs_dir .. "/notes.txt", "plain notes\nsecond line\n")
  write(docs_dir .. "/rows.jsonl", '{"text": "first row"}\n\n{"text": "third line row", "id": 3}\n')
  write(docs_dir .. "/ignored.bin", "xx")
  local docs = rag.load_documents(docs_dir)
  local names = {}
  for i, d in ipairs(docs) do names[i] = d.path:sub(#docs_dir + 2) .. ":" .. d.format end
  T.eq(table.concat(names, " "), "guide.md:markdown notes.txt:text rows.jsonl:jsonl rows.jsonl:jsonl sub/page.html:html")
  T.eq(docs[4].line, 3)
  T.eq(docs[4].row.id, 3)
  T.eq(docs[5].text, "Page\nBody text\n")
  T.eq(#rag.load_documents(docs_dir, { glob = "*.html" }), 1)
  T.eq(#rag.load_documents(docs_dir, { glob = "sub/*" }), 1)
  T.eq(#rag.load_documents({ docs_dir .. "/guide.md", docs_dir .. "/notes.txt" }), 2)
  T.raises(function() rag.load_documents(docs_dir .. "/absent") end, "absent: no such file or folder")
  write(dir .. "/bad.jsonl", '{"title": "x"}\n')
  T.raises(function() rag.load_documents(dir .. "/bad.jsonl") end, "bad.jsonl:1: no text field 'text'")
end)

T.test("chunks by words: windows with overlap, byte offsets and lines", function()
  local doc = { path = "a.txt", text = "one two three\nfour five six\nseven eight", headings = {} }
  local chunks = rag.chunk({ doc }, { size = 4, overlap = 1 })
  T.eq(#chunks, 3)
  T.eq(chunks[1].text, "one two three\nfour")
  T.eq(chunks[2].text, "four five six\nseven")
  T.eq(chunks[3].text, "seven eight")
  for i, c in ipairs(chunks) do
    T.eq(doc.text:sub(c.start, c.stop), c.text, "chunk " .. i .. " offsets")
    T.eq(c.id, i)
    T.eq(c.source, "a.txt")
  end
  T.eq(chunks[2].line_start, 2)
  T.eq(chunks[2].line_end, 3)
  T.raises(function() rag.chunk({ doc }, { size = 4, overlap = 4 }) end, "overlap must be an integer in 0..3")
end)

T.test("chunks by headings keep their heading path", function()
  local doc = { path = "g.md", text = MARKDOWN, headings = require("moonforge.rag_text").markdown_headings(MARKDOWN) }
  T.eq(#doc.headings, 4, "the fenced '# not a heading' is code")
  local chunks = rag.chunk({ doc }, { by = "headings" })
  local got = {}
  for i, c in ipairs(chunks) do got[i] = table.concat(c.headings, " > ") .. "|" .. c.text:gsub("\n", "/") end
  T.eq(table.concat(got, "\n"), table.concat({ "|Intro line", "Setup|# Setup/Install it.",
    "Setup > Linux|## Linux/Run make./```/# not a heading/```", "Setup > macOS|## macOS/Use brew.",
    "Usage|# Usage/Call it." }, "\n"))
  T.eq(chunks[3].line_start, 5)
  T.eq(chunks[3].line_end, 9)
  local small = rag.chunk({ doc }, { by = "headings", size = 2 })
  T.eq(small[3].text, "Install it.")
  T.eq(small[4].text, "## Linux")
  T.eq(table.concat(small[4].headings, " > "), "Setup > Linux")
end)

T.test("chunks by tokens of a tokenizer", function()
  local tok = mf.tokenizer.load(ROOT .. "/tests/reference/golden/tokenizers/gpt2.json")
  local doc = { path = "t.txt", text = "Retrieval finds passages; generation cites them.\nSecond line here.", headings = {} }
  local chunks = rag.chunk({ doc }, { tokenizer = tok, size = 6, overlap = 2 })
  T.truthy(#chunks >= 3, "several chunks")
  for i, c in ipairs(chunks) do
    T.eq(doc.text:sub(c.start, c.stop), c.text, "chunk " .. i .. " offsets")
    T.truthy(#tok:encode(c.text) <= 6, "chunk " .. i .. " fits")
  end
  T.eq(chunks[#chunks].stop, #doc.text)
end)

-- 1 when s is well-formed UTF-8.
local function valid_utf8(s)
  local i = 1
  while i <= #s do
    local b, n = s:byte(i), 0
    if b >= 0xf0 and b < 0xf8 then n = 3 elseif b >= 0xe0 then n = 2 elseif b >= 0xc2 then n = 1
    elseif b >= 0x80 then return false end
    for k = 1, n do
      local c = s:byte(i + k)
      if not c or c < 0x80 or c >= 0xc0 then return false end
    end
    i = i + n + 1
  end
  return true
end

T.test("token windows never split a character", function()
  -- GPT-2's byte-level tokens cut these characters into pieces.
  local tok = mf.tokenizer.load(ROOT .. "/tests/reference/golden/tokenizers/gpt2.json")
  local doc = { path = "t.txt", text = "scale is alpha/√r, ±1/√in; γάμμα 日本語 🙂 done", headings = {} }
  local chunks = rag.chunk({ doc }, { tokenizer = tok, size = 3, overlap = 1 })
  T.truthy(#chunks >= 5, "several chunks")
  for i, c in ipairs(chunks) do
    T.truthy(valid_utf8(c.text), "chunk " .. i .. " is UTF-8: " .. c.text)
    T.eq(doc.text:sub(c.start, c.stop), c.text, "chunk " .. i .. " offsets")
  end
  T.eq(chunks[#chunks].stop, #doc.text)
end)

T.test("BM25 matches rank-bm25 (BM25Okapi, k1 1.5, b 0.75)", function()
  local golden = json.decode(read(ROOT .. "/tests/reference/golden/rag/bm25.json"))
  for _, key in ipairs({ "plain", "stopwords" }) do
    local bm = rag.bm25(golden.corpus, { stopwords = key == "stopwords" })
    for q, query in ipairs(golden.queries) do
      local scores = bm:scores(query)
      for d, want in ipairs(golden[key][q]) do
        T.truthy(math.abs(scores[d] - want) <= 1e-12 * math.max(1, math.abs(want)),
          string.format("%s query %q chunk %d: %.17g, rank-bm25 %.17g", key, query, d, scores[d], want))
      end
    end
  end
  local bm = rag.bm25(golden.corpus)
  local ids, scores = bm:search("reset password", 3)
  T.eq(table.concat(ids, ","), "2,7")
  T.truthy(scores[1] > scores[2])
  T.eq(#bm:search("nothing matches", 5), 0)
  T.eq(table.concat(rag.analyze("Wi-Fi's 5GHz, café!", false), " "), "wi fi s 5ghz café")
end)

T.test("fusion by reciprocal rank, recall@k and MRR", function()
  local ids, scores = rag.fuse({ { 3, 1, 2 }, { 1, 4 } }, { k = 60 })
  T.eq(table.concat(ids, ","), "1,3,4,2")
  T.near(scores[1], 1 / 62 + 1 / 61, 1e-15)
  T.near(scores[2], 1 / 61, 1e-15)
  local results = { { 5, 1, 2 }, { 9, 8, 7 }, { 4 } }
  local relevant = { 1, { 7, 6 }, 4 }
  T.near(rag.recall_at_k(results, relevant, 2), (1 + 0 + 1) / 3, 1e-15)
  T.near(rag.recall_at_k(results, relevant, 3), (1 + 0.5 + 1) / 3, 1e-15)
  T.near(rag.mrr(results, relevant), (1 / 2 + 1 / 3 + 1) / 3, 1e-15)
  T.near(rag.mrr(results, relevant, 2), (1 / 2 + 1) / 3, 1e-15)
end)

-- n random vectors of dimension d as a table of tables, from a seeded stream.
local function random_vectors(n, d, seed)
  local r = engine.ffi.new("mf_rng")
  engine.C.mf_rng_init(r, seed, 0)
  local out = {}
  for i = 1, n do
    local v = {}
    for j = 1, d do v[j] = engine.C.mf_rng_normal(r) end
    out[i] = v
  end
  return out
end

T.test("vector indexes: exact and HNSW agree, files and the cache round-trip", function()
  local vectors, queries = random_vectors(800, 16, 1), random_vectors(30, 16, 2)
  local exact = rag.vector_index { dim = 16, kind = "exact" }
  local hnsw = rag.vector_index { dim = 16, kind = "hnsw", M = 8, ef_construction = 100, ef_search = 64 }
  local ids = exact:add(nil, mf.tensor.from(vectors))
  T.eq(ids[1], 1)
  T.eq(ids[800], 800)
  hnsw:add(nil, vectors)
  local want = exact:search(queries, 10)
  local got = hnsw:search(queries, 10)
  local recall = rag.recall_at_k(got, want, 10)
  T.truthy(recall >= 0.9, "HNSW recall@10 " .. recall)
  T.truthy(hnsw:distance_count() < exact:distance_count() / 2,
    string.format("HNSW %d similarities, exact %d", hnsw:distance_count(), exact:distance_count()))
  local one, one_scores = exact:search(vectors[5], 3)
  T.eq(one[1], 5)
  T.near(one_scores[1], 1, 1e-6)

  local path = dir .. "/ix.mfvi"
  hnsw:save(path)
  local back = rag.open_index(path)
  T.eq(back:count(), 800)
  T.eq(back:options().kind, "hnsw")
  T.eq(json.encode((back:search(queries, 10))), json.encode(got))
  back:delete(got[1][1])
  T.truthy(back:search(queries[1], 10)[1] ~= got[1][1], "a deleted id is not returned")

  local bytes = cache.serialize({ index = hnsw }, dir)
  local restored = cache.deserialize(bytes, dir).index
  T.eq(tostring(restored), "vector index hnsw cosine dim 16: 800 vectors")
  T.eq(json.encode((restored:search(queries, 10))), json.encode(got))

  T.raises(function() hnsw:search({ 1, 2, 3 }, 2) end, "queries have dimension 3, the index has dimension 16")
  T.raises(function() hnsw:add({ 1 }, { vectors[1] }) end, "id 1 is already in the index")
  T.raises(function() rag.vector_index { dim = 4, metric = "l1" } end, "unknown metric 'l1'")
  write(dir .. "/bad.mfvi", read(path):sub(1, 500))
  T.raises(function() rag.open_index(dir .. "/bad.mfvi") end, "truncated")
end)

return T.done()
