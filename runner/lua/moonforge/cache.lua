-- moonforge.cache: the content-addressed store of cell results.
--
-- A cell's result is stored under its cache key (a SHA-256 the executor
-- computes from everything the result depends on). An entry is a folder
--   <root>/cells/<first two hex digits>/<key>/
--     value.bin     the result, serialized as below
--     outputs.bin   the cell's recorded outputs, replayed on a cache hit
--     artifacts/    copies of the files the cell published (ctx:artifact)
--     obj-N/        one folder per large value stored through the protocol
-- An entry is built under a temporary name and renamed into place, so it is
-- complete or absent, never half-written, whenever the process is killed.
--
-- Plain values round-trip exactly: nil, booleans, numbers (their IEEE-754
-- bits: integers beyond 2^31, -0, infinities and NaN), strings with any
-- bytes, and tables with keys and values of those types, nested. A table
-- reached twice is stored twice; a cycle, a function, a thread or userdata
-- without the protocol is refused with an error naming where it was found.
-- Metatables are not stored, except json.array / json.object marks.
--
-- Large values (tensors, models, datasets) never go through Lua tables. Their
-- type opts in with a metatable field
--   __mf_cache_save(value, dir) -> descriptor
-- which writes the value's files into the fresh folder `dir` and returns a
-- table of plain values with a string field `kind` (and, optionally,
-- `module`: a module to require so the loader is registered). The value is
-- restored by the loader registered for that kind:
--   cache.register_loader(kind, function(descriptor, dir) return value end)
-- where `dir` holds the files the save wrote. For cdata the field is looked
-- up by indexing the value (ffi.metatype's __index).
local ffi = require "ffi"
local host = require "moonforge.host"
local json = require "moonforge.json"

local M = {}
local loaders = {}

function M.register_loader(kind, fn)
  assert(type(kind) == "string" and type(fn) == "function", "register_loader(kind, fn)")
  loaders[kind] = fn
end

-- The cache folder: MOONFORGE_CACHE, else $XDG_CACHE_HOME/moonforge, else
-- ~/.cache/moonforge.
function M.default_root()
  local dir = os.getenv("MOONFORGE_CACHE")
  if dir and dir ~= "" then return dir end
  local xdg = os.getenv("XDG_CACHE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/moonforge" end
  return (os.getenv("HOME") or ".") .. "/.cache/moonforge"
end

------------------------------------------------------------------------
-- Serialization
--   value := 'n' | 't' | 'f'              nil, true, false
--          | 'd' <8 bytes>                a number: its double, native order
--          | 's' <length> ':' <bytes>     a string
--          | '{' <mark> (value value)* '}'  a table: key, value pairs;
--                                           mark is '-', 'a' (json.array), 'o' (json.object)
--          | 'x' value <length> ':' <folder>  a protocol value: descriptor, folder
------------------------------------------------------------------------
local double = ffi.new("double[1]")
local json_array_mt = getmetatable(json.array())
local json_object_mt = getmetatable(json.object())

local function saver_of(v)
  local t = type(v)
  if t == "table" or t == "userdata" then
    local mt = getmetatable(v)
    return type(mt) == "table" and rawget(mt, "__mf_cache_save") or nil, mt
  end
  if t == "cdata" then
    local ok, fn = pcall(function() return v.__mf_cache_save end)
    return ok and fn or nil
  end
end

local function key_text(k)
  if type(k) == "string" and k:find("^[%a_][%w_]*$") then return "." .. k end
  return "[" .. (type(k) == "string" and string.format("%q", k) or tostring(k)) .. "]"
end

local encode

local function encode_table(out, t, where, state)
  if state.open[t] then error(where .. " is part of a cycle; a cached result must be a tree", 0) end
  local _, mt = saver_of(t)
  local mark = mt == nil and "-" or mt == json_array_mt and "a" or mt == json_object_mt and "o"
  if not mark then
    error(where .. " has a metatable without __mf_cache_save; it cannot be cached", 0)
  end
  state.open[t] = true
  out[#out + 1] = "{" .. mark
  for k, v in pairs(t) do
    local here = where .. key_text(k)
    encode(out, k, here .. " (a key)", state)
    encode(out, v, here, state)
  end
  out[#out + 1] = "}"
  state.open[t] = nil
end

local function encode_object(out, v, save, where, state)
  state.objects = state.objects + 1
  local folder = "obj-" .. state.objects
  local dir = state.dir .. "/" .. folder
  assert(host.mkdir_p(dir))
  local descriptor = save(v, dir)
  if type(descriptor) ~= "table" or type(descriptor.kind) ~= "string" then
    error(where .. ": __mf_cache_save must return a table with a string field kind", 0)
  end
  out[#out + 1] = "x"
  encode(out, descriptor, where .. " (descriptor)", state)
  out[#out + 1] = #folder .. ":" .. folder
end

function encode(out, v, where, state)
  local t = type(v)
  local save = saver_of(v)
  if save then
    if not state.dir then error(where .. ": a large value can only be stored as a cell result", 0) end
    return encode_object(out, v, save, where, state)
  end
  if t == "nil" then out[#out + 1] = "n"
  elseif t == "boolean" then out[#out + 1] = v and "t" or "f"
  elseif t == "number" then
    double[0] = v
    out[#out + 1] = "d" .. ffi.string(double, 8)
  elseif t == "string" then out[#out + 1] = "s" .. #v .. ":" .. v
  elseif t == "table" then encode_table(out, v, where, state)
  else error(where .. " is a " .. t .. "; it cannot be cached", 0) end
end

-- serialize(value [, dir]) -> bytes. `dir` is where protocol values write
-- their folders; without it they are refused. Errors name the offending
-- place as a path from "result".
function M.serialize(value, dir)
  local out = {}
  encode(out, value, "result", { open = {}, dir = dir, objects = 0 })
  return table.concat(out)
end

local function decoder(data, dir)
  local pos = 1
  local function fail(what) error(string.format("corrupt cache entry (%s at byte %d)", what, pos), 0) end
  local function counted()
    local colon = data:find(":", pos, true) or fail("missing length")
    local n = tonumber(data:sub(pos, colon - 1)) or fail("bad length")
    local s = data:sub(colon + 1, colon + n)
    if #s ~= n then fail("truncated") end
    pos = colon + n + 1
    return s
  end
  local decode
  local function decode_table()
    local mark = data:sub(pos, pos)
    pos = pos + 1
    local t = mark == "a" and json.array() or mark == "o" and json.object() or {}
    while data:sub(pos, pos) ~= "}" do
      if pos > #data then fail("unterminated table") end
      local k = decode()
      t[k] = decode()
    end
    pos = pos + 1
    return t
  end
  function decode()
    local tag = data:sub(pos, pos)
    pos = pos + 1
    if tag == "n" then return nil
    elseif tag == "t" then return true
    elseif tag == "f" then return false
    elseif tag == "d" then
      if pos + 7 > #data then fail("truncated number") end
      ffi.copy(double, data:sub(pos, pos + 7), 8)
      pos = pos + 8
      return double[0]
    elseif tag == "s" then return counted()
    elseif tag == "{" then return decode_table()
    elseif tag == "x" then
      local descriptor = decode()
      local folder = counted()
      return M.restore(descriptor, dir .. "/" .. folder)
    end
    fail("unknown tag '" .. tag .. "'")
  end
  return decode
end

function M.deserialize(data, dir)
  return decoder(data, dir)()
end

function M.restore(descriptor, dir)
  local load = loaders[descriptor.kind]
  if not load and type(descriptor.module) == "string" then
    require(descriptor.module)
    load = loaders[descriptor.kind]
  end
  if not load then error("no cache loader registered for kind '" .. descriptor.kind .. "'", 0) end
  return load(descriptor, dir)
end

------------------------------------------------------------------------
-- The store
------------------------------------------------------------------------
local Store = {}
Store.__index = Store

function M.open(root)
  return setmetatable({ root = root or M.default_root() }, Store)
end

function Store:entry(key)
  return self.root .. "/cells/" .. key:sub(1, 2) .. "/" .. key
end

function Store:has(key)
  return host.kind(self:entry(key) .. "/value.bin") == "file"
end

local function read_file(path)
  local data, err = host.read_file(path)
  if not data then error(err, 0) end
  return data
end

function Store:load_value(key)
  local dir = self:entry(key)
  return M.deserialize(read_file(dir .. "/value.bin"), dir)
end

function Store:load_outputs(key)
  return M.deserialize(read_file(self:entry(key) .. "/outputs.bin"))
end

-- Copies src to dst in pieces, through a temporary name.
function M.copy_file(src, dst)
  local from = assert(io.open(src, "rb"))
  local tmp = dst .. ".tmp." .. host.getpid()
  local to = assert(io.open(tmp, "wb"))
  while true do
    local block = from:read(1048576)
    if not block then break end
    to:write(block)
  end
  from:close()
  assert(to:close())
  assert(os.rename(tmp, dst))
end

function M.remove_tree(path)
  if host.kind(path) == "directory" then
    for _, name in ipairs(host.listdir(path) or {}) do M.remove_tree(path .. "/" .. name) end
  end
  os.remove(path)
end

-- Stores a cell's result and outputs. `artifacts` maps names to files to
-- keep with the entry. Errors (an uncacheable value) leave no entry.
function Store:save(key, value, outputs, artifacts)
  local final = self:entry(key)
  local tmp = final .. ".tmp." .. host.getpid()
  M.remove_tree(tmp)
  assert(host.mkdir_p(tmp .. "/artifacts"))
  local ok, err = pcall(function()
    assert(host.write_atomic(tmp .. "/value.bin", M.serialize(value, tmp)))
    assert(host.write_atomic(tmp .. "/outputs.bin", M.serialize(outputs)))
    for name, path in pairs(artifacts) do M.copy_file(path, tmp .. "/artifacts/" .. name) end
  end)
  if ok and not os.rename(tmp, final) and not self:has(key) then
    ok, err = false, "cannot move a cache entry into " .. final
  end
  M.remove_tree(tmp)
  if not ok then error(err, 0) end
end

-- Copies an entry's artifacts into `dir`.
function Store:restore_artifacts(key, dir)
  local from = self:entry(key) .. "/artifacts"
  for _, name in ipairs(host.listdir(from) or {}) do M.copy_file(from .. "/" .. name, dir .. "/" .. name) end
end

return M
