-- moonforge.optim: optimizers over a model's parameters.
--
--   local opt = mf.optim.adamw(model, { lr = 1e-3, weight_decay = 0.01 })
--   model:loss(tokens, targets); model:backward()
--   opt:clip_grad_norm(1.0)   -- optional
--   opt:step(); opt:zero_grad()
--   opt:save("opt.safetensors"); opt:load("opt.safetensors")   -- step count and moments
local ffi = require "ffi"
local engine = require "moonforge.engine"

local C = engine.C

local M = {}
local AdamW = {}
AdamW.__index = AdamW

-- mf.optim.adamw(model, opts): PyTorch's AdamW. opts: lr (1e-3), betas
-- ({0.9, 0.999}), eps (1e-8), weight_decay (0.01), params (a list of
-- parameter names; default every parameter).
function M.adamw(model, opts)
  opts = opts or {}
  local betas = opts.betas or { 0.9, 0.999 }
  local o = ffi.new("mf_adamw_opts", opts.lr or 1e-3, betas[1], betas[2], opts.eps or 1e-8,
    opts.weight_decay or 0.01)
  local names, n = nil, 0
  if opts.params then
    n = #opts.params
    names = ffi.new("const char *[?]", n + 1)
    for i, name in ipairs(opts.params) do names[i - 1] = name end
  end
  local ptr = engine.check_ptr(C.mf_optim_adamw(model.ptr, names, n, o), 2)
  -- The optimizer points into the model's memory: keep the model alive.
  return setmetatable({ ptr = ffi.gc(ptr, C.mf_optim_free), model = model }, AdamW)
end

function AdamW:step() engine.check(C.mf_optim_step(self.ptr), 2) end
function AdamW:zero_grad() C.mf_optim_zero_grad(self.ptr) end
function AdamW:set_lr(lr) C.mf_optim_set_lr(self.ptr, lr) end
function AdamW:steps() return tonumber(C.mf_optim_steps(self.ptr)) end

-- Multiplies the gradients by factor (1 / micro-batches when accumulating).
function AdamW:scale_grad(factor) C.mf_optim_scale_grad(self.ptr, factor) end

-- The step count and moments, saved to a safetensors file (atomically) and
-- loaded into an optimizer over the same parameters: the next step is then
-- bit-identical to the saved optimizer's.
function AdamW:save(path) engine.check(C.mf_optim_save(self.ptr, path), 2) end
function AdamW:load(path) engine.check(C.mf_optim_load(self.ptr, path), 2) end

-- Global L2 norm of the gradients, before clipping them to max_norm (when given).
function AdamW:clip_grad_norm(max_norm)
  return C.mf_optim_clip_grad_norm(self.ptr, max_norm or 0)
end

return M
