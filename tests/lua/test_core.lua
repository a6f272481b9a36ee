-- The host basics every other module relies on: hashing, JSON, RNG.
local T = require "testing"
local engine = require "moonforge.engine"
local json = require "moonforge.json"
local host = require "moonforge.host"
local ffi = require "ffi"

T.test("sha256 of known vectors", function()
  T.eq(engine.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  T.eq(engine.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
end)

T.test("sha256 of a file equals sha256 of its bytes", function()
  local dir = T.tmpdir("core")
  local path = dir .. "/f.bin"
  local data = string.rep("moonforge\0", 10000)
  assert(host.write_atomic(path, data))
  T.eq(engine.sha256_file(path), engine.sha256(data))
  T.raises(function() engine.sha256_file(dir .. "/missing") end, "missing")
end)

T.test("json round trip keeps types and exact doubles", function()
  local v = { a = 1, b = { 1, 2, 3 }, c = "x\"y", d = 0.1, e = true, f = json.null, g = json.array({}),
    h = 1e300, i = -2 ^ 60 }
  local text = json.encode(v)
  local back = json.decode(text)
  T.eq(back.a, 1); T.eq(back.b[3], 3); T.eq(back.c, "x\"y"); T.eq(back.d, 0.1)
  T.eq(back.e, true); T.eq(back.f, json.null); T.eq(#back.g, 0); T.eq(back.h, 1e300); T.eq(back.i, -2 ^ 60)
  T.eq(json.encode(back), text, "re-encoding is stable")
  T.eq(json.encode({}), "{}")
  T.eq(json.encode(json.array()), "[]")
  T.eq(json.encode({ b = 1, a = 2 }), '{"a":2,"b":1}', "keys sorted")
end)

T.test("json decode reports where it failed", function()
  local v, err = json.decode('{"a": [1, 2,, 3]}')
  T.eq(v, nil)
  T.truthy(err:find("line 1"), "message names the line")
end)

T.test("rng is counter-based and reproducible", function()
  local a, b = ffi.new("mf_rng"), ffi.new("mf_rng")
  engine.C.mf_rng_init(a, 42, 7)
  engine.C.mf_rng_init(b, 42, 7)
  local first = {}
  for i = 1, 100 do first[i] = engine.C.mf_rng_uniform(a) end
  for i = 1, 100 do T.eq(engine.C.mf_rng_uniform(b), first[i]) end
  engine.C.mf_rng_init(b, 42, 8)
  T.truthy(engine.C.mf_rng_uniform(b) ~= first[1], "other stream differs")
  local sum, sq, n = 0, 0, 20000
  for _ = 1, n do local x = engine.C.mf_rng_normal(a); sum = sum + x; sq = sq + x * x end
  T.truthy(math.abs(sum / n) < 0.05, "normal mean near 0")
  T.truthy(math.abs(sq / n - 1) < 0.05, "normal variance near 1")
end)

return T.done()
