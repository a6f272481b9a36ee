-- Pretrain a small Llama from scratch on bytes.
--
-- The text is the pretraining corpus (datasets/pretrain_corpus: the King
-- James Bible, the Jargon File and WordNet glosses); each byte is a token
-- (vocabulary 256, newline ends a paragraph). The defaults learn visibly in
-- a few minutes on two cores: the eval loss falls far below the unigram
-- entropy of the eval bytes, the loss of a model that knows only how often
-- each byte occurs.
--
--   bash datasets/pretrain_corpus/build.sh      (once; else the shipped sample is used)
--   moonforge run recipes/pretrain_tiny.lua [--set steps=1000 ...]
--
-- `data` is a folder holding train.txt and eval.txt, or one text file that
-- is split here by the corpus's own rule (every 20th line to eval).
local mf = require "moonforge"
local host = require "moonforge.host"

-- The repository root, from this file's own path, so the default data is
-- found whatever the working directory.
local root = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."

local function default_data()
  local built = root .. "/datasets/cache/pretrain_corpus"
  if host.kind(built .. "/train.txt") == "file" then return built end
  return root .. "/datasets/pretrain_corpus/sample.txt"
end

local r = mf.recipe{
  name = "pretrain_tiny",
  seed = 1234,
  params = {
    data = default_data(),
    -- model
    dim = 192, layers = 4, heads = 4, kv_heads = 2, ffn = 512,
    -- training
    steps = 400, batch = 8, seq = 128,
    lr = 3e-3, min_lr = 3e-4, warmup = 40, weight_decay = 0.1, grad_clip = 1.0,
    -- evaluation and samples
    eval_every = 50, eval_batches = 8,
    sample_every = 100, sample_tokens = 100,
  },
}

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = assert(f:read("*a"), path .. ": not a readable file")
  f:close()
  return text
end

