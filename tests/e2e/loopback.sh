# Sourced by end-to-end tests that start servers on 127.0.0.1. Sets root,
# MOONFORGE, a temporary folder $tmp (with its own cache), fail(),
# start_moonforge(), start_port_server(), replay_exported_cell() and an
# array pids whose processes are killed, by pid, when the test ends. Proxy
# settings and API keys from the environment are dropped so requests stay
# on loopback and carry only what the test gives them.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
root=$(pwd)
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY OPENAI_API_KEY MOONFORGE_API_KEY
export LUA_PATH="$root/tests/lua/?.lua;;"
export MOONFORGE_CACHE="$tmp/cache"

# Runs `moonforge ARGS...` in the background (the caller gives --port 0 and
# --exit-after) and waits until it prints its URL; sets $url (up to the
# port, no slash) and $pid, and adds the pid to pids.
start_moonforge() {
  local log="$tmp/$1.$RANDOM.log"
  "$MOONFORGE" "$@" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  url=
  for _ in $(seq 200); do
    url=$(grep -o -m 1 'http://127.0.0.1:[0-9]*' "$log" 2>/dev/null || true)
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2>/dev/null || fail "moonforge $1 did not start: $(cat "$log")"
    sleep 0.05
  done
  fail "moonforge $1 did not print its URL"
}

# Runs a recipe cell the Playground exported ($1) with `moonforge run` and
# checks that its output holds the first reply of the page's first pane
# ($2: the panes.json playground_browser.py wrote) exactly $3 times.
replay_exported_cell() {
  {
    echo 'local mf = require "moonforge"'
    echo 'local r = mf.recipe{ name = "playground_replay", seed = 1 }'
    cat "$1"
    echo 'return r'
  } >"$tmp/replay.lua"
  "$MOONFORGE" run "$tmp/replay.lua" --runs "$tmp/runs" >"$tmp/replay.out" 2>&1 ||
    fail "the exported cell failed: $(cat "$tmp/replay.out")"
  python3 - "$2" "$tmp/replay.out" "$3" <<'EOF' || fail "the replay printed other replies: $(cat "$tmp/replay.out")"
import json, sys
# The page shows bytes that are not UTF-8 as U+FFFD and the terminal gets
# them raw: compare the printable ASCII of both.
ascii = lambda s: "".join(c for c in s if " " <= c <= "~")
reply = ascii(json.load(open(sys.argv[1]))[0]["texts"][0])
printed = ascii(open(sys.argv[2], "rb").read().decode("utf-8", "replace"))
assert reply and printed.count(reply) == int(sys.argv[3]), (reply, printed)
EOF
}

# Runs `python3 SCRIPT ARGS...`, a loopback server that prints its port as
# its first line, in the background and waits for the port; sets $port and
# $server_pid, and adds the pid to pids.
start_port_server() {
  local log="$tmp/port.$RANDOM"
  python3 "$@" >"$log" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 200); do [ -s "$log" ] && break; sleep 0.05; done
  port=$(head -n 1 "$log" 2>/dev/null || true)
  [ -n "$port" ] || fail "$1 did not start"
}
