-- One side of bench/lora_step: LoRA fine-tuning steps (forward, backward,
-- AdamW on the adapters) of a GGUF model dequantized to f32 and held in the
-- precision `base`, on random tokens whose first half is a masked prompt.
-- Run by alternate.py through `moonforge exec`: after four warm-up steps it
-- prints "ready", then runs one timed step per line it reads and answers
-- "step SECONDS LOSS"; at the end of input it prints tokens_per_s over them.
local mf = require "moonforge"
local host = require "moonforge.host"

local opt = {}
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^(%w+)=(.*)$")
  if k then opt[k] = v end
end
local seq, batch = tonumber(opt.seq), tonumber(opt.batch)

local model = mf.model.load(opt.model, { keep_quantized = false })
model:add_lora { r = 8, alpha = 16, dropout = 0.05, targets = "all-linear", seed = 1 }
model:set_base_precision(opt.base or "f32")
local adamw = mf.optim.adamw(model, { lr = 1e-4, params = model:trainable_params() })
local vocab = model:config().vocab_size

-- The same batch as the PyTorch side: a fixed linear congruential sequence.
local state = 12345
local function next_id()
  state = (state * 1103515245 + 12345) % 2147483648
  return state % vocab
end
local tokens, targets = {}, {}
for b = 1, batch do
  local row = {}
  for t = 1, seq + 1 do row[t] = next_id() end
  tokens[b], targets[b] = {}, {}
  for t = 1, seq do
    tokens[b][t] = row[t]
    targets[b][t] = t <= seq / 2 and -100 or row[t + 1]
  end
end
tokens, targets = mf.tensor.from(tokens, "I32"), mf.tensor.from(targets, "I32")

local function step()
  local loss = model:loss(tokens, targets)
  model:backward()
  adamw:step()
  adamw:zero_grad()
  return loss
end

for _ = 1, 4 do step() end  -- warm-up, as long as PEFT's side needs
print("ready")
io.stdout:flush()
local steps, total = 0, 0
while io.read("*l") do
  local t0 = host.clock()
  local loss = step()
  local dt = host.clock() - t0
  steps, total = steps + 1, total + dt
  print("step", dt, loss)
  io.stdout:flush()
end
if steps > 0 then print("tokens_per_s", steps * batch * seq / total) end
