-- Greedy decoding speed of a GGUF model in moonforge: one prompt, then
-- new tokens with a KV cache, timed from the first decode step (prefill
-- included), printed as one JSON line. Run by bench/decode/run.sh:
--   moonforge exec bench/decode/decode.lua MODEL.gguf KEEP_QUANTIZED PROMPT_IDS TOKENS
local mf = require "moonforge"
local host = require "moonforge.host"
local json = require "moonforge.json"

local path, keep, prompt_text, tokens = arg[1], arg[2] == "1", arg[3], tonumber(arg[4])
local prompt = {}
for id in prompt_text:gmatch("%d+") do prompt[#prompt + 1] = tonumber(id) end

local model = mf.model.load(path, { keep_quantized = keep })
model:generate(prompt, { max_tokens = 4, ignore_eos = true })  -- warm-up
local t0 = host.clock()
local out = model:generate(prompt, { max_tokens = tokens, ignore_eos = true })
local dt = host.clock() - t0
print(json.encode({ tokens = #out, seconds = dt, tokens_per_s = #out / dt, ids = out }))
