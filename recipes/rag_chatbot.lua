-- A retrieval-augmented chatbot for the Debian FAQ and moonforge's own
-- documentation, measured before and after fine-tuning.
--
-- The documents are the chapters of the Debian FAQ (the `debian-faq`
-- package, turned into markdown by `moonforge exec
-- datasets/debian_faq/extract.lua`) and this repository's README and dataset
-- cards, cut into chunks of at most chunk_tokens tokens along their
-- headings. Chunks are embedded with all-MiniLM-L6-v2 (`bash
-- datasets/minilm/fetch.sh`) into an HNSW index and ranked by BM25 too; the
-- FAQ's own questions, whose answers are the FAQ's text, measure retrieval
-- (recall@k, MRR) for BM25, dense and hybrid (reciprocal-rank fusion)
-- search. SmolLM2-135M-Instruct (`bash datasets/smollm2/fetch.sh`) then
-- answers the test questions with no retrieval and with the top k chunks of
-- each method in the prompt, numbered [1]..[k] with their sources, and is
-- asked to cite them; answers are scored by ROUGE-L against the start of
-- the FAQ's answer, by how often they cite a given source, and by an LLM
-- judge when one is configured. As in the public RAG fine-tuning demos, the
-- model is then LoRA-fine-tuned on (retrieved context, question, answer)
-- triples of the train questions and measured again. The last cell saves
-- the chunks and index as a RAG store that `moonforge serve --index` uses.
--
--   moonforge run recipes/rag_chatbot.lua [--set test_questions=0 --set duration=2ep ...]
--
-- Each chunk's text leaves out the heading it falls under: the FAQ's
-- headings are its questions, and a chunk holding its question word for
-- word would make retrieval by the question trivial. The heading travels
-- as the chunk's title, shown with its source in the prompt.
--
-- The defaults finish in about ten minutes on two cores: three chunks of
-- at most 96 tokens per prompt, answers of at most 64 tokens, 16 test
-- questions, one epoch of LoRA over 40 train questions.
local mf = require "moonforge"
local host = require "moonforge.host"

local root = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."

local r = mf.recipe{
  name = "rag_chatbot",
  seed = 13,
  params = {
    model = root .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    encoder = root .. "/datasets/cache/minilm/all-MiniLM-L6-v2",
    faq = root .. "/datasets/cache/debian_faq",
    -- index this repository's README and dataset cards beside the FAQ
    repo_docs = true,
    -- chunks: tokens of the generator's tokenizer, neighbours sharing `overlap`
    chunk_tokens = 96, overlap = 16,
    -- retrieval: chunks in a prompt, and how deep each list goes before fusion
    k = 3, depth = 20,
    -- questions: the test share of the seeded split; how many of each part are used (0: all)
    test_share = 0.3, train_questions = 0, test_questions = 16,
    -- answers: new tokens, and the words of the FAQ answer they are scored against
    max_tokens = 64, answer_words = 60,
    -- fine-tuning
    duration = "1ep", lr = 1e-3, lora_r = 8, lora_alpha = 16, batch_size = 4, context_length = 768,
    -- LLM-as-judge: an OpenAI-compatible endpoint and model ("": none)
    judge_url = os.getenv("MOONFORGE_JUDGE_URL") or "",
    judge_model = os.getenv("MOONFORGE_JUDGE_MODEL") or "",
    store = "debian_faq",
  },
}

local SYSTEM = "You answer questions about Debian and moonforge. Answer in at most three sentences."
local SYSTEM_RAG = SYSTEM .. " Use the numbered sources below and cite each one you use by its number, like [1]."

local function need(path, how)
  if not host.kind(path) then error(path .. " is missing: " .. how, 0) end
end

