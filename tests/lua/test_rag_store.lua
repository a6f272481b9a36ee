-- mf.rag.save_store / mf.rag.open_store on the committed tiny random BERT:
-- the three files and what they hold, a round trip, the dense, BM25 and
-- hybrid modes against the pieces they are made of, replacing a store,
-- nothing half-written when a save fails, and every fault open_store names.
local T = require "testing"
local mf = require "moonforge"
local json = require "moonforge.json"
local host = require "moonforge.host"

local rag = mf.rag
local ROOT = os.getenv("MF_SOURCE_DIR") or "."
local TINY = ROOT .. "/tests/reference/golden/embed/tiny-bert"
local dir = T.tmpdir("rag-store")
local enc = mf.embed.load(TINY)

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function texts_of(chunks)
  local texts = {}
  for i, c in ipairs(chunks) do texts[i] = c.text end
  return texts
end

local GUIDE = "# Pets\nthe cat sat on the mat\n## Dogs\na dog ran quickly\n"
assert(host.mkdir_p(dir .. "/docs"))
write(dir .. "/docs/guide.md", GUIDE)
write(dir .. "/docs/notes.txt", "resume of unknown word\n")
write(dir .. "/docs/other.txt", "bed and mat\n")
local chunks = rag.chunk(rag.load_documents(dir .. "/docs"), { by = "headings" })

local function build_index(n_vectors, dim)
  local ix = rag.vector_index { dim = dim or enc.dim, metric = "cosine", kind = "exact" }
  ix:add(nil, enc:encode(texts_of(chunks)))
  if n_vectors and n_vectors > #chunks then ix:add(nil, enc:encode({ "extra" })) end
  return ix
end

local function save(path, extra)
  local opts = { index = build_index(), chunks = chunks, encoder = TINY }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return rag.save_store(path, opts)
end

