#!/usr/bin/env bash
# Recipes that are wrong, and cells that fail.
# - A wrong recipe (syntax error, missing file, no recipe returned, unknown or
#   later cell in `uses`, duplicate title) is one line on stderr naming the
#   file, exit status 2, and no run folder.
# - A failing cell prints its error at the recipe's file:line with a
#   traceback free of moonforge's own frames, marks the run failed, keeps
#   the earlier cells' outputs; --from resumes from it and --only runs one
#   cell, taking what they need from the cache.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache"
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

head='local r = require("moonforge").recipe{ name = "bad" }'
printf '%s\nr:cell("a", function(ctx) end\nreturn r\n' "$head" >syntax.lua
printf '%s\nr:cell("a", function(ctx) end)\nreturn 42\n' "$head" >noreturn.lua
printf '%s\nr:cell("a", { uses = { "nothing" } }, function(ctx) end)\nreturn r\n' "$head" >unknown.lua
printf '%s\nr:cell("a", function(ctx) end)\nr:cell("a", function(ctx) end)\nreturn r\n' "$head" >duplicate.lua
printf '%s\nr:cell("a", { uses = { "b" } }, function(ctx) end)\nr:cell("b", { uses = { "a" } }, function(ctx) end)\nreturn r\n' \
  "$head" >forward.lua

# recipe, expected text in the message
cases=(
  "syntax.lua|syntax.lua:3: ')' expected"
  "missing.lua|cannot open recipe missing.lua"
  "noreturn.lua|noreturn.lua: does not return a recipe"
  "unknown.lua|unknown.lua:2: cell 'a' uses an unknown or later cell: no cell 'nothing'"
  "duplicate.lua|duplicate.lua:3: duplicate cell title 'a'"
  "forward.lua|forward.lua:2: cell 'a' uses an unknown or later cell: no cell 'b'"
)
for c in "${cases[@]}"; do
  recipe=${c%%|*}
  want=${c#*|}
  set +e
  "$MOONFORGE" run "$recipe" >out.txt 2>err.txt
  status=$?
  set -e
  [ "$status" = 2 ] || fail "$recipe: exit status $status, expected 2"
  [ "$(wc -l <err.txt)" = 1 ] || fail "$recipe: not one line: $(cat err.txt)"
  grep -qF "$want" err.txt || fail "$recipe: '$(cat err.txt)' lacks '$want'"
  [ ! -e runs ] || fail "$recipe: left a run folder"
done

cat >flaky.lua <<'EOF'
local mf = require "moonforge"
local r = mf.recipe{ name = "flaky", seed = 3, params = { n = 4 } }

local function check(x)
  if os.getenv("MF_TEST_FAIL") then error("cell b refuses " .. x) end
  return x
end

r:cell("a", function(ctx)
  print("hello from a")
  ctx:metric("a/n", ctx.params.n)
  return ctx.params.n
end)
r:cell("b", { uses = { "a" } }, function(ctx, n)
  print("b starts")
  return check(n) * 2
end)
r:cell("c", { uses = { "b" } }, function(ctx, m)
  ctx:metric("c/m", m)
  return m + 1
end)
return r
EOF

cat >state.lua <<'EOF'
-- Prints "<run status> <cell>:<status>[:cached] ..." of the newest run in
-- runs/, after checking that every JSON file in it parses.
local json = require "moonforge.json"
local host = require "moonforge.host"
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local dir, manifest
for _, name in ipairs(host.listdir("runs")) do
  local m = assert(json.decode(read("runs/" .. name .. "/manifest.json")))
  if not manifest or m.started > manifest.started then dir, manifest = "runs/" .. name, m end
end
assert(json.decode(read(dir .. "/notebook.ipynb")), "notebook.ipynb")
local parts = { manifest.status }
for _, c in ipairs(manifest.cells) do
  parts[#parts + 1] = c.title .. ":" .. c.status .. (c.cache_hit and ":cached" or "")
  local cell = assert(json.decode(read(dir .. "/" .. c.file)), c.file)
  for _, o in ipairs(cell.outputs) do
    if o.kind == "text" and arg[1] == "text" then io.stderr:write(c.title, ": ", o.text) end
  end
end
print(table.concat(parts, " "))
EOF
state() { "$MOONFORGE" exec state.lua "$@"; }

set +e
MF_TEST_FAIL=1 "$MOONFORGE" run flaky.lua >out.txt 2>err.txt
status=$?
set -e
[ "$status" = 1 ] || fail "failing cell: exit status $status"
grep -q "cell 2 'b' failed: flaky.lua:5: cell b refuses 4" err.txt || fail "no error at file:line: $(cat err.txt)"
grep -q "stack traceback:" err.txt || fail "no traceback"
grep -q "flaky.lua:16: in function <flaky.lua:14>" err.txt || fail "traceback lacks the cell's frame"
if grep -q "runner/lua" err.txt; then fail "traceback shows moonforge's frames: $(cat err.txt)"; fi
[ "$(state text 2>texts.txt)" = "failed a:success b:failed c:not run" ] || fail "after failure: $(state)"
grep -q "^a: hello from a" texts.txt || fail "the first cell's output was not kept"
grep -q "^b: b starts" texts.txt || fail "the failed cell's output was not kept"

# An error raised inside moonforge's own code is still shown at the recipe line.
printf '%s\nr:cell("a", function(ctx)\n  ctx:metric("m", "high")\nend)\nreturn r\n' "$head" >misuse.lua
set +e
"$MOONFORGE" run misuse.lua >out.txt 2>err.txt
status=$?
set -e
[ "$status" = 1 ] || fail "misuse: exit status $status"
grep -q "misuse.lua:3: ctx:metric('m'): the value must be a number, got string" err.txt ||
  fail "misuse: $(cat err.txt)"
grep -q "misuse.lua:3: in function <misuse.lua:2>" err.txt || fail "misuse: no recipe frame: $(cat err.txt)"
if grep -q "runner/lua" err.txt; then fail "misuse: traceback shows moonforge's frames: $(cat err.txt)"; fi

"$MOONFORGE" run flaky.lua --from b >out.txt 2>err.txt || fail "--from b: $(cat err.txt)"
[ "$(state)" = "success a:success:cached b:success c:success" ] || fail "after --from: $(state)"
"$MOONFORGE" run flaky.lua --only 3 >out.txt 2>err.txt || fail "--only 3: $(cat err.txt)"
[ "$(state)" = "success a:not run b:success:cached c:success" ] || fail "after --only: $(state)"

set +e
"$MOONFORGE" run flaky.lua --from c --set n=5 >out.txt 2>err.txt
status=$?
set -e
[ "$status" = 2 ] || fail "--from with uncached cells: exit status $status"
grep -q "cell 1 'a' is not in the cache" err.txt || fail "--from does not name the missing cell: $(cat err.txt)"
set +e
"$MOONFORGE" run flaky.lua --from nope >out.txt 2>err.txt
status=$?
set -e
[ "$status" = 2 ] || fail "--from an unknown cell: exit status $status"
grep -q "no cell 'nope' (cells: 'a', 'b', 'c')" err.txt || fail "unknown --from cell: $(cat err.txt)"
echo "ok"
