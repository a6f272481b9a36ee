-- The recipe runner's Lua side: declarations, params, cache keys, the cache
-- serializer and its large-value protocol, the cell RNG, and a whole run of
-- recipes/hello.lua whose notebook is checked for structure.
local T = require "testing"
local host = require "moonforge.host"
local json = require "moonforge.json"
local recipe = require "moonforge.recipe"
local cache = require "moonforge.cache"
local runner = require "moonforge.runner"
local ctx = require "moonforge.ctx"

local function write(path, text)
  assert(host.write_atomic(path, text))
  return path
end

local RECIPE = [[
local mf = require "moonforge"
local r = mf.recipe{ name = "keys", seed = 7, params = { n = 3, rate = 0.5, tag = "a", on = true } }
local function helper(x) return x * 2 end
r:cell("a", function(ctx) return helper(ctx.params.n) end)
r:cell("b", { uses = { "a" } }, function(ctx, a) return a + 1 end)
r:cell("c", function(ctx) return 0 end)
r:cell("d", { uses = { 2, "c" } }, function(ctx, b, c) return b + c end)
return r
]]

local dir = T.tmpdir("recipe")

local function load_text(text)
  local r, t = recipe.load(write(dir .. "/r.lua", text))
  return T.truthy(r, t), t
end

local function keys_of(text, params)
  local r, t = load_text(text)
  return (runner.keys(r, t, params or r.params))
end

