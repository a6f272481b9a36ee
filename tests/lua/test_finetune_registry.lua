-- mf.registry: versions that never overwrite, listing, `moonforge models`,
-- and register_to from mf.finetune.
local T = require "testing"
local F = require "finetune_testing"
local ffi = require "ffi"
local mf = require "moonforge"
local host = require "moonforge.host"
local json = require "moonforge.json"

ffi.cdef("int setenv(const char *name, const char *value, int overwrite);")
local home = T.tmpdir("registry")
ffi.C.setenv("MOONFORGE_HOME", home, 1)

local read = T.read

T.test("registering twice makes two versions", function()
  local model = F.model()
  local first = mf.registry.register("tiny", { model = model, metrics = { accuracy = 0.5 }, card = "# tiny\n" })
  local second = mf.registry.register("tiny", { model = model, tokenizer = F.tokenizer, metrics = { accuracy = 0.75 } })
  T.eq(first.version, 1)
  T.eq(second.version, 2)
  T.eq(first.path, home .. "/registry/tiny/v1")
  T.eq(read(first.path .. "/README.md"), "# tiny\n")
  T.eq(host.kind(first.path .. "/model/model.safetensors"), "file")
  T.eq(host.kind(second.path .. "/tokenizer/smollm.json"), "file")
  T.eq(json.decode(read(first.path .. "/entry.json")).metrics.accuracy, 0.5, "v1 is untouched")
  local entries = mf.registry.list("tiny")
  T.eq(#entries, 2)
  T.eq(entries[2].metrics.accuracy, 0.75)
  T.eq(mf.registry.get("tiny").version, 2)
  T.eq(mf.registry.get("tiny", 1).metrics.accuracy, 0.5)
end)

T.test("bad registrations leave nothing behind", function()
  T.raises(function() mf.registry.register("../escape", { model = F.model() }) end, "a name is letters")
  T.raises(function() mf.registry.register("empty", {}) end, "give a model or an adapter")
  T.raises(function() mf.registry.register("missing", { adapter = home .. "/absent" }) end, "does not exist")
  T.eq(#mf.registry.list("missing"), 0)
  T.eq(#host.listdir(home .. "/registry/missing"), 0, "no staging folder left")
end)

T.test("register_to registers the fine-tuned adapter", function()
  local dir = T.tmpdir("registry-data")
  F.chat_file(dir, "train.jsonl", 8)
  F.chat_file(dir, "eval.jsonl", 4)
  local run = mf.finetune(F.options(dir, { register_to = "notes", training_duration = "1ep",
    checkpoint_dir = dir .. "/ck" }))
  local entry = mf.registry.get("notes")
  T.eq(entry.version, 1)
  T.eq(entry.metrics.final_eval_loss, run.final_eval_loss)
  T.eq(host.kind(entry.path .. "/adapter/adapter_model.safetensors"), "file")
end)

T.test("moonforge models lists names, versions and metrics", function()
  local exe = os.getenv("MOONFORGE") or "build/moonforge"
  local p = assert(io.popen(string.format("MOONFORGE_HOME='%s' '%s' models 2>&1", home, exe)))
  local out = p:read("*a")
  p:close()
  T.truthy(out:find("tiny%s+v1 ") and out:find("tiny%s+v2 ") and out:find("accuracy=0.75", 1, true), out)
  T.truthy(out:find("notes%s+v1 "), out)
end)

return T.done()
