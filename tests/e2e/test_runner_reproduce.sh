#!/usr/bin/env bash
# reproduce, show and runs.
# - hello.lua is deterministic: reproducing a run matches bit for bit (exit 0).
# - A recipe logging the wall clock does not: reproduce exits non-zero with
#   a mismatch line, unless --tolerance covers the difference; a metric only
#   one of the runs logged is a mismatch.
# - show prints the cells with their status, outputs and metrics; runs lists
#   the runs with their status and key metrics.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
recipes=$(pwd)/recipes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MOONFORGE_CACHE="$tmp/cache"
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

# Runs a recipe; prints the run id (from the first line: "run ID (FOLDER)").
run() {
  "$MOONFORGE" run "$@" >out.txt 2>err.txt || { cat out.txt err.txt; fail "run $*"; }
  sed -n '1s/^run \([^ ]*\) .*/\1/p' out.txt
}

# Reproduces a run; sets $status and leaves the output in repro.txt.
reproduce() {
  set +e
  "$MOONFORGE" reproduce "$@" >repro.txt 2>&1
  status=$?
  set -e
}

hello=$(run "$recipes/hello.lua" --set n=300 --set epochs=4 --set noise=0.2)
reproduce "$hello"
[ "$status" = 0 ] || { cat repro.txt; fail "hello.lua does not reproduce"; }
grep -q "^sgd/loss *4 .* yes$" repro.txt || fail "no comparison row for sgd/loss at step 4"
grep -q "match (bit for bit)" repro.txt || fail "no summary line"
if grep -q " NO$" repro.txt; then fail "a mismatch reported for a deterministic recipe"; fi
grep -q "n=300" <("$MOONFORGE" show "$(ls -d runs/hello-* | tail -n 1)") || fail "reproduce lost the --set params"

cat >clock.lua <<'EOF'
local mf = require "moonforge"
local host = require "moonforge.host"
local r = mf.recipe{ name = "clock" }
r:cell("measure", function(ctx)
  ctx:metric("steady", 1.5, 1)
  ctx:metric("wall", 1 + (host.time() % 1) * 1e-9, 1)
  ctx:metric("speed", host.time(), 1, { timing = true })
  if os.getenv("MF_TEST_EXTRA") then ctx:metric("extra", 1) end
end)
return r
EOF
clock=$(run clock.lua)
reproduce "$clock"
[ "$status" = 1 ] || { cat repro.txt; fail "a nondeterministic metric reproduced (exit $status)"; }
grep -q "^wall .* NO$" repro.txt || { cat repro.txt; fail "no mismatch line for the wall metric"; }
grep -q "^steady .* yes$" repro.txt || fail "the steady metric did not match"
if grep -q "^speed " repro.txt; then fail "a timing metric was compared"; fi
reproduce "$clock" --tolerance 1e-6
[ "$status" = 0 ] || { cat repro.txt; fail "--tolerance 1e-6 did not cover a 1e-9 difference"; }
MF_TEST_EXTRA=1 reproduce "$clock" --tolerance 1e-6
[ "$status" = 1 ] || fail "a metric missing from the original run matched"
grep -q "^extra .*(none) .* NO$" repro.txt || { cat repro.txt; fail "no mismatch line for the extra metric"; }

"$MOONFORGE" show "$hello" >show.txt || fail "show $hello"
for want in "## 1. make data  \[success" "## 4. compare" "drew 300 points" "least squares" \
  "\[plot: SGD loss\]" "\[artifact: artifacts/fit.csv\]" "sgd/loss *4 *4"; do
  grep -q "$want" show.txt || { cat show.txt; fail "show lacks '$want'"; }
done
"$MOONFORGE" show "runs/$clock" >/dev/null || fail "show does not take a run folder"
set +e
"$MOONFORGE" show nosuchrun 2>err.txt
status=$?
set -e
[ "$status" = 2 ] && grep -q "no run 'nosuchrun'" err.txt || fail "show of an unknown run: $(cat err.txt)"

"$MOONFORGE" runs >runs.txt
[ "$(grep -c '^hello-.* success ' runs.txt)" = 2 ] || { cat runs.txt; fail "runs does not list both hello runs"; }
grep -q "^$hello .*sgd/loss=" runs.txt || { cat runs.txt; fail "runs lacks key metrics"; }
"$MOONFORGE" runs "$tmp/empty" | grep -q "no runs" || fail "runs of an empty folder"
echo "ok"
