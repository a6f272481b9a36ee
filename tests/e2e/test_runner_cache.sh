#!/usr/bin/env bash
# Caching across runs of recipes/hello.lua: a second run is served from the
# cache with every output replayed; editing one cell re-runs it and the cells
# that use it, and nothing else; editing shared code or a param re-runs
# everything, as does --no-cache; --set is checked against the params.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=${MOONFORGE:-build/moonforge}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache"
fail() { echo "FAIL: $*" >&2; exit 1; }

cp recipes/hello.lua "$tmp/hello.lua"
small=(--set n=200 --set epochs=3)

# Runs the copy of hello.lua; prints the new run's folder (from the first
# line of the output: "run ID (FOLDER)").
run() {
  "$MOONFORGE" run "$tmp/hello.lua" --runs "$tmp/runs" "$@" >"$tmp/out.txt" 2>"$tmp/err.txt" ||
    { cat "$tmp/out.txt" "$tmp/err.txt"; fail "run $*"; }
  sed -n '1s/^run [^ ]* (\(.*\))$/\1/p' "$tmp/out.txt"
}

cat >"$tmp/hits.lua" <<'EOF'
-- Prints the indices of the cells of a run that were cache hits.
local json = require "moonforge.json"
local f = assert(io.open(arg[1] .. "/manifest.json"))
local manifest = assert(json.decode(f:read("*a")))
f:close()
assert(manifest.status == "success", "run status " .. tostring(manifest.status))
local hits = {}
for _, c in ipairs(manifest.cells) do
  assert(c.status == "success", c.title .. ": " .. c.status)
  if c.cache_hit then hits[#hits + 1] = c.index end
end
print(table.concat(hits, " "))
EOF
expect_hits() {
  got=$("$MOONFORGE" exec "$tmp/hits.lua" "$1")
  [ "$got" = "$2" ] || fail "$3: cache hits '$got', expected '$2'"
}

first=$(run "${small[@]}")
expect_hits "$first" "" "first run"
second=$(run "${small[@]}")
expect_hits "$second" "1 2 3 4" "unchanged recipe"
[ "$(grep -c '(cached)$' "$tmp/out.txt")" = 4 ] || fail "terminal does not mark the cached cells"

# A cached run replays the outputs: same metrics, same kinds of output.
cat >"$tmp/same.lua" <<'EOF'
local json = require "moonforge.json"
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function metrics(dir)
  local out = {}
  for line in read(dir .. "/metrics.jsonl"):gmatch("[^\n]+") do
    local m = json.decode(line)
    out[#out + 1] = string.format("%s %s %.17g", m.name, tostring(m.step), m.value)
  end
  return table.concat(out, "\n")
end
local function kinds(dir)
  local out = {}
  for _, c in ipairs(json.decode(read(dir .. "/manifest.json")).cells) do
    for _, o in ipairs(json.decode(read(dir .. "/" .. c.file)).outputs) do out[#out + 1] = o.kind end
  end
  return table.concat(out, " ")
end
assert(metrics(arg[1]) == metrics(arg[2]), "replayed metrics differ")
assert(kinds(arg[1]) == kinds(arg[2]), "replayed outputs differ: " .. kinds(arg[1]) .. " / " .. kinds(arg[2]))
assert(read(arg[1] .. "/artifacts/fit.csv") == read(arg[2] .. "/artifacts/fit.csv"), "artifact not restored")
EOF
"$MOONFORGE" exec "$tmp/same.lua" "$first" "$second" || fail "cache hits do not replay outputs"
for title in "make data" "least squares" "sgd" "compare" "<svg"; do
  grep -q "$title" "$second/report.html" || fail "report lacks '$title'"
done

# Edit the sgd cell: it and compare (which uses it) re-run.
sed -i 's/local w, b = 0, 0$/local w, b = 0, 0 -- start from zero/' "$tmp/hello.lua"
grep -q "start from zero" "$tmp/hello.lua" || fail "the edit did not apply"
edited=$(run "${small[@]}")
expect_hits "$edited" "1 2" "sgd edited"
edited=$(run "${small[@]}")
expect_hits "$edited" "1 2 3 4" "sgd edited, second run"

# Edit the shared helper: every cell re-runs.
sed -i 's/local s = 0$/local s = 0 -- running sum/' "$tmp/hello.lua"
grep -q "running sum" "$tmp/hello.lua" || fail "the helper edit did not apply"
expect_hits "$(run "${small[@]}")" "" "helper edited"

expect_hits "$(run "${small[@]}" --set noise=0.5)" "" "param changed"
expect_hits "$(run "${small[@]}" --no-cache)" "" "--no-cache"

# --set is checked before any run folder is made.
count=$(ls "$tmp/runs" | wc -l)
set +e
"$MOONFORGE" run "$tmp/hello.lua" --runs "$tmp/runs" --set nn=3 2>"$tmp/err.txt"
status=$?
set -e
[ "$status" = 2 ] || fail "unknown param: exit $status"
grep -q "unknown param 'nn' (known: epochs, intercept, lr, n, noise, slope)" "$tmp/err.txt" ||
  fail "unknown param message: $(cat "$tmp/err.txt")"
set +e
"$MOONFORGE" run "$tmp/hello.lua" --runs "$tmp/runs" --set n=lots 2>"$tmp/err.txt"
status=$?
set -e
[ "$status" = 2 ] || fail "bad value: exit $status"
grep -q "param 'n' expects an integer, got 'lots'" "$tmp/err.txt" || fail "bad value message: $(cat "$tmp/err.txt")"
[ "$(ls "$tmp/runs" | wc -l)" = "$count" ] || fail "a refused run left a run folder"
echo "ok"
