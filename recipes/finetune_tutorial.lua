-- Fine-tune a small instruct model to categorise support tickets.
--
-- The model is SmolLM2-135M-Instruct (datasets/smollm2, fetched once by
-- `bash datasets/smollm2/fetch.sh`); the data, synthetic telecom support
-- tickets labelled with one of five categories (datasets/support_tickets).
-- The recipe measures the base model with a few-shot prompt on the test
-- split, LoRA-fine-tunes it on the train split (eval loss on the eval
-- split), measures the tuned model on the same test tickets, compares the
-- two, merges the adapter into the weights, saves the model as one GGUF
-- file (llama.cpp, Ollama), registers it in the local registry
-- (`moonforge models`), packs it as a bundle and serves it over the
-- OpenAI-compatible API to answer one more ticket.
--
--   moonforge run recipes/finetune_tutorial.lua [--set train_rows=800 ...]
--
-- The defaults finish in minutes on two cores: a part of the train split,
-- one epoch, answers of at most 8 tokens.
local mf = require "moonforge"

local root = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."

local r = mf.recipe{
  name = "finetune_tutorial",
  seed = 7,
  params = {
    model = root .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    data = root .. "/datasets/support_tickets/chat",
    -- rows taken from each split (0: all of it)
    train_rows = 480, eval_rows = 40, test_rows = 100,
    -- base model prompt: this many solved tickets before the question
    shots = 3,
    -- fine-tuning
    epochs = 1, lr = 2e-3, lora_r = 8, lora_alpha = 16, batch_size = 4, context_length = 256,
    -- answers
    max_tokens = 8,
    register_as = "support-tickets",
  },
}

local fc = require "moonforge.finetune_classify"

r:cell("data", function(ctx)
  local p = ctx.params
  return fc.read_splits(ctx, p.data, { train = p.train_rows, eval = p.eval_rows, test = p.test_rows })
end)

-- The base model sees a few solved tickets first: the shortest train
-- ticket of each of the first `shots` categories.
r:cell("base model", { uses = { "data" } }, function(ctx, splits)
  local p = ctx.params
  local labels = splits.labels
  local model = mf.model.load(p.model, { keep_quantized = false })
  return fc.evaluate(ctx, model, mf.tokenizer.load(p.model), splits.test, { labels = labels, prefix = "base",
    shots = fc.shots(splits.train, labels, p.shots), max_tokens = p.max_tokens })
end)

r:cell("fine-tune", { uses = { "data" } }, function(ctx, splits)
  local p = ctx.params
  return mf.finetune{
    model = p.model, train_data = splits.train, eval_data = splits.eval, task_type = "CHAT_COMPLETION",
    training_duration = p.epochs .. "ep", learning_rate = p.lr, context_length = p.context_length,
    lora = { r = p.lora_r, alpha = p.lora_alpha, dropout = 0.05, targets = "all-linear" },
    batch_size = p.batch_size, eval_every = 34, checkpoint_every = 10, ctx = ctx,
  }
end)

r:cell("tuned model", { uses = { "data", "fine-tune" } }, function(ctx, splits, run)
  return fc.evaluate(ctx, run.model, run.tokenizer, splits.test, { labels = splits.labels, prefix = "tuned",
    max_tokens = ctx.params.max_tokens })
end)

r:cell("compare", { uses = { "base model", "tuned model" } }, function(ctx, base, tuned)
  fc.compare(ctx, { { name = "base (few-shot)", metrics = base }, { name = "tuned (LoRA)", metrics = tuned } })
end)

r:cell("merge, save and register", { uses = { "fine-tune", "base model", "tuned model" } }, function(ctx, run, base, tuned)
  local p = ctx.params
  return fc.publish(ctx, run, { name = p.register_as, base = p.model,
    metrics = { accuracy = tuned.accuracy, macro_f1 = tuned.macro_f1, base_accuracy = base.accuracy,
      final_eval_loss = run.final_eval_loss },
    card = string.format("# %s\n\nSmolLM2-135M-Instruct fine-tuned with LoRA (r=%d on every linear layer, merged)\n"
      .. "to answer with the category of a telecom support ticket, by recipes/finetune_tutorial.lua.\n\n"
      .. "Test accuracy %.3f, macro-F1 %.3f (base model, %d-shot: %.3f, %.3f).\n", p.register_as, p.lora_r,
      tuned.accuracy, tuned.macro_f1, p.shots, base.accuracy, base.macro_f1) })
end)

-- The merged model as one bundle (weights, tokenizer, card, this run's
-- recipe and manifest), served over the OpenAI API and asked about a test
-- ticket, as a client of the deployed model would.
r:cell("package and serve", { uses = { "data", "merge, save and register" } }, function(ctx, splits, entry)
  local bundle = mf.deploy.pack{ ctx = ctx, model = entry.path .. "/" .. entry.files.model, base = ctx.params.model,
    metrics = entry.metrics }
  print(string.format("bundle %s: %d bytes, sha256 %s", bundle.path:match("[^/]+$"), bundle.bytes, bundle.sha256))
  local server = mf.deploy.serve{ model = bundle.path, port = 0 }
  local row = splits.test[1]
  local question = { row.messages[1], row.messages[2] }
  local reply = mf.http.post_json(server.url .. "/v1/chat/completions",
    { model = server.name, messages = question, max_tokens = ctx.params.max_tokens, temperature = 0 })
  server.stop()
  print("ticket: " .. row.messages[2].content)
  print("served model: " .. reply.choices[1].message.content .. "   (expected: " .. row.messages[3].content .. ")")
end)

return r
