#!/usr/bin/env bash
# `moonforge serve` as its own process on loopback: 16 clients at once get
# the replies they get alone while RSS stays flat; a slow partial request is
# dropped, many idle connections do not stop service, a client that leaves a
# stream frees its slot; a full queue answers 429; the official openai
# client (when installed) chats, completes, streams and embeds; SIGTERM
# lets an in-flight request finish and exits 0. Servers bind 127.0.0.1,
# stop by themselves (--exit-after) and are killed by pid when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"

"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"

# Starts a server with the given options; sets $url and $pid.
start() { start_moonforge serve "$tmp/model" --port 0 --exit-after 120 "$@"; }

# --parallel 8: a step of at most 8 rows keeps f32 matmuls on one path, so
# batched greedy replies match single ones bit for bit (see generate.c).
start --parallel 8 --timeout 2 --name tiny
python3 tests/e2e/serve_client.py concurrency "$url" "$pid" 16 4
python3 tests/e2e/serve_client.py hostile "$url"
python3 tests/e2e/serve_openai.py "$url"

# SIGTERM while a request is in flight: it is answered, the server exits 0.
python3 tests/e2e/serve_client.py inflight "$url" "$tmp/sent" &
client=$!
for _ in $(seq 100); do [ -e "$tmp/sent" ] && break; sleep 0.02; done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "the server exited $status after SIGTERM"
wait "$client" || fail "the in-flight request was not answered"

start --parallel 1 --max-queue 1
python3 tests/e2e/serve_client.py queue "$url"
kill -INT "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "the server exited $status after SIGINT"

# A script that leaves its in-process server running still exits cleanly.
cat >"$tmp/leave.lua" <<'EOF'
local mf = require "moonforge"
local srv = mf.deploy.serve({ model = arg[1], port = 0 })
assert(mf.http.get_json(srv.url .. "/health").status == "ok")
EOF
"$MOONFORGE" exec "$tmp/leave.lua" "$tmp/model" || fail "a script that left its server running exited $?"

# A server that cannot start says why and exits 1.
status=0
"$MOONFORGE" serve "$tmp/model" --port 0 --ctx 100000 >"$tmp/bad" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a bad --ctx exited $status"
grep -q "exceeds the model's max_position_embeddings" "$tmp/bad" || fail "bad --ctx: $(cat "$tmp/bad")"
status=0
"$MOONFORGE" serve "$tmp/model" --port 0 --bogus 1 >"$tmp/bad" 2>&1 || status=$?
[ "$status" -eq 2 ] || fail "an unknown option exited $status"
echo "ok"
