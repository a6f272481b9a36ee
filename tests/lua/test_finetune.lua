-- mf.finetune: options and data checked before training, the schedule,
-- training that learns and repeats bit for bit, checkpoints that resume to
-- the same bits, the optimizer state round trip.
local T = require "testing"
local F = require "finetune_testing"
local mf = require "moonforge"

local dir = T.tmpdir("finetune")
F.chat_file(dir, "train.jsonl", 24)
F.chat_file(dir, "eval.jsonl", 6)

T.test("durations and the learning-rate schedule", function()
  T.eq(mf.finetune.parse_duration("3ep").epochs, 3)
  T.eq(mf.finetune.parse_duration("0.5ep").epochs, 0.5)
  T.eq(mf.finetune.parse_duration("200000tok").tokens, 200000)
  T.raises(function() mf.finetune.parse_duration("3 epochs") end, "training_duration must be epochs")
  T.eq(mf.finetune.warmup_steps(0.1, 100), 10)
  T.eq(mf.finetune.warmup_steps(5, 100), 5)
  local lr_at = mf.finetune.lr_at
  T.eq(lr_at(1, "cosine", 4, 2, 20), 0.5)
  T.eq(lr_at(1, "cosine", 4, 5, 20), 1)
  T.near(lr_at(1, "cosine", 4, 13, 20), 0.5 * (1 + math.cos(math.pi * 8 / 16)), 1e-15)
  T.truthy(lr_at(1, "cosine", 4, 20, 20) > 0, "the last step still learns")
  T.eq(lr_at(1, "linear", 0, 11, 20), 0.5)
  T.eq(lr_at(2, "constant", 0, 19, 20), 2)
end)

T.test("bad options are refused before training", function()
  local function refused(extra, message)
    T.raises(function() mf.finetune(F.options(dir, extra)) end, message)
  end
  refused({ learning_rate = 0 }, "learning_rate must be a finite number > 0, got 0")
  refused({ learning_rate = -1e-3 }, "learning_rate must be a finite number > 0")
  refused({ learning_rate = 0 / 0 }, "learning_rate must be a finite number > 0, got nan")
  refused({ context_length = 4096 }, "context_length 4096 exceeds the model's max_position_embeddings 128")
  refused({ training_duration = "forever" }, "training_duration must be epochs")
  refused({ task_type = "SUMMARIZE" }, "unknown task_type 'SUMMARIZE'")
  refused({ schedule = "step" }, "schedule must be cosine, linear or constant")
  refused({ lora = { r = 0 } }, "lora.r must be a positive integer")
  refused({ lora = { rank = 4 } }, "lora: unknown setting 'rank'")
  refused({ lora = { base_precision = "fp8" } }, "lora.base_precision must be f32, bf16, q8_0, q4_0 or q4_1, got fp8")
  refused({ batch_size = 0 }, "batch_size must be an integer >= 1")
  refused({ epochs = 3 }, "unknown option 'epochs'")
  refused({ model = F.model(1, 16), tokenizer = F.tokenizer .. ".absent" }, "absent")
end)

T.test("bad data is refused naming the file and line", function()
  local lines = F.chat_lines(4)
  local function refused(name, text, message)
    local path = F.write(dir .. "/" .. name, text)
    T.raises(function() mf.finetune(F.options(dir, { train_data = path })) end, message)
  end
  refused("empty.jsonl", "", "empty.jsonl: empty file")
  refused("malformed.jsonl", lines[1] .. "\n" .. lines[2] .. "\n{\"messages\": [\n",
    "malformed.jsonl:3:")
  refused("role.jsonl", lines[1] .. "\n" .. lines[2]:gsub('"assistant"', '"bot"') .. "\n",
    "role.jsonl:2: messages[3]: unknown role 'bot'")
  refused("noanswer.jsonl", lines[1] .. "\n" .. lines[2] .. "\n" ..
    '{"messages": [{"role": "user", "content": "hello"}]}\n', "noanswer.jsonl:3: no assistant message")
  T.raises(function() mf.finetune(F.options(dir, { eval_data = dir .. "/absent.jsonl" })) end,
    "eval_data: no file or folder")
  T.raises(function() mf.finetune(F.options(dir, { train_data = {} })) end, "train_data: no rows")
end)

T.test("an adapter made for another base is refused", function()
  local other = F.model(1, 16)
  other:add_lora({ r = 4, alpha = 8 })
  local adapter = dir .. "/other-adapter"
  other:save_adapter(adapter)
  T.raises(function() mf.finetune(F.options(dir, { adapter = adapter })) end,
    "adapter " .. adapter .. " does not fit this model")
end)

