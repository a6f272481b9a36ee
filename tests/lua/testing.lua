-- A small test helper for Lua tests run by `moonforge exec`:
--   local T = require "testing"
--   T.test("name", function() T.eq(a, b) end)
--   return T.done()     -- exit status: 0 when every test passed
local T = {}
local passed, failed = 0, 0

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function T.eq(got, want, what)
  if got ~= want then
    error(string.format("%sexpected %s, got %s", what and (what .. ": ") or "", fmt(want), fmt(got)), 2)
  end
end

function T.near(got, want, rel, what)
  local scale = math.max(math.abs(want), 1e-30)
  if not (math.abs(got - want) <= rel * scale) then
    error(string.format("%sexpected %.9g within %g relative, got %.9g", what and (what .. ": ") or "",
      want, rel, got), 2)
  end
end

function T.truthy(v, what)
  if not v then error((what or "expected a true value") .. ", got " .. fmt(v), 2) end
  return v
end

-- Asserts that fn raises an error whose message contains `pattern` (plain).
function T.raises(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error containing " .. fmt(pattern), 2) end
  if pattern and not tostring(err):find(pattern, 1, true) then
    error("expected an error containing " .. fmt(pattern) .. ", got " .. fmt(tostring(err)), 2)
  end
  return tostring(err)
end

function T.test(name, fn)
  local ok, err = xpcall(fn, function(e) return debug.traceback(tostring(e), 2) end)
  if ok then
    passed = passed + 1
    print("ok   " .. name)
  else
    failed = failed + 1
    print("FAIL " .. name .. "\n" .. err)
  end
end

-- The whole file at path (an error when it cannot be read).
function T.read(path)
  return assert(require("moonforge.host").read_file(path))
end

-- A fresh empty folder under the build's temporary area.
function T.tmpdir(tag)
  local base = os.getenv("TMPDIR") or "/tmp"
  local host = require "moonforge.host"
  local dir = string.format("%s/mf-test-%s-%d-%d", base, tag or "t", host.getpid(), math.random(1e9))
  assert(host.mkdir_p(dir))
  return dir
end

function T.done()
  print(string.format("%d passed, %d failed", passed, failed))
  return failed == 0 and 0 or 1
end

return T
