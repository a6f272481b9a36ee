#!/usr/bin/env bash
# Runs stopped from outside.
# - SIGINT in the middle of a cell: the cell and the run are "interrupted",
#   the files are written, exit status 130; SIGTERM: 143.
# - SIGKILL in the middle of a run of many short cells: every JSON file left
#   in the run folder parses, every metrics line too, `moonforge runs` calls
#   the run "died", and `run --from` the first unfinished cell completes it.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache"
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

cat >busy.lua <<'EOF'
-- Cells that keep the processor busy for MF_TEST_SPIN seconds each (but
-- the first), in five parts, printing and logging a metric after each.
local mf = require "moonforge"
local host = require "moonforge.host"
local r = mf.recipe{ name = "busy" }
local spin = tonumber(os.getenv("MF_TEST_SPIN") or "0") / 5
for i = 1, 30 do
  r:cell("step " .. i, function(ctx)
    for k = 1, 5 do
      local stop = host.clock() + (i > 1 and spin or 0)
      while host.clock() < stop do end
      print("step", i, k)
      ctx:metric("work", i * 10 + k, i * 10 + k)
    end
    return i
  end)
end
return r
EOF

cat >check.lua <<'EOF'
-- Checks that every file of the run folder arg[1] that should be JSON is,
-- skips temporary files, and prints the first cell that did not succeed.
local json = require "moonforge.json"
local host = require "moonforge.host"
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function check(path)
  if path:find("%.tmp%.%d+$") then return end
  if path:find("%.json$") or path:find("%.ipynb$") then
    assert(json.decode(read(path)), "does not parse: " .. path)
  elseif path:find("%.jsonl$") then
    for line in read(path):gmatch("[^\n]+") do assert(json.decode(line), "bad line in " .. path) end
  end
end
local function walk(dir)
  for _, name in ipairs(host.listdir(dir)) do
    local path = dir .. "/" .. name
    if host.kind(path) == "directory" then walk(path) else check(path) end
  end
end
walk(arg[1])
local manifest = json.decode(read(arg[1] .. "/manifest.json"))
for _, c in ipairs(manifest.cells) do
  if c.status ~= "success" then
    print(manifest.status .. " " .. c.index .. " " .. c.status)
    return 0
  end
end
print(manifest.status)
EOF

# Waits until the run has finished `cells` cells; prints its folder.
wait_cells() {
  for _ in $(seq 100); do
    for f in runs/*/cells/"$(printf %02d "$1")"-*.json; do
      if [ -e "$f" ] && grep -q '"status": "success"' "$f"; then
        dirname "$(dirname "$f")"
        return
      fi
    done
    sleep 0.05
  done
  fail "the run did not get to cell $1"
}

for signal in INT TERM; do
  rm -rf runs
  MF_TEST_SPIN=10 "$MOONFORGE" run busy.lua >out.txt 2>&1 &
  pid=$!
  dir=$(wait_cells 1)
  # Signal only once cell 2 has started, however loaded the machine is.
  for _ in $(seq 200); do grep -q '^\[2/30\] step 2' out.txt && break; sleep 0.05; done
  sleep 0.2
  kill -"$signal" "$pid"
  set +e
  wait "$pid"
  status=$?
  set -e
  pid=
  want=$([ "$signal" = INT ] && echo 130 || echo 143)
  [ "$status" = "$want" ] || { cat out.txt; fail "SIG$signal: exit status $status, expected $want"; }
  [ "$("$MOONFORGE" exec check.lua "$dir")" = "interrupted 2 interrupted" ] ||
    fail "SIG$signal: $("$MOONFORGE" exec check.lua "$dir")"
  grep -q '"status": "not run"' "$dir/cells/03-step-3.json" || fail "SIG$signal: cell 3 ran"
done

rm -rf runs
MF_TEST_SPIN=0.015 "$MOONFORGE" run busy.lua >out.txt 2>&1 &
pid=$!
dir=$(wait_cells 3)
sleep 0.1
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
state=$("$MOONFORGE" exec check.lua "$dir") || fail "after kill -9: $state"
case "$state" in
  "running "*) ;;
  *) fail "killed run: manifest says '$state'" ;;
esac
"$MOONFORGE" runs | grep -q "^$(basename "$dir") .* died " || { "$MOONFORGE" runs; fail "runs does not say died"; }
next=$(echo "$state" | cut -d' ' -f2)
MF_TEST_SPIN=0 "$MOONFORGE" run busy.lua --from "$next" >out.txt 2>&1 || { cat out.txt; fail "run --from $next"; }
resumed=$(sed -n '1s/^run [^ ]* (\(.*\))$/\1/p' out.txt)
[ "$("$MOONFORGE" exec check.lua "$resumed")" = success ] || fail "the resumed run did not complete"
[ "$(grep -c '(cached)$' out.txt)" = "$((next - 1))" ] || fail "the resumed run did not reuse $((next - 1)) cells"
echo "ok"
