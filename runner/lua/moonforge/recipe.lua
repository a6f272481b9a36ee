-- moonforge.recipe: what a recipe file declares, and loading one.
--
-- A recipe file builds a recipe and returns it:
--   local mf = require "moonforge"
--   local r = mf.recipe{ name = "hello", seed = 42, params = { n = 1000, noise = 0.1 } }
--   r:cell("make data", function(ctx) ... return rows end)
--   r:cell("stats", { uses = { "make data" } }, function(ctx, rows) ... end)
--   return r
--
-- Param types come from the defaults: "integer" (an integer-valued number),
-- "number", "string" or "boolean". A cell names the earlier cells whose
-- results it receives (by title or 1-based index), so the cells form a graph
-- that has no cycles by construction.
--
-- Mistakes in the declaration (a duplicate title, an unknown or later cell in
-- `uses`, a bad param default) raise an error positioned at the recipe line.
-- load(path) turns every way a recipe file can be wrong into one line of
-- text naming the file, and never a traceback of moonforge's own code.
local M = {}
local Recipe = {}
Recipe.__index = Recipe

local function param_type(v)
  local t = type(v)
  if t == "number" then
    return (v == math.floor(v) and v > -math.huge and v < math.huge) and "integer" or "number"
  end
  if t == "string" or t == "boolean" then return t end
  return nil
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Called as mf.recipe{...}; error level 2 is the recipe's line.
local function new_recipe(_, spec)
  if type(spec) ~= "table" then error("mf.recipe expects a table { name =, seed =, params = }", 2) end
  if type(spec.name) ~= "string" or not spec.name:find("^[%w][%w_.-]*$") then
    error("recipe name must be a word of letters, digits, '_', '-' or '.' (got " .. tostring(spec.name) .. ")", 2)
  end
  local seed = spec.seed or 0
  if type(seed) ~= "number" or seed < 0 or seed ~= math.floor(seed) or seed >= 2 ^ 53 then
    error("recipe seed must be a non-negative integer (got " .. tostring(spec.seed) .. ")", 2)
  end
  local params, types = {}, {}
  for name, default in pairs(spec.params or {}) do
    if type(name) ~= "string" or not name:find("^[%a_][%w_]*$") then
      error("param names must be identifiers (got " .. tostring(name) .. ")", 2)
    end
    types[name] = param_type(default)
    if not types[name] then
      error(string.format("param '%s' has a default of type %s; use a number, string or boolean", name,
        type(default)), 2)
    end
    params[name] = default
  end
  local source = debug.getinfo(2, "S").source
  return setmetatable({ name = spec.name, seed = seed, params = params, param_types = types,
    cells = {}, by_title = {}, source = source }, Recipe)
end

setmetatable(M, { __call = new_recipe })

function M.is_recipe(v) return getmetatable(v) == Recipe end

-- The index of the cell named by `which`: a title, or a 1-based index given
-- as a number or as digits. Returns nil and a message when there is none.
function Recipe:find_cell(which)
  local limit = #self.cells
  local i = tonumber(which)
  if i and i == math.floor(i) then
    if i >= 1 and i <= limit then return i end
  elseif self.by_title[which] and self.by_title[which] <= limit then
    return self.by_title[which]
  end
  local titles = {}
  for k = 1, limit do titles[k] = "'" .. self.cells[k].title .. "'" end
  return nil, string.format("no cell '%s' (cells: %s)", tostring(which),
    #titles > 0 and table.concat(titles, ", ") or "none")
end

-- r:cell(title, [{ uses = { ... } }], fn)
function Recipe:cell(title, opts, fn)
  if fn == nil then opts, fn = {}, opts end
  if type(title) ~= "string" or title == "" then error("a cell needs a title (a non-empty string)", 2) end
  if self.by_title[title] then error("duplicate cell title '" .. title .. "'", 2) end
  if type(opts) ~= "table" then error("cell '" .. title .. "': options must be a table { uses = {...} }", 2) end
  if type(fn) ~= "function" then error("cell '" .. title .. "' needs a function", 2) end
  local info = debug.getinfo(fn, "S")
  if info.source ~= self.source then
    error("cell '" .. title .. "': its function must be written in the recipe file", 2)
  end
  local uses = type(opts.uses) == "table" and opts.uses or { opts.uses }
  local inputs = {}
  for k, name in ipairs(uses) do
    local i, err = self:find_cell(name)
    if not i then error("cell '" .. title .. "' uses an unknown or later cell: " .. err, 2) end
    inputs[k] = i
  end
  local cell = { index = #self.cells + 1, title = title, fn = fn, inputs = inputs,
    first_line = info.linedefined, last_line = info.lastlinedefined }
  self.cells[cell.index] = cell
  self.by_title[title] = cell.index
  return self
end

-- The titles of the cells that cell i uses, in order.
function Recipe:uses_titles(i)
  local titles = {}
  for k, j in ipairs(self.cells[i].inputs) do titles[k] = self.cells[j].title end
  return titles
end

local function parse_value(text, want)
  if want == "string" then return text end
  if want == "boolean" then
    local b = ({ ["true"] = true, yes = true, ["1"] = true, ["false"] = false, no = false, ["0"] = false })[text]
    return b
  end
  local x = tonumber(text)
  if x == nil or x ~= x then return nil end
  if want == "integer" and param_type(x) ~= "integer" then return nil end
  return x
end

local function matches(value, want)
  local t = param_type(value)
  return t == want or (want == "number" and t == "integer")
end

-- The recipe's params with `overrides` applied: a table name -> value,
-- where a value is text from the command line (parsed to the param's type)
-- or already typed (from a stored manifest). Returns nil and a message for
-- an unknown name or a value of the wrong type.
function Recipe:resolve_params(overrides)
  local params = {}
  for name, v in pairs(self.params) do params[name] = v end
  for _, name in ipairs(sorted_keys(overrides)) do
    local want = self.param_types[name]
    if not want then
      local known = sorted_keys(self.params)
      return nil, string.format("unknown param '%s' (known: %s)", name,
        #known > 0 and table.concat(known, ", ") or "none; this recipe declares no params")
    end
    local v = overrides[name]
    if type(v) == "string" and want ~= "string" then v = parse_value(v, want) end
    if v == nil or not matches(v, want) then
      return nil, string.format("param '%s' expects %s %s, got '%s'", name,
        want == "integer" and "an" or "a", want, tostring(overrides[name]))
    end
    params[name] = v
  end
  return params
end

-- The first line of an error message, naming the file when Lua did not.
local function one_line(path, msg)
  local line = tostring(msg):match("^[^\n]*")
  if line:sub(1, #path) ~= path and not line:find("^%.%.%.") then line = path .. ": " .. line end
  return line
end

-- Loads and validates the recipe at `path`. Returns the recipe and the file's
-- text, or nil and a one-line message naming the file.
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot open recipe " .. path .. ": " .. (err:match(": (.*)$") or err) end
  local text = f:read("*a")
  f:close()
  local chunk, syntax = loadstring(text, "@" .. path)
  if not chunk then return nil, one_line(path, syntax) end
  local ok, result = pcall(chunk)
  if not ok then return nil, one_line(path, result) end
  if not M.is_recipe(result) then
    return nil, path .. ": does not return a recipe (end the file with `return r`, r = mf.recipe{...})"
  end
  if #result.cells == 0 then return nil, path .. ": the recipe has no cells" end
  return result, text
end

return M
