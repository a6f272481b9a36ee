#!/usr/bin/env bash
# `moonforge chat` with stdin a pipe: against a local model its replies are
# exactly model:chat's for the same conversation (history, /system,
# /reset); against an OpenAI-compatible endpoint (tests/e2e/
# chat_stub_server.py, which says back what it got) it sends the key,
# the model named in URL#NAME or found in /v1/models, the system prompt
# and the history, and streams; SIGINT during a reply stops the reply and
# not the program; errors exit 1 with the reason, a bad command line 2.
# The stub picks a free loopback port, stops by itself, and is killed by
# pid when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"

# Starts the stub with the given options; sets $stub and $stub_pid.
start_stub() {
  start_port_server tests/e2e/chat_stub_server.py --timeout 60 "$@"
  stub_pid=$server_pid
  stub="http://127.0.0.1:$port"
}

# ---- a local model: the replies of model:chat, turn by turn ----
"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"
printf 'Hello there\n/system Be brief.\nWhat is two and two?\n\n/reset\n/bogus\nHi\n' >"$tmp/turns"
"$MOONFORGE" chat "$tmp/model" --max-tokens 12 <"$tmp/turns" >"$tmp/local.out" 2>"$tmp/local.err" ||
  fail "chat with a local model exited $?: $(cat "$tmp/local.err")"
cat >"$tmp/expect.lua" <<'EOF'
local mf = require "moonforge"
local model, tok = mf.model.load(arg[1]), mf.tokenizer.load(arg[1])
local opts = { temperature = 0.7, max_tokens = 12 }
local function turn(messages, text)
  messages[#messages + 1] = { role = "user", content = text }
  local reply = model:chat(tok, messages, opts)
  messages[#messages + 1] = { role = "assistant", content = reply }
  io.write(reply, "\n")
end
local history = {}
turn(history, "Hello there")
local with_system = { { role = "system", content = "Be brief." } }
for _, m in ipairs(history) do with_system[#with_system + 1] = m end
turn(with_system, "What is two and two?")
turn({ { role = "system", content = "Be brief." } }, "Hi")
EOF
"$MOONFORGE" exec "$tmp/expect.lua" "$tmp/model" >"$tmp/local.expect"
cmp -s "$tmp/local.out" "$tmp/local.expect" || fail "local replies differ from model:chat's:
$(diff <(od -c "$tmp/local.out") <(od -c "$tmp/local.expect") | head -20)"
[ "$(grep -c '^\[12 tokens, ' "$tmp/local.err")" -eq 3 ] || fail "no token counts on stderr: $(cat "$tmp/local.err")"
grep -q "unknown command /bogus" "$tmp/local.err" || fail "/bogus was not refused: $(cat "$tmp/local.err")"

# ---- an OpenAI-compatible endpoint ----
start_stub
printf 'first\n/system Be terse.\nsecond\n/reset\nthird\n/exit\nnever sent\n' |
  OPENAI_API_KEY=k1 "$MOONFORGE" chat "$stub/v1" --max-tokens 3 >"$tmp/remote.out" 2>"$tmp/remote.err" ||
  fail "chat with an endpoint exited $?: $(cat "$tmp/remote.err")"
cat >"$tmp/remote.expect" <<'EOF'
auth=Bearer k1 system=none turns=1 said=first w1 w2
auth=Bearer k1 system=Be terse. turns=4 said=second w1 w2
auth=Bearer k1 system=Be terse. turns=2 said=third w1 w2
EOF
diff "$tmp/remote.expect" "$tmp/remote.out" || fail "the endpoint got other conversations"
[ "$(grep -c '^\[3 tokens, ' "$tmp/remote.err")" -eq 3 ] || fail "no usage on stderr: $(cat "$tmp/remote.err")"

echo hi | MOONFORGE_API_KEY=k2 "$MOONFORGE" chat "$stub#stub" >"$tmp/named.out" 2>/dev/null || fail "URL#NAME failed"
grep -q "^auth=Bearer k2 system=none turns=1 said=hi" "$tmp/named.out" || fail "URL#NAME: $(cat "$tmp/named.out")"

status=0
echo hi | "$MOONFORGE" chat "$stub" --model nope >"$tmp/nope.out" 2>"$tmp/nope.err" || status=$?
[ "$status" -eq 1 ] || fail "an unknown model exited $status"
grep -q "HTTP 404: The model 'nope' does not exist" "$tmp/nope.err" || fail "unknown model: $(cat "$tmp/nope.err")"

# ---- SIGINT during a reply: the reply stops, the chat goes on ----
start_stub --delay 0.05
mkfifo "$tmp/in"
"$MOONFORGE" chat "$stub" --max-tokens 400 <"$tmp/in" >"$tmp/int.out" 2>"$tmp/int.err" &
chat_pid=$!
pids+=("$chat_pid")
exec 3>"$tmp/in"
echo "slow one" >&3
for _ in $(seq 100); do grep -q " w5" "$tmp/int.out" && break; sleep 0.05; done
grep -q " w5" "$tmp/int.out" || fail "the reply did not stream: $(cat "$tmp/int.out" "$tmp/int.err")"
kill -INT "$chat_pid"
for _ in $(seq 100); do grep -q '^\[stopped\]' "$tmp/int.err" && break; sleep 0.05; done
grep -q '^\[stopped\]' "$tmp/int.err" || fail "SIGINT did not stop the reply: $(cat "$tmp/int.err")"
kill -0 "$chat_pid" 2>/dev/null || fail "SIGINT ended the chat"
grep -q " w399" "$tmp/int.out" && fail "the reply ran to its end despite SIGINT"
printf '/system x\nagain\n/exit\n' >&3
exec 3>&-
status=0
wait "$chat_pid" || status=$?
[ "$status" -eq 0 ] || fail "the chat exited $status after an interrupted reply: $(cat "$tmp/int.err")"
# The stopped reply stays in the history: system, user, assistant, user.
grep -q "^auth=none system=x turns=4 said=again" "$tmp/int.out" || fail "after SIGINT: $(cat "$tmp/int.out")"

# ---- errors ----
status=0
echo hi | "$MOONFORGE" chat "$tmp/no-such-model" >/dev/null 2>"$tmp/err" || status=$?
[ "$status" -eq 1 ] && grep -q "no-such-model" "$tmp/err" || fail "a missing model exited $status: $(cat "$tmp/err")"
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
status=0
echo hi | "$MOONFORGE" chat "http://127.0.0.1:$closed" >/dev/null 2>"$tmp/err" || status=$?
[ "$status" -eq 1 ] && grep -q "cannot reach" "$tmp/err" || fail "a closed port exited $status: $(cat "$tmp/err")"
for bad in "--temperature x" "--max-tokens 0" "--bogus 1" ""; do
  status=0
  # shellcheck disable=SC2086
  "$MOONFORGE" chat $( [ -n "$bad" ] && echo "$tmp/model" ) $bad </dev/null >/dev/null 2>&1 || status=$?
  [ "$status" -eq 2 ] || fail "'chat $bad' exited $status, not 2"
done
echo "ok"