local function relative(path)
  return path:sub(1, #root + 1) == root .. "/" and path:sub(#root + 2) or path
end

local function append(list, more)
  for _, x in ipairs(more) do list[#list + 1] = x end
end

-- The first n items of a list (all of it when n is 0).
local function first(list, n)
  return (n > 0 and n < #list) and { unpack(list, 1, n) } or list
end

local function first_words(text, n)
  local words = {}
  for w in text:gmatch("%S+") do
    if #words == n then break end
    words[#words + 1] = w
  end
  return table.concat(words, " ")
end

-- A chunk as the store keeps it. The heading line a section's first chunk
-- starts with goes (see the top of the file); the heading path becomes the
-- title, and the number of the innermost FAQ heading ("3.1.2") the section
-- the chunk answers.
local function stored_chunk(c, faq_docs)
  local text = c.text:gsub("^#+ [^\n]*\n*", "")
  local innermost = c.headings[#c.headings]
  local from_faq = c.source:sub(1, #faq_docs) == faq_docs
  return { text = text, source = relative(c.source), line_start = c.line_start, line_end = c.line_end,
    title = #c.headings > 0 and table.concat(c.headings, " > ") or nil, heading = innermost,
    section = from_faq and innermost and innermost:match("^(%d+%.%d+[%.%d]*)%.") or nil }
end

r:cell("chunks", function(ctx)
  local p = ctx.params
  need(p.faq .. "/qa.jsonl", "run `moonforge exec datasets/debian_faq/extract.lua` (needs apt-get install debian-faq)")
  need(p.model, "run `bash datasets/smollm2/fetch.sh`")
  local docs = mf.rag.load_documents(p.faq .. "/docs", { glob = "*.md" })
  if p.repo_docs then
    append(docs, mf.rag.load_documents(root .. "/README.md"))
    append(docs, mf.rag.load_documents(root .. "/datasets", { glob = "*/CARD.md" }))
  end
  local raw = mf.rag.chunk(docs, { by = "headings", tokenizer = mf.tokenizer.load(p.model), size = p.chunk_tokens,
    overlap = p.overlap })
  local chunks, per_source = {}, {}
  for _, c in ipairs(raw) do
    local chunk = stored_chunk(c, p.faq .. "/docs/")
    if chunk.text:find("%S") then
      chunks[#chunks + 1] = chunk
      chunk.id = #chunks
      per_source[chunk.source] = (per_source[chunk.source] or 0) + 1
    end
  end
  local rows = {}
  for _, doc in ipairs(docs) do rows[#rows + 1] = { relative(doc.path), per_source[relative(doc.path)] or 0 } end
  ctx:table({ title = "chunks per document", columns = { "document", "chunks" }, rows = rows })
  print(string.format("%d documents, %d chunks of at most %d tokens", #docs, #chunks, p.chunk_tokens))
  ctx:metric("chunks", #chunks)
  return chunks
end)

-- Each FAQ question with the chunks of its own section (its relevant
-- chunks) and its reference answer, split into train and test.
r:cell("questions", { uses = { "chunks" } }, function(ctx, chunks)
  local p = ctx.params
  local by_section = {}
  for _, c in ipairs(chunks) do
    if c.section then
      by_section[c.section] = by_section[c.section] or {}
      table.insert(by_section[c.section], c.id)
    end
  end
  local questions = {}
  for _, row in ipairs(mf.data.read_jsonl(p.faq .. "/qa.jsonl")) do
    local relevant = by_section[row.section]
    if not relevant then error("qa.jsonl: section " .. row.section .. " has no chunk", 0) end
    questions[#questions + 1] = { id = row.id, section = row.section, question = row.question, relevant = relevant,
      reference = first_words(row.answer, p.answer_words) }
  end
  local parts = mf.data.split(questions, { train = 1 - p.test_share, test = p.test_share, seed = ctx.seed })
  local train, test = first(parts.train, p.train_questions), first(parts.test, p.test_questions)
  ctx:table({ title = "questions", columns = { "part", "questions", "of" }, rows = {
    { "all (retrieval)", #questions, #questions }, { "train (fine-tuning)", #train, #parts.train },
    { "test (answers)", #test, #parts.test } } })
  return { all = questions, train = train, test = test }
end)

local function encoder(path)
  need(path, "run `bash datasets/minilm/fetch.sh`")
  return mf.embed.load(path)
end

r:cell("index", { uses = { "chunks" } }, function(ctx, chunks)
  local enc = encoder(ctx.params.encoder)
  local ix = mf.rag.vector_index{ dim = enc.dim, metric = "cosine", kind = "hnsw", seed = ctx.seed }
  -- 64 chunks at a time, so that progress shows; ids are chunk positions.
  local bar = ctx:progress(#chunks, "embed chunks")
  for first = 1, #chunks, 64 do
    local texts = {}
    for i = first, math.min(first + 63, #chunks) do texts[#texts + 1] = chunks[i].text end
    ix:add(nil, enc:encode(texts))
    bar:advance(#texts)
  end
  bar:finish()
  print(tostring(ix))
  return ix
end)

-- Ranked chunk ids per question for each method, `depth` deep.
r:cell("retrieval", { uses = { "chunks", "questions", "index" } }, function(ctx, chunks, questions, ix)
  local p = ctx.params
  local texts, relevant = {}, {}
  for i, q in ipairs(questions.all) do texts[i], relevant[i] = q.question, q.relevant end
  local dense = ix:search(encoder(p.encoder):encode(texts), p.depth)
  local bm25 = mf.rag.bm25(chunks, { stopwords = true })
  local ranked = { bm25 = {}, dense = dense, hybrid = {} }
  for i, text in ipairs(texts) do
    ranked.bm25[i] = bm25:search(text, p.depth)
    local fused = mf.rag.fuse({ dense[i], ranked.bm25[i] })
    ranked.hybrid[i] = { unpack(fused, 1, p.depth) }
  end
  local results = {}
  for _, method in ipairs({ "bm25", "dense", "hybrid" }) do
    local metrics = { mrr = mf.rag.mrr(ranked[method], relevant, 10) }
    for _, k in ipairs({ 1, 3, 5 }) do metrics["recall@" .. k] = mf.rag.recall_at_k(ranked[method], relevant, k) end
    results[#results + 1] = { name = method, metrics = metrics }
  end
  mf.eval.compare(results, { ctx = ctx, metrics = { "recall@1", "recall@3", "recall@5", "mrr" },
    title = string.format("retrieval of the %d FAQ questions' own sections", #texts) })
  local by_id = {}
  for i, q in ipairs(questions.all) do
    by_id[q.id] = { bm25 = ranked.bm25[i], dense = ranked.dense[i], hybrid = ranked.hybrid[i] }
  end
  return by_id
end)

------------------------------------------------------------------------
-- Answers
------------------------------------------------------------------------

-- The chat for a question: with no ids, the question alone; else the
-- chunks, numbered, each under its source and heading.
local function conversation(chunks, q, ids)
  if not ids then return { { role = "system", content = SYSTEM }, { role = "user", content = q.question } } end
  local parts = {}
  for n, id in ipairs(ids) do
    local c = chunks[id]
    parts[n] = string.format("[%d] %s:%d-%d%s\n%s", n, c.source:match("[^/]*$"), c.line_start, c.line_end,
      c.heading and (" (" .. c.heading .. ")") or "", c.text)
  end
  return { { role = "system", content = SYSTEM_RAG },
    { role = "user", content = "Sources:\n" .. table.concat(parts, "\n\n") .. "\n\nQuestion: " .. q.question } }
end

-- Greedy replies to questions, each with the top k chunks of `method` from
-- ranked (no retrieval when method is "none").
local function answer(ctx, model, tok, chunks, questions, ranked, method)
  local chats = {}
  for i, q in ipairs(questions) do
    chats[i] = conversation(chunks, q, method ~= "none" and first(ranked[q.id][method], ctx.params.k) or nil)
  end
  return (model:chat_batch(tok, chats, { max_tokens = ctx.params.max_tokens,
    progress = ctx:progress(#chats, method .. " answers") }))
end

local METHODS = { "none", "bm25", "dense", "hybrid" }

r:cell("base model answers", { uses = { "chunks", "questions", "retrieval" } },
  function(ctx, chunks, questions, ranked)
    local p = ctx.params
    local model = mf.model.load(p.model, { keep_quantized = false })
    local tok = mf.tokenizer.load(p.model)
    local replies = {}
    for _, method in ipairs(METHODS) do
      replies[method] = answer(ctx, model, tok, chunks, questions.test, ranked, method)
    end
    return replies
  end)

-- Train chats: the hybrid context of each train question and the start of
-- the FAQ's answer, citing the first chunk of the question's own section
-- in the context. When retrieval missed that section, its first chunk
-- takes the place of one retrieved chunk (a different place each time), so
-- every chat teaches the model to answer from, and cite, what it was given.
r:cell("fine-tune", { uses = { "chunks", "questions", "retrieval" } }, function(ctx, chunks, questions, ranked)
  local p = ctx.params
  local rows, retrieved = {}, 0
  for i, q in ipairs(questions.train) do
    local ids = { unpack(first(ranked[q.id].hybrid, p.k)) }
    local own, at = {}, nil
    for _, id in ipairs(q.relevant) do own[id] = true end
    for n, id in ipairs(ids) do
      if own[id] then
        at = n
        break
      end
    end
    if at then
      retrieved = retrieved + 1
    else
      at = (i - 1) % #ids + 1
      ids[at] = q.relevant[1]
    end
    local reply = q.reference .. " [" .. at .. "]"
    local chat = conversation(chunks, q, ids)
    chat[3] = { role = "assistant", content = reply }
    rows[i] = { messages = chat }
  end
  print(string.format("%d train chats; retrieval found the question's own section for %d, the others were given it",
    #rows, retrieved))
  return mf.finetune{
    model = p.model, train_data = rows, task_type = "CHAT_COMPLETION", training_duration = p.duration,
    learning_rate = p.lr, context_length = p.context_length,
    lora = { r = p.lora_r, alpha = p.lora_alpha, dropout = 0.05, targets = "all-linear" },
    batch_size = p.batch_size, checkpoint_every = 10, ctx = ctx,
  }
end)

r:cell("tuned model answers", { uses = { "chunks", "questions", "retrieval", "fine-tune" } },
  function(ctx, chunks, questions, ranked, run)
    return answer(ctx, run.model, run.tokenizer, chunks, questions.test, ranked, "hybrid")
  end)

------------------------------------------------------------------------
-- Scores
------------------------------------------------------------------------

-- The share of replies that cite at least one source they were given.
local function citation_rate(replies, k)
  local citing = 0
  for _, reply in ipairs(replies) do
    for n in reply:gmatch("%[(%d+)%]") do
      if tonumber(n) >= 1 and tonumber(n) <= k then
        citing = citing + 1
        break
      end
    end
  end
  return citing / #replies
end

local function conditions(base, tuned)
  local out = {}
  for _, method in ipairs(METHODS) do out[#out + 1] = { name = method, replies = base[method] } end
  out[#out + 1] = { name = "tuned_hybrid", replies = tuned }
  return out
end

r:cell("compare", { uses = { "questions", "base model answers", "tuned model answers" } },
  function(ctx, questions, base, tuned)
    local refs = {}
    for i, q in ipairs(questions.test) do refs[i] = q.reference end
    local results = {}
    for i, c in ipairs(conditions(base, tuned)) do
      results[i] = { name = c.name, metrics = { rouge_l = mf.eval.rouge_l(c.replies, refs).fmeasure,
        citation_rate = c.name == "none" and 0 or citation_rate(c.replies, ctx.params.k) } }
    end
    mf.eval.compare(results, { ctx = ctx, metrics = { "rouge_l", "citation_rate" },
      title = string.format("answers to %d test questions", #refs) })
    print(string.format("ROUGE-L: no retrieval %.3f, hybrid %.3f, hybrid after LoRA %.3f", results[1].metrics.rouge_l,
      results[4].metrics.rouge_l, results[5].metrics.rouge_l))
  end)

r:cell("judge", { uses = { "questions", "base model answers", "tuned model answers" } },
  function(ctx, questions, base, tuned)
    local p = ctx.params
    if p.judge_url == "" then
      print("LLM-as-judge skipped: no endpoint (set judge_url and judge_model, or MOONFORGE_JUDGE_URL and "
        .. "MOONFORGE_JUDGE_MODEL)")
      return
    end
    local texts, refs = {}, {}
    for i, q in ipairs(questions.test) do texts[i], refs[i] = q.question, q.reference end
    local rows = {}
    for _, c in ipairs(conditions(base, tuned)) do
      local result = mf.eval.judge{ url = p.judge_url, model = p.judge_model ~= "" and p.judge_model or nil,
        questions = texts, answers = c.replies, references = refs, ctx = ctx, prefix = c.name }
      rows[#rows + 1] = { c.name, result.mean, result.invalid }
    end
    ctx:table({ title = "judge: mean score (1-5)", columns = { "answers", "mean", "invalid" }, rows = rows })
  end)

r:cell("examples", { uses = { "chunks", "questions", "retrieval", "base model answers", "tuned model answers" } },
  function(ctx, chunks, questions, ranked, base, tuned)
    for i = 1, math.min(3, #questions.test) do
      local q = questions.test[i]
      print("Q: " .. q.question)
      for n, id in ipairs(first(ranked[q.id].hybrid, ctx.params.k)) do
        local c = chunks[id]
        print(string.format("  [%d] %s:%d-%d  %s", n, c.source, c.line_start, c.line_end, c.title or ""))
      end
      print("base:  " .. base.hybrid[i])
      print("tuned: " .. tuned[i])
      print(string.format("FAQ %s: %s ...\n", q.section, first_words(q.reference, 25)))
    end
  end)

-- The chunks and their index as a RAG store, and the tuned adapter, among
-- the run's artifacts.
r:cell("save store", { uses = { "chunks", "index", "fine-tune" } }, function(ctx, chunks, ix, run)
  local p = ctx.params
  local dir = ctx.run_dir .. "/artifacts/" .. p.store .. ".mfrag"
  local stored = {}
  for i, c in ipairs(chunks) do
    stored[i] = { id = c.id, text = c.text, source = c.source, title = c.title, line_start = c.line_start,
      line_end = c.line_end }
  end
  mf.rag.save_store(dir, { index = ix, chunks = stored, encoder = host.realpath(p.encoder), bm25 = true })
  run.model:save_adapter(ctx.run_dir .. "/artifacts/adapter")
  -- Paths as given work from the directory the recipe was run from.
  local function shown(path) return (path:gsub("^%./", "")) end
  print(string.format("RAG store %s: %d chunks", shown(dir), #stored))
  print("serve the base model with it:\n  moonforge serve " .. shown(p.model) .. " --index " .. shown(dir))
  print("or the tuned one:\n  moonforge pack " .. shown(ctx.run_dir) .. " --base " .. shown(p.model)
    .. " -o rag_chatbot.mfb\n  moonforge serve rag_chatbot.mfb --index " .. shown(dir))
end)

return r
