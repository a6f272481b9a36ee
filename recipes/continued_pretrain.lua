-- Continued pretraining: teach SmolLM2-135M-Instruct the language of Debian
-- package descriptions, and measure its perplexity on held-out descriptions
-- before and after.
--
-- The text is the descriptions of datasets/debian_sections (raw/train.jsonl
-- to train, raw/test.jsonl held out); the model, SmolLM2-135M-Instruct
-- (`bash datasets/smollm2/fetch.sh`). mf.finetune runs with task_type
-- CONTINUED_PRETRAIN: every token is trained, long texts are cut into
-- pieces of context_length tokens. LoRA on every linear layer by default;
-- --set full=true trains every weight instead.
--
--   moonforge run recipes/continued_pretrain.lua [--set train_docs=960 ...]
local mf = require "moonforge"

local root = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."

local r = mf.recipe{
  name = "continued_pretrain",
  seed = 5,
  params = {
    model = root .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    data = root .. "/datasets/debian_sections/raw",
    train_docs = 200, eval_docs = 40,
    epochs = 1, lr = 1e-3, lora_r = 16, full = false, batch_size = 8, context_length = 128,
  },
}

-- The first n descriptions of a split as CONTINUED_PRETRAIN rows {text =}.
local function texts(path, n)
  local rows = {}
  for i, row in ipairs(mf.data.read_jsonl(path)) do
    if i > n then break end
    rows[i] = { text = row.description }
  end
  return rows
end

-- Mean loss and perplexity of a model over the held-out text, in pieces of
-- context_length tokens.
local function perplexity(ctx, model, tok, rows)
  local examples = mf.data.tokenize(rows, tok, { task_type = "CONTINUED_PRETRAIN",
    context_length = ctx.params.context_length })
  local tokens, targets = mf.data.pack(examples, { length = ctx.params.context_length })
  return mf.eval.perplexity(model, tokens, targets, { batch_size = ctx.params.batch_size, ctx = ctx })
end

r:cell("corpus", function(ctx)
  local p = ctx.params
  local corpus = { train = texts(p.data .. "/train.jsonl", p.train_docs), eval = texts(p.data .. "/test.jsonl", p.eval_docs) }
  local shown = {}
  for _, split in ipairs({ "train", "eval" }) do
    local bytes = 0
    for _, row in ipairs(corpus[split]) do bytes = bytes + #row.text end
    shown[#shown + 1] = { split, #corpus[split], bytes }
  end
  ctx:table{ title = "descriptions", columns = { "split", "texts", "bytes" }, rows = shown }
  return corpus
end)

r:cell("perplexity before", { uses = { "corpus" } }, function(ctx, corpus)
  local p = ctx.params
  local model = mf.model.load(p.model, { keep_quantized = false })
  local result = perplexity(ctx, model, mf.tokenizer.load(p.model), corpus.eval)
  ctx:metric("base/loss", result.loss)
  ctx:metric("base/perplexity", result.perplexity)
  print(string.format("held-out perplexity %.3f over %d tokens", result.perplexity, result.tokens))
  return result
end)

r:cell("continued pretraining", { uses = { "corpus" } }, function(ctx, corpus)
  local p = ctx.params
  return mf.finetune{
    model = p.model, train_data = corpus.train, eval_data = corpus.eval, task_type = "CONTINUED_PRETRAIN",
    training_duration = p.epochs .. "ep", learning_rate = p.lr, context_length = p.context_length,
    lora = not p.full and { r = p.lora_r, alpha = 2 * p.lora_r, dropout = 0, targets = "all-linear" },
    batch_size = p.batch_size, eval_every = 10, checkpoint_every = 10, ctx = ctx,
  }
end)

r:cell("perplexity after", { uses = { "corpus", "perplexity before", "continued pretraining" } },
  function(ctx, corpus, before, run)
    local after = perplexity(ctx, run.model, run.tokenizer, corpus.eval)
    ctx:metric("tuned/loss", after.loss)
    ctx:metric("tuned/perplexity", after.perplexity)
    ctx:table{ title = "held-out perplexity", columns = { "model", "loss (nats/token)", "perplexity" },
      rows = { { "base", before.loss, before.perplexity }, { "after continued pretraining", after.loss, after.perplexity } } }
    ctx:plot{ kind = "bar", title = "held-out perplexity", labels = { "perplexity" },
      series = { { name = "base", values = { before.perplexity } }, { name = "tuned", values = { after.perplexity } } } }
    print(string.format("held-out perplexity %.3f -> %.3f", before.perplexity, after.perplexity))
  end)

return r