T.test("a recipe declares params with inferred types and cells with inputs", function()
  local r = load_text(RECIPE)
  T.eq(r.name, "keys"); T.eq(r.seed, 7); T.eq(#r.cells, 4)
  T.eq(r.param_types.n, "integer"); T.eq(r.param_types.rate, "number")
  T.eq(r.param_types.tag, "string"); T.eq(r.param_types.on, "boolean")
  T.eq(table.concat(r:uses_titles(4), ","), "b,c")
  T.eq(r:find_cell("c"), 3); T.eq(r:find_cell("2"), 2)
  T.truthy(select(2, r:find_cell("zz")):find("cells: 'a', 'b', 'c', 'd'", 1, true))
end)

T.test("--set values are parsed to the param's type and checked", function()
  local r = load_text(RECIPE)
  local p = T.truthy(r:resolve_params({ n = "5", rate = "1e-3", tag = "x=y", on = "false" }))
  T.eq(p.n, 5); T.eq(p.rate, 1e-3); T.eq(p.tag, "x=y"); T.eq(p.on, false)
  T.eq(T.truthy(r:resolve_params({ rate = "2" })).rate, 2, "an integer is a number")
  local _, err = r:resolve_params({ m = "1" })
  T.eq(err, "unknown param 'm' (known: n, on, rate, tag)")
  _, err = r:resolve_params({ n = "2.5" })
  T.eq(err, "param 'n' expects an integer, got '2.5'")
  _, err = r:resolve_params({ on = "perhaps" })
  T.eq(err, "param 'on' expects a boolean, got 'perhaps'")
  _, err = r:resolve_params({ rate = "fast" })
  T.eq(err, "param 'rate' expects a number, got 'fast'")
end)

T.test("bad recipes give one line naming the file and line", function()
  local function load_error(text)
    local r, err = recipe.load(write(dir .. "/bad.lua", text))
    T.eq(r, nil)
    T.truthy(not err:find("\n"), "one line: " .. err)
    return err
  end
  local head = 'local r = require("moonforge").recipe{ name = "bad" }\n'
  T.truthy(load_error(head .. 'r:cell("a", function() end\nreturn r\n'):find("^.*/bad.lua:3:"))
  T.truthy(load_error(head .. 'r:cell("a", function() end)\nr:cell("a", function() end)\nreturn r\n')
    :find("bad.lua:3: duplicate cell title 'a'", 1, true))
  T.truthy(load_error(head .. 'r:cell("a", { uses = { "b" } }, function() end)\nreturn r\n')
    :find("bad.lua:2: cell 'a' uses an unknown or later cell", 1, true))
  T.truthy(load_error(head .. 'r:cell("a", function() end)\nreturn 1\n'):find("does not return a recipe", 1, true))
  T.truthy(load_error('local r = require("moonforge").recipe{ name = "x", params = { f = {} } }\nreturn r\n')
    :find("bad.lua:1: param 'f' has a default of type table", 1, true))
  T.truthy(load_error('error({})\n'):find("bad.lua: ", 1, true), "names the file when Lua does not")
  T.truthy(select(2, recipe.load(dir .. "/missing.lua")):find("cannot open recipe .*missing.lua"))
end)

T.test("cache keys follow cell source, inputs, shared code, params and seed", function()
  local base = keys_of(RECIPE)
  T.eq(#base[1], 64)
  local edited = keys_of((RECIPE:gsub("return a %+ 1", "return a + 2")))
  T.eq(edited[1], base[1], "a unchanged"); T.eq(edited[3], base[3], "c unchanged")
  T.truthy(edited[2] ~= base[2], "b edited"); T.truthy(edited[4] ~= base[4], "d uses b")
  local longer = keys_of((RECIPE:gsub("return helper%(ctx.params.n%) end%)",
    "\n  return helper(ctx.params.n)\nend)")))
  T.truthy(longer[1] ~= base[1], "a edited"); T.eq(longer[3], base[3], "a growing does not move c")
  local helper = keys_of((RECIPE:gsub("x %* 2", "x * 3")))
  for i = 1, 4 do T.truthy(helper[i] ~= base[i], "shared helper edit invalidates cell " .. i) end
  local r = load_text(RECIPE)
  local params = r:resolve_params({ n = "4" })
  T.truthy(keys_of(RECIPE, params)[3] ~= base[3], "params are in every key")
  T.truthy(keys_of((RECIPE:gsub("seed = 7", "seed = 8")))[3] ~= base[3], "seed is in every key")
  T.eq(keys_of(RECIPE)[4], base[4], "keys are stable")
end)

T.test("serialized values round-trip exactly", function()
  local key = { "table", "key" }
  local v = {
    1, 2.5, -0.0, 2 ^ 53 + 2, -2 ^ 62, 3e-310, 1 / 0, -1 / 0, 0.1,
    s = "bytes \0\1\255 and \"quotes\"\n", t = true, f = false,
    nested = { { { deep = "yes" } } }, [true] = "bool key", [1.5] = "number key",
    [key] = "table key", arr = json.array(), obj = json.object({ a = 1 }),
  }
  v[10] = 0 / 0
  local back = cache.deserialize(cache.serialize(v))
  for i = 1, 9 do T.eq(back[i], v[i], "number " .. i) end
  T.eq(1 / back[3], -1 / 0, "negative zero")
  T.truthy(back[10] ~= back[10], "nan")
  T.eq(back.s, v.s); T.eq(back.t, true); T.eq(back.f, false)
  T.eq(back.nested[1][1].deep, "yes")
  T.eq(back[true], "bool key"); T.eq(back[1.5], "number key")
  local found
  for k, val in pairs(back) do
    if type(k) == "table" then found = k[1] .. " " .. k[2] .. "=" .. val end
  end
  T.eq(found, "table key=table key")
  T.eq(json.encode(back.arr), "[]"); T.eq(json.encode(back.obj), '{"a":1}')
  T.eq(cache.deserialize(cache.serialize(nil)), nil)
  T.eq(cache.deserialize(cache.serialize("x")), "x")
  T.raises(function() cache.deserialize(cache.serialize(v):sub(1, -3)) end, "corrupt cache entry")
end)

T.test("functions, cycles and foreign userdata are refused with where they are", function()
  T.raises(function() cache.serialize({ model = { forward = print } }) end,
    "result.model.forward is a function")
  local cyc = { child = {} }
  cyc.child.parent = cyc
  T.raises(function() cache.serialize(cyc) end, "result.child.parent is part of a cycle")
  T.raises(function() cache.serialize({ io.stdout }) end, "result[1] is a userdata; it cannot be cached")
  T.raises(function() cache.serialize({ x = setmetatable({}, {}) }) end,
    "result.x has a metatable without __mf_cache_save")
  local shared = { 1 }
  T.eq(#cache.deserialize(cache.serialize({ shared, shared }))[2], 1, "a table reached twice is no cycle")
end)

T.test("large values are stored as files through the protocol", function()
  local Blob = {}
  Blob.__index = Blob
  Blob.__mf_cache_save = function(b, folder)
    assert(host.write_atomic(folder .. "/data.bin", b.bytes))
    return { kind = "test-blob", size = #b.bytes }
  end
  cache.register_loader("test-blob", function(descriptor, folder)
    local f = assert(io.open(folder .. "/data.bin", "rb"))
    local bytes = f:read("*a")
    f:close()
    T.eq(#bytes, descriptor.size)
    return setmetatable({ bytes = bytes }, Blob)
  end)
  local store = cache.open(dir .. "/cache")
  local key = string.rep("ab", 32)
  T.eq(store:has(key), false)
  local blob = setmetatable({ bytes = string.rep("\0\1\2", 1000) }, Blob)
  store:save(key, { weights = blob, step = 3 }, { { kind = "text", text = "hi\n" } }, {})
  T.eq(store:has(key), true)
  local back = store:load_value(key)
  T.eq(back.step, 3); T.eq(back.weights.bytes, blob.bytes); T.eq(getmetatable(back.weights), Blob)
  T.eq(store:load_outputs(key)[1].text, "hi\n")
  T.raises(function() cache.serialize(blob) end, "can only be stored as a cell result")
  local bad = string.rep("cd", 32)
  T.raises(function() store:save(bad, { f = print }, {}, {}) end, "result.f is a function")
  T.eq(store:has(bad), false, "a failed save leaves no entry")
  T.eq(#host.listdir(dir .. "/cache/cells/cd"), 0, "nor a temporary folder")
end)

T.test("the cell rng is deterministic per seed and title", function()
  local a, b, c = ctx.rng(42, "cell"), ctx.rng(42, "cell"), ctx.rng(42, "other")
  local same, differs = true, false
  for _ = 1, 50 do
    local x = a:uniform()
    same = same and x == b:uniform()
    differs = differs or x ~= c:uniform()
  end
  T.truthy(same, "same stream"); T.truthy(differs, "other title, other stream")
  local seen = {}
  for _ = 1, 2000 do
    local k = a:int(3, 5)
    T.truthy(k >= 3 and k <= 5 and k == math.floor(k), "int in range")
    seen[k] = true
  end
  T.truthy(seen[3] and seen[4] and seen[5], "every value drawn")
  local t = a:shuffle({ 1, 2, 3, 4, 5, 6, 7, 8 })
  table.sort(t)
  T.eq(table.concat(t, ","), "1,2,3,4,5,6,7,8", "shuffle permutes")
  local u = a:uniform(-2, -1)
  T.truthy(u >= -2 and u < -1, "uniform(a, b)")
end)

T.test("a run of hello.lua records a notebook with every cell", function()
  local src = os.getenv("MF_SOURCE_DIR") or "."
  local path = src .. "/recipes/hello.lua"
  local r, text = recipe.load(path)
  T.truthy(r, text)
  local params = T.truthy(r:resolve_params({ n = "200", epochs = "3" }))
  local options = { params = params, runs_dir = dir .. "/runs", cache_root = dir .. "/cache" }
  options.plan = assert(runner.plan(r, text, options))
  local record, status = runner.execute(r, text, path, options)
  T.eq(status, 0); T.eq(record.status, "success")
  local run_dir = dir .. "/runs/" .. record.run_id
  local f = assert(io.open(run_dir .. "/notebook.ipynb", "rb"))
  local nb = T.truthy(json.decode(f:read("*a")))
  f:close()
  T.eq(nb.nbformat, 4)
  T.eq(#nb.cells, 1 + 2 * #r.cells, "a summary, then markdown and code per cell")
  for i, cell in ipairs(r.cells) do
    local md, code = nb.cells[2 * i], nb.cells[2 * i + 1]
    T.eq(md.cell_type, "markdown"); T.eq(code.cell_type, "code")
    T.truthy(table.concat(md.source):find(cell.title, 1, true), "markdown names " .. cell.title)
    T.truthy(#code.outputs > 0, "outputs of " .. cell.title)
    T.truthy(table.concat(code.source):find("r:cell(", 1, true), "code holds the cell source")
  end
  local outputs = {}
  for _, o in ipairs(nb.cells[2 * 4 + 1].outputs) do outputs[#outputs + 1] = o.output_type end
  T.truthy(table.concat(outputs, " "):find("display_data"), "compare shows a table and a plot")
  local manifest = json.decode(assert(io.open(run_dir .. "/manifest.json")):read("*a"))
  T.eq(manifest.status, "success"); T.eq(manifest.seed, 42); T.eq(manifest.params.n, 200)
  T.eq(#manifest.cells, 4); T.eq(manifest.cells[4].cache_hit, false)
  T.eq(host.kind(run_dir .. "/artifacts/fit.csv"), "file")
end)

-- Models hold their memory in C, which the Lua collector does not count:
-- a finished cell's values must be let go and collected before the next
-- cell runs. Userdata with __gc stand in for them here.
T.test("values no later cell uses are freed after each cell", function()
  local probe = { collected = {} }
  package.loaded["release_probe"] = probe
  local Held = { __mf_cache_save = function() return { kind = "release-probe" } end }
  Held.__index = Held
  probe.Held = Held
  cache.register_loader("release-probe", function() return setmetatable({}, Held) end)
  local text = [[
local mf = require "moonforge"
local probe = require "release_probe"
local function tracked(name)
  local p = newproxy(true)
  getmetatable(p).__gc = function() probe.collected[name] = true end
  return p
end
local r = mf.recipe{ name = "release" }
r:cell("model", function(ctx) return setmetatable({ p = tracked("result") }, probe.Held) end)
r:cell("scratch", function(ctx) local p = tracked("local") return 1 end)
r:cell("use", { uses = { "model" } }, function(ctx, m)
  assert(probe.collected["local"], "a cell's locals outlived it")
  return 2
end)
r:cell("after", function(ctx)
  assert(probe.collected["result"], "a result no later cell uses outlived its last user")
  return 3
end)
return r
]]
  local path = write(dir .. "/release.lua", text)
  local r = T.truthy(recipe.load(path))
  local options = { params = r.params, runs_dir = dir .. "/runs", cache_root = dir .. "/release-cache" }
  options.plan = assert(runner.plan(r, text, options))
  local record, status = runner.execute(r, text, path, options)
  T.eq(status, 0, "the run (its failing cell printed its assertion)")
  T.eq(record.status, "success")
end)

return T.done()