-- Paragraph n (from 1) of a single file goes to eval when n is a multiple
-- of 20: the rule the corpus builder uses.
local function split_lines(text)
  local train, eval, n = {}, {}, 0
  for line in text:gmatch("[^\n]*\n?") do
    if line ~= "" then
      n = n + 1
      local split = n % 20 == 0 and eval or train
      split[#split + 1] = line
    end
  end
  return table.concat(train), table.concat(eval)
end

-- Entropy of the byte frequencies of text, in nats per byte.
local function unigram_entropy(text)
  local counts = {}
  for i = 0, 255 do counts[i] = 0 end
  for i = 1, #text do
    local b = text:byte(i)
    counts[b] = counts[b] + 1
  end
  local h = 0
  for i = 0, 255 do
    if counts[i] > 0 then
      local p = counts[i] / #text
      h = h - p * math.log(p)
    end
  end
  return h
end

-- Inputs and next-byte targets of windows of `seq` bytes at 0-based offsets.
local function windows(text, offsets, seq)
  local tokens, targets = {}, {}
  for i, off in ipairs(offsets) do
    local bytes = { text:byte(off + 1, off + seq + 1) }
    targets[i] = { unpack(bytes, 2, seq + 1) }
    bytes[seq + 1] = nil
    tokens[i] = bytes
  end
  return tokens, targets
end

-- Evenly spaced windows over the whole eval text: the same for every run.
local function eval_batches(text, p)
  local n = p.eval_batches * p.batch
  local span = #text - p.seq - 1
  assert(span >= 0, "eval text shorter than one window of seq+1 bytes")
  local batches = {}
  for b = 1, p.eval_batches do
    local offsets = {}
    for i = 1, p.batch do
      offsets[i] = math.floor(((b - 1) * p.batch + i - 1) * span / math.max(1, n - 1))
    end
    batches[b] = offsets
  end
  return batches
end

local function eval_loss(model, text, p)
  local sum = 0
  local batches = eval_batches(text, p)
  for _, offsets in ipairs(batches) do
    sum = sum + model:loss(windows(text, offsets, p.seq))
  end
  return sum / #batches
end

-- Linear warmup to lr, then cosine decay to min_lr at the last step.
local function lr_at(p, step)
  if step <= p.warmup then return p.lr * step / p.warmup end
  local progress = (step - p.warmup) / math.max(1, p.steps - p.warmup)
  return p.min_lr + 0.5 * (p.lr - p.min_lr) * (1 + math.cos(math.pi * progress))
end

local PROMPTS = { "And God said", "hacker: ", "tree: " }

local function print_samples(model, p, step)
  for k, prompt in ipairs(PROMPTS) do
    local ids = { prompt:byte(1, -1) }
    local new = model:generate(ids, {
      max_tokens = math.min(p.sample_tokens, p.seq - #ids),
      temperature = 0.8, top_k = 40, seed = step * 16 + k,
    })
    local text = string.char(unpack(new)):gsub("\n", " / ")
    print(string.format("  [step %d] %s%s", step, prompt, text))
  end
end

r:cell("load data", function(ctx)
  local p = ctx.params
  local train, eval
  if host.kind(p.data) == "directory" then
    train, eval = read_file(p.data .. "/train.txt"), read_file(p.data .. "/eval.txt")
  else
    train, eval = split_lines(read_file(p.data))
  end
  local function row(split, text)
    local h = unigram_entropy(text)
    return { split, #text, string.format("%.4f", h), string.format("%.4f", h / math.log(2)) }, h
  end
  local train_row = row("train", train)
  local eval_row, h = row("eval", eval)
  ctx:table{
    title = "data",
    columns = { "split", "bytes", "unigram entropy (nats/byte)", "(bits/byte)" },
    rows = { train_row, eval_row },
  }
  ctx:metric("data/train_bytes", #train)
  ctx:metric("data/eval_bytes", #eval)
  ctx:metric("data/eval_unigram_nats", h)
  return { train = train, eval = eval, unigram = h }
end)

-- One window offset per sequence of every step, drawn from the cell's
-- seeded generator: the data order is part of the run's identity.
r:cell("batches", { uses = { "load data" } }, function(ctx, data)
  local p = ctx.params
  local last = #data.train - p.seq - 1
  assert(last >= 0, "train text shorter than one window of seq+1 bytes")
  local steps = {}
  for s = 1, p.steps do
    local offsets = {}
    for i = 1, p.batch do offsets[i] = ctx.rng:int(0, last) end
    steps[s] = offsets
  end
  print(string.format("%d steps x %d windows of %d bytes = %d training tokens",
    p.steps, p.batch, p.seq, p.steps * p.batch * p.seq))
  return steps
end)

r:cell("train", { uses = { "load data", "batches" } }, function(ctx, data, steps)
  local p = ctx.params
  local model = mf.model.new{
    model_type = "llama", vocab_size = 256,
    hidden_size = p.dim, intermediate_size = p.ffn, num_hidden_layers = p.layers,
    num_attention_heads = p.heads, num_key_value_heads = p.kv_heads,
    max_position_embeddings = p.seq, rope_theta = 10000, rms_norm_eps = 1e-5,
    tie_word_embeddings = false, seed = ctx.seed,
  }
  local opt = mf.optim.adamw(model, { lr = p.lr, weight_decay = p.weight_decay })
  local history = { train = { x = {}, y = {} }, eval = { x = {}, y = {} } }
  local function record_eval(step)
    local loss = eval_loss(model, data.eval, p)
    ctx:metric("eval/loss", loss, step)
    table.insert(history.eval.x, step)
    table.insert(history.eval.y, loss)
    return loss
  end

  record_eval(0)
  local bar = ctx:progress(p.steps, "train")
  local started = host.clock()
  for step = 1, p.steps do
    opt:set_lr(lr_at(p, step))
    opt:zero_grad()
    local loss = model:loss(windows(data.train, steps[step], p.seq))
    model:backward()
    opt:clip_grad_norm(p.grad_clip)
    opt:step()
    ctx:metric("train/loss", loss, step)
    table.insert(history.train.x, step)
    table.insert(history.train.y, loss)
    local rate = step * p.batch * p.seq / (host.clock() - started)
    bar:update(step, string.format("loss %.3f  %.0f tok/s", loss, rate))
    if step % p.eval_every == 0 or step == p.steps then record_eval(step) end
    if step % p.sample_every == 0 or step == p.steps then print_samples(model, p, step) end
  end
  bar:finish()
  local seconds = host.clock() - started
  print(string.format("%d steps in %.1f s: %.0f tokens/s", p.steps, seconds,
    p.steps * p.batch * p.seq / seconds))
  return { model = model, history = history }
end)

r:cell("loss curves", { uses = { "train" } }, function(ctx, trained)
  local h = trained.history
  ctx:plot{
    kind = "line", title = "loss", xlabel = "step", ylabel = "cross-entropy (nats/byte)",
    series = {
      { name = "train", x = h.train.x, y = h.train.y },
      { name = "eval", x = h.eval.x, y = h.eval.y },
    },
  }
end)

r:cell("final eval", { uses = { "load data", "train" } }, function(ctx, data, trained)
  local evals = trained.history.eval.y
  local loss, baseline = evals[#evals], data.unigram
  local function row(what, nats)
    return { what, string.format("%.4f", nats), string.format("%.4f", nats / math.log(2)),
      string.format("%.2f", math.exp(nats)) }
  end
  ctx:table{
    title = "eval loss against the unigram baseline",
    columns = { "", "nats/byte", "bits/byte", "perplexity" },
    rows = {
      row("unigram entropy of eval bytes", baseline),
      row("model at step 0", evals[1]),
      row("model at the end", loss),
    },
  }
  ctx:metric("eval/final_loss", loss)
  ctx:metric("eval/gain_over_unigram_nats", baseline - loss)
  print(string.format("eval loss %.4f nats/byte is %.1f%% of the unigram entropy %.4f",
    loss, 100 * loss / baseline, baseline))
end)

r:cell("save model", { uses = { "train" } }, function(ctx, trained)
  local dir = ctx:tmpdir() .. "/pretrain_tiny"
  trained.model:save(dir)
  ctx:artifact(dir .. "/config.json")
  ctx:artifact(dir .. "/model.safetensors")
end)

return r
