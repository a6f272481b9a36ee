-- Fine-tune a small instruct model to name the archive section of a Debian
-- package from its description: the tutorial's steps
-- (recipes/finetune_tutorial.lua) on real text with ten classes.
--
-- The model is SmolLM2-135M-Instruct (`bash datasets/smollm2/fetch.sh`);
-- the data, package descriptions from Debian 12's archive index labelled
-- with their section (datasets/debian_sections). Base model few-shot, LoRA
-- fine-tuning, tuned model, comparison, merge, save and register.
--
--   moonforge run recipes/finetune_debian_sections.lua [--set train_rows=960 ...]
--
-- Descriptions are longer than tickets; the defaults cut them to max_chars
-- bytes and finish in a few minutes on two cores.
local mf = require "moonforge"

local root = debug.getinfo(1, "S").source:match("^@(.*)/recipes/[^/]*$") or "."

local r = mf.recipe{
  name = "finetune_debian_sections",
  seed = 11,
  params = {
    model = root .. "/datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    data = root .. "/datasets/debian_sections/chat",
    -- rows taken from each split (0: all of it)
    train_rows = 160, eval_rows = 20, test_rows = 50,
    -- descriptions cut to this many bytes, so that the answer fits the context
    max_chars = 400,
    -- base model prompt: this many solved examples before the question
    shots = 3,
    -- fine-tuning
    epochs = 1, lr = 2e-3, lora_r = 8, lora_alpha = 16, batch_size = 4, context_length = 192,
    -- answers
    max_tokens = 8,
    register_as = "debian-sections",
  },
}

local fc = require "moonforge.finetune_classify"

r:cell("data", function(ctx)
  local p = ctx.params
  return fc.read_splits(ctx, p.data, { train = p.train_rows, eval = p.eval_rows, test = p.test_rows,
    max_chars = p.max_chars })
end)

-- The base model sees a few solved examples first: the shortest train
-- description of each of the first `shots` sections.
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
      .. "to answer with the Debian archive section of a package description, by\n"
      .. "recipes/finetune_debian_sections.lua.\n\n"
      .. "Test accuracy %.3f, macro-F1 %.3f (base model, %d-shot: %.3f, %.3f).\n", p.register_as, p.lora_r,
      tuned.accuracy, tuned.macro_f1, p.shots, base.accuracy, base.macro_f1) })
end)

return r