T.test("save_store writes the index, the chunks and the manifest", function()
  T.eq(#chunks, 4)
  local path = save(dir .. "/a.mfrag", { bm25 = true })
  T.eq(path, dir .. "/a.mfrag")
  local names = host.listdir(path)
  table.sort(names)
  T.eq(table.concat(names, " "), "chunks.jsonl index.mfvi store.json")
  local m = json.decode(T.read(path .. "/store.json"))
  T.eq(m.format, "moonforge-rag-store")
  T.eq(m.version, 1)
  T.eq(m.encoder, TINY)
  T.eq(m.dim, 16)
  T.eq(m.metric, "cosine")
  T.eq(m.count, 4)
  T.eq(m.bm25, true)
  local rows = {}
  for line in T.read(path .. "/chunks.jsonl"):gmatch("[^\n]+") do rows[#rows + 1] = json.decode(line) end
  T.eq(#rows, 4)
  T.eq(rows[1].id, 1)
  T.eq(rows[1].title, "Pets")
  T.eq(rows[2].title, "Pets > Dogs")
  T.eq(rows[2].text, "## Dogs\na dog ran quickly")
  T.eq(rows[2].line_start, 3)
  T.eq(rows[2].line_end, 4)
  T.eq(rows[3].source, dir .. "/docs/notes.txt")
  T.eq(rows[3].title, json.null)
  T.eq(host.kind(dir .. "/a.mfrag.tmp-" .. host.getpid()), nil, "the temporary folder is gone")
end)

T.test("open_store gives back the chunks, the index and the encoder's path", function()
  local st = rag.open_store(dir .. "/a.mfrag")
  T.eq(#st.chunks, #chunks)
  for i, c in ipairs(chunks) do
    local got = st.chunks[i]
    T.eq(got.id, i)
    T.eq(got.text, c.text)
    T.eq(got.source, c.source)
    T.eq(got.title, #c.headings > 0 and table.concat(c.headings, " > ") or nil)
    T.eq(got.line_start, c.line_start)
    T.eq(got.line_end, c.line_end)
  end
  T.eq(st.index:count(), 4)
  T.eq(st.index:dim(), 16)
  T.eq(st.encoder_path, TINY)
  T.eq(st.bm25, true)
  T.truthy(tostring(st):find("4 chunks", 1, true), tostring(st))
end)

T.test("dense retrieval is the encoder and the index; the chunk itself comes first", function()
  local st = rag.open_store(dir .. "/a.mfrag")
  local ix = build_index()
  for _, c in ipairs(chunks) do
    local hits = st:retrieve(c.text, 3, { mode = "dense" })
    local ids, scores = ix:search(enc:encode({ c.text }), 3)  -- queries [1, dim]: lists of lists
    ids, scores = ids[1], scores[1]
    T.eq(#hits, 3)
    T.eq(hits[1].id, c.id, "the chunk's own text finds it first")
    T.near(hits[1].score, 1, 1e-5, "cosine with itself")
    for i, h in ipairs(hits) do
      T.eq(h.id, ids[i], "dense id " .. i)
      T.eq(h.score, scores[i], "dense score " .. i)
      T.eq(h.text, chunks[h.id].text)
      T.eq(h.source, chunks[h.id].source)
    end
  end
  T.eq(#st:retrieve("cat", 10, { mode = "dense" }), 4, "k beyond the store gives every chunk")
end)

T.test("bm25 and hybrid modes; hybrid is the default of a store saved with bm25", function()
  local st = rag.open_store(dir .. "/a.mfrag")
  local query = "dog ran"
  local bm = rag.bm25(chunks)
  local b_ids, b_scores = bm:search(query, 2)
  local hits = st:retrieve(query, 2, { mode = "bm25" })
  T.eq(#hits, #b_ids)
  for i, h in ipairs(hits) do
    T.eq(h.id, b_ids[i])
    T.eq(h.score, b_scores[i])
  end
  T.eq(hits[1].id, 2)
  local dense_ids = {}
  for i, h in ipairs(st:retrieve(query, 20, { mode = "dense" })) do dense_ids[i] = h.id end
  local f_ids, f_scores = rag.fuse({ dense_ids, (bm:search(query, 20)) })
  local fused = st:retrieve(query, 3)
  T.eq(#fused, 3)
  for i, h in ipairs(fused) do
    T.eq(h.id, f_ids[i], "hybrid id " .. i)
    T.eq(h.score, f_scores[i], "hybrid score " .. i)
  end
  T.raises(function() st:retrieve(query, 2, { mode = "sparse" }) end, 'mode must be "dense", "bm25" or "hybrid"')
  T.raises(function() st:retrieve(query, 0) end, "k must be a positive integer")
  T.raises(function() st:retrieve(nil) end, "query must be a string")
end)

T.test("a store saved without bm25 retrieves dense by default; a loaded encoder works too", function()
  local path = save(dir .. "/b.mfrag", { encoder = enc })
  local st = rag.open_store(path)
  T.eq(st.bm25, false)
  local a, b = st:retrieve("a dog", 4), st:retrieve("a dog", 4, { mode = "dense" })
  for i = 1, 4 do T.eq(a[i].id, b[i].id) end
end)

T.test("saving over a store replaces it; over anything else is refused", function()
  local path = dir .. "/a.mfrag"
  local few = { chunks[1], chunks[2] }
  local ix = rag.vector_index { dim = enc.dim, kind = "exact" }
  ix:add(nil, enc:encode(texts_of(few)))
  rag.save_store(path, { index = ix, chunks = few, encoder = TINY })
  T.eq(#rag.open_store(path).chunks, 2)
  T.eq(host.kind(path .. ".old-" .. host.getpid()), nil, "the old store is gone")
  assert(host.mkdir_p(dir .. "/precious"))
  write(dir .. "/precious/keep.txt", "mine")
  T.raises(function() save(dir .. "/precious") end, "exists and is not a RAG store")
  T.eq(T.read(dir .. "/precious/keep.txt"), "mine")
  T.eq(host.kind(dir .. "/precious/store.json"), nil)
end)

T.test("a save that fails part way leaves the old store and no temporary folder", function()
  local path = dir .. "/b.mfrag"
  local before = T.read(path .. "/chunks.jsonl")
  local ix = build_index()
  local failing = setmetatable({ ptr = ix.ptr, save = function() error("disk full") end }, getmetatable(ix))
  T.raises(function() rag.save_store(path, { index = failing, chunks = chunks, encoder = TINY }) end, "disk full")
  T.eq(T.read(path .. "/chunks.jsonl"), before)
  T.eq(host.kind(path .. ".tmp-" .. host.getpid()), nil)
  T.eq(#rag.open_store(path).chunks, 4)
end)

T.test("save_store checks the parts against each other", function()
  local path = dir .. "/bad.mfrag"
  T.raises(function() save(path, { chunks = { chunks[1] } }) end, "1 chunks but the index holds 4 vectors")
  T.raises(function() save(path, { index = build_index(5) }) end, "4 chunks but the index holds 5 vectors")
  local narrow = rag.vector_index { dim = 8, kind = "exact" }
  narrow:add(nil, { { 1, 0, 0, 0, 0, 0, 0, 0 }, { 0, 1, 0, 0, 0, 0, 0, 0 }, { 0, 0, 1, 0, 0, 0, 0, 0 },
    { 0, 0, 0, 1, 0, 0, 0, 0 } })
  T.raises(function() save(path, { index = narrow }) end, "the encoder gives vectors of dim 16 but the index holds dim 8")
  local shifted = rag.vector_index { dim = enc.dim, kind = "exact" }
  shifted:add({ 0, 1, 2, 3 }, enc:encode(texts_of(chunks)))
  T.raises(function() save(path, { index = shifted }) end, "ids must be the chunk numbers 1..n")
  T.raises(function() save(path, { chunks = { 1, 2, 3, 4 } }) end, "chunk 1 has no text")
  T.raises(function() save(path, { encoder = dir .. "/no-encoder" }) end, "no-encoder")
  T.raises(function() save(path, { index = {} }) end, "index must be an mf.rag.vector_index")
  T.eq(host.kind(path), nil, "nothing was written")
end)

-- A copy of store a.mfrag with `change` applied to its files; open_store's error.
local copies = 0
local function open_error(change)
  copies = copies + 1
  local path = string.format("%s/copy%d.mfrag", dir, copies)
  local src = save(dir .. "/good.mfrag")
  assert(host.mkdir_p(path))
  for _, name in ipairs({ "index.mfvi", "chunks.jsonl", "store.json" }) do
    write(path .. "/" .. name, T.read(src .. "/" .. name))
  end
  change(path)
  local ok, err = pcall(rag.open_store, path)
  T.eq(ok, false, "open_store should fail")
  T.truthy(tostring(err):find("rag store " .. path, 1, true), "the message names the store: " .. tostring(err))
  return tostring(err)
end

local function edit_manifest(path, key, value)
  local m = json.decode(T.read(path .. "/store.json"))
  m[key] = value
  write(path .. "/store.json", json.encode(m))
end

local function expect(err, text) T.truthy(err:find(text, 1, true), "expected '" .. text .. "' in: " .. err) end

T.test("open_store names every fault", function()
  T.raises(function() rag.open_store(dir .. "/absent.mfrag") end, "no store.json (not a RAG store)")
  expect(open_error(function(p) os.remove(p .. "/store.json") end), "no store.json")
  expect(open_error(function(p) write(p .. "/store.json", "{\"format\": ") end), "store.json: line 1")
  expect(open_error(function(p) edit_manifest(p, "format", "other") end), '"format" is not "moonforge-rag-store"')
  expect(open_error(function(p) edit_manifest(p, "version", 2) end), '"version" is not 1')
  expect(open_error(function(p) edit_manifest(p, "encoder", json.null) end), 'names no "encoder"')
  expect(open_error(function(p) edit_manifest(p, "encoder", dir .. "/gone") end),
    "the encoder folder '" .. dir .. "/gone' does not exist")
  expect(open_error(function(p) edit_manifest(p, "encoder", dir .. "/docs") end), "encoder: ")
  expect(open_error(function(p) edit_manifest(p, "count", 5) end), "store.json says 5 chunks, the index holds 4")
  expect(open_error(function(p) edit_manifest(p, "dim", 8) end), "store.json says dim 8")
  expect(open_error(function(p) edit_manifest(p, "metric", "dot") end), 'says metric "dot" but the index uses "cosine"')
  expect(open_error(function(p) edit_manifest(p, "bm25", "yes") end), '"bm25" is missing or of the wrong type')
  expect(open_error(function(p)
    local narrow = rag.vector_index { dim = 8, kind = "exact" }
    for _ = 1, 4 do narrow:add(nil, { 1, 2, 3, 4, 5, 6, 7, 8 }) end
    narrow:save(p .. "/index.mfvi")
    edit_manifest(p, "dim", 8)
  end), "gives vectors of dim 16 but the index holds dim 8")
  expect(open_error(function(p)
    local text = T.read(p .. "/index.mfvi")
    write(p .. "/index.mfvi", text:sub(1, #text - 10))
  end), "index.mfvi")
  expect(open_error(function(p) os.remove(p .. "/chunks.jsonl") end), "cannot read chunks.jsonl")
  expect(open_error(function(p) write(p .. "/chunks.jsonl", T.read(p .. "/chunks.jsonl"):gsub("\n[^\n]*\n$", "\n")) end),
    "the index holds 4 vectors, chunks.jsonl 3 rows")
  expect(open_error(function(p) write(p .. "/chunks.jsonl", T.read(p .. "/chunks.jsonl"):gsub('"id":2', '"id":7')) end),
    'chunks.jsonl: line 2: "id" must be 2')
  expect(open_error(function(p) write(p .. "/chunks.jsonl", T.read(p .. "/chunks.jsonl"):gsub('"text":', '"body":', 1)) end),
    'chunks.jsonl: line 1: "text" must be a string')
  expect(open_error(function(p) write(p .. "/chunks.jsonl", "not json\n") end), "chunks.jsonl: line 1: ")
end)

return T.done()
