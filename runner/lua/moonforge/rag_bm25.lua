-- moonforge.rag_bm25: Okapi BM25 over chunks, behind mf.rag.bm25.
--
-- Scores follow rank-bm25's BM25Okapi (k1 = 1.5, b = 0.75, epsilon = 0.25):
--   idf(t) = ln((N - n(t) + 0.5) / (n(t) + 0.5)), and a negative idf is
--   replaced by epsilon times the mean idf over the vocabulary;
--   score(d, q) = sum over the query's terms, repeats included, of
--   idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl)).
-- tests/reference/make_rag_golden.py checks this against rank-bm25.
--
-- The analyzer lowercases ASCII letters and splits on every byte that is not
-- an ASCII letter or digit (bytes of UTF-8 characters stay in their words);
-- with {stopwords = true} it drops Lucene's English stop words.
local M = {}

local STOPWORDS = {}
for w in ("a an and are as at be but by for if in into is it no not of on or such that the their then there " ..
  "these they this to was will with"):gmatch("%S+") do STOPWORDS[w] = true end

function M.analyze(text, stopwords)
  local terms = {}
  for term in text:lower():gmatch("[%w\128-\255]+") do
    if not (stopwords and STOPWORDS[term]) then terms[#terms + 1] = term end
  end
  return terms
end

local Index = {}
Index.__index = Index

function M.new(chunks, opts)
  opts = opts or {}
  local self = setmetatable({ k1 = opts.k1 or 1.5, b = opts.b or 0.75, stopwords = opts.stopwords,
    postings = {}, lengths = {}, idf = {}, n = #chunks }, Index)
  local order, total = {}, 0 -- terms in order of first appearance, as the mean idf sums them
  for d, chunk in ipairs(chunks) do
    local text = type(chunk) == "table" and chunk.text or chunk
    if type(text) ~= "string" then error("bm25: chunk " .. d .. " has no text", 3) end
    local terms = M.analyze(text, self.stopwords)
    self.lengths[d], total = #terms, total + #terms
    local tf, seen = {}, {}
    for _, t in ipairs(terms) do
      if not tf[t] then seen[#seen + 1] = t end
      tf[t] = (tf[t] or 0) + 1
    end
    for _, t in ipairs(seen) do
      local p = self.postings[t]
      if not p then
        p = { docs = {}, tfs = {} }
        self.postings[t], order[#order + 1] = p, t
      end
      p.docs[#p.docs + 1], p.tfs[#p.tfs + 1] = d, tf[t]
    end
  end
  self.avgdl = self.n > 0 and total / self.n or 0
  local sum, negative = 0, {}
  for _, t in ipairs(order) do
    local df = #self.postings[t].docs
    local idf = math.log(self.n - df + 0.5) - math.log(df + 0.5)
    self.idf[t], sum = idf, sum + idf
    if idf < 0 then negative[#negative + 1] = t end
  end
  local floor = (opts.epsilon or 0.25) * (#order > 0 and sum / #order or 0)
  for _, t in ipairs(negative) do self.idf[t] = floor end
  return self
end

-- Scores of the chunks that share a term with the query: {[chunk] = score}.
function Index:score_map(query)
  local scores, k1, b = {}, self.k1, self.b
  for _, t in ipairs(M.analyze(query, self.stopwords)) do
    local p = self.postings[t]
    if p then
      local idf = self.idf[t]
      for i, d in ipairs(p.docs) do
        local tf = p.tfs[i]
        scores[d] = (scores[d] or 0) + idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * self.lengths[d] / self.avgdl)))
      end
    end
  end
  return scores
end

-- Every chunk's score, 0 where no term matches (as rank-bm25's get_scores).
function Index:scores(query)
  local map, all = self:score_map(query), {}
  for d = 1, self.n do all[d] = map[d] or 0 end
  return all
end

-- The k best chunks (1-based positions) sharing a term with the query, best
-- first, ties by position; and their scores.
function Index:search(query, k)
  local hits = {}
  for d, s in pairs(self:score_map(query)) do hits[#hits + 1] = { d, s } end
  table.sort(hits, function(x, y) return x[2] > y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  local ids, scores = {}, {}
  for i = 1, math.min(k or 10, #hits) do ids[i], scores[i] = hits[i][1], hits[i][2] end
  return ids, scores
end

return M