-- Two runs from the same options give the same bits; the loss falls.
local MODES = { full = { lora = false }, lora = {}, ["lora on a bf16 base"] = { lora = { base_precision = "bf16" } } }
for _, mode in ipairs({ "full", "lora", "lora on a bf16 base" }) do
  T.test(mode .. " fine-tuning learns and repeats bit for bit", function()
    local extra = MODES[mode]
    extra.checkpoint_dir = dir .. "/same-a-" .. mode
    local a = mf.finetune(F.options(dir, extra))
    extra.checkpoint_dir = dir .. "/same-b-" .. mode
    local b = mf.finetune(F.options(dir, extra))
    T.eq(#a.history, 12, "2 epochs of 24 rows in batches of 4")
    T.eq(F.result_digest(a), F.result_digest(b))
    for k, r in ipairs(a.history) do T.eq(r.loss, b.history[k].loss, "loss of step " .. k) end
    T.truthy(a.history[12].loss < a.history[1].loss - 0.2, "the loss falls")
    T.eq(a.final_eval_loss, a.history[12].eval_loss)
    T.truthy(a.history[3].eval_loss and a.history[6].eval_loss and not a.history[4].eval_loss, "eval every 3 steps")
  end)
end

-- Two micro-batches of one row make the step one batch of both rows makes:
-- the rows count 2 and 24 targets, so averaging the two means instead
-- would give another loss and another gradient (norm).
T.test("gradient accumulation weighs micro-batches by their counted targets", function()
  local data = T.tmpdir()
  F.write(data .. "/train.jsonl", '{"messages": [{"role": "user", "content": "a short one"}, '
    .. '{"role": "assistant", "content": "yes"}]}\n{"messages": [{"role": "user", "content": "a longer one"}, '
    .. '{"role": "assistant", "content": "a much longer answer than the first, with many more tokens"}]}\n')
  local function first_step(batch_size, grad_accum)
    local o = F.options(data, { batch_size = batch_size, grad_accum = grad_accum, training_duration = "1ep",
      warmup = 0, eval_every = 0, lora = { r = 4, alpha = 8, dropout = 0 },
      checkpoint_dir = data .. "/ckpt-" .. batch_size })
    o.eval_data = nil
    local history = mf.finetune(o).history
    T.eq(#history, 1)
    return history[1]
  end
  local whole, parts = first_step(2, 1), first_step(1, 2)
  T.near(parts.loss, whole.loss, 1e-6, "the step's loss")
  T.near(parts.grad_norm, whole.grad_norm, 1e-5, "the step's gradient norm")
end)

-- A run stopped after its checkpoint of step 6, started again, ends with
-- the bits of a run never stopped (dropout masks included).
for _, mode in ipairs({ "full", "lora" }) do
  T.test(mode .. " fine-tuning resumes from a checkpoint to the same bits", function()
    local extra = { grad_accum = 2, batch_size = 2, checkpoint_every = 3 }
    if mode == "full" then extra.lora = false end
    extra.checkpoint_dir = dir .. "/whole-" .. mode
    local whole = mf.finetune(F.options(dir, extra))
    extra.checkpoint_dir = dir .. "/stopped-" .. mode
    extra.on_step = function(r) if r.step == 7 then error("stopped at step 7") end end
    T.raises(function() mf.finetune(F.options(dir, extra)) end, "stopped at step 7")
    extra.on_step = nil
    local resumed = mf.finetune(F.options(dir, extra))
    T.eq(resumed.resumed_from, 6)
    T.eq(#resumed.history, #whole.history)
    T.eq(F.result_digest(resumed), F.result_digest(whole))
    T.eq(resumed.final_eval_loss, whole.final_eval_loss)
  end)
end

T.test("a checkpoint of other settings is not resumed", function()
  local extra = { lora = false, checkpoint_dir = dir .. "/other-settings" }
  mf.finetune(F.options(dir, extra))
  extra.learning_rate = 1e-3
  T.eq(mf.finetune(F.options(dir, extra)).resumed_from, nil)
end)

T.test("optimizer state saves and loads to the same next steps", function()
  local tokens, targets = { { 1, 2, 3, 4, 5, 6 } }, { { 2, 3, 4, 5, 6, 7 } }
  local function steps(model, opt, n)
    for _ = 1, n do
      opt:zero_grad()
      model:loss(tokens, targets)
      model:backward()
      opt:step()
    end
  end
  local a = F.model()
  local opt_a = mf.optim.adamw(a, { lr = 1e-2 })
  steps(a, opt_a, 2)
  a:save(dir .. "/opt-model")
  opt_a:save(dir .. "/opt.safetensors")
  steps(a, opt_a, 2)
  local b = mf.model.load(dir .. "/opt-model")
  local opt_b = mf.optim.adamw(b, { lr = 1e-2 })
  opt_b:load(dir .. "/opt.safetensors")
  T.eq(opt_b:steps(), 2)
  steps(b, opt_b, 2)
  local wa, wb = a:param("model.norm.weight"):totable(), b:param("model.norm.weight"):totable()
  for i = 1, 32 do T.eq(wb[i], wa[i], "norm weight " .. i) end
  local partial = mf.optim.adamw(F.model(), { params = { "model.norm.weight" } })
  T.raises(function() partial:load(dir .. "/opt.safetensors") end, "holds 42 tensors, the optimizer has 1 parameters")
  local wide = mf.optim.adamw(F.model(1, 16))
  T.raises(function() wide:load(dir .. "/opt.safetensors") end, "model.embed_tokens.weight.exp_avg' is F32 with 32768 values")
  T.raises(function() wide:load(dir .. "/opt-model/model.safetensors") end, "not a moonforge AdamW state")
end)

return T.done()
