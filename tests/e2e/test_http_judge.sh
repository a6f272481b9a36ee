#!/usr/bin/env bash
# mf.http and mf.eval.judge against tests/e2e/fake_openai.py on loopback:
# JSON replies, OpenAI-shaped errors with their status, retries of a 503
# (and none of a 400), a reply that is not JSON, timeouts, streaming, an
# unreachable port, and judging end to end from a script and from a recipe.
# The server picks a free port, prints it, stops by itself after a minute,
# and is killed by pid when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"

start_port_server tests/e2e/fake_openai.py --timeout 60 --key test-key
# A port that was free a moment ago: nothing listens there.
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export FAKE_URL="http://127.0.0.1:$port" CLOSED_URL="http://127.0.0.1:$closed"

cat >"$tmp/check.lua" <<'EOF'
local T = require "testing"
local mf = require "moonforge"
local http, eval = mf.http, mf.eval
local url, closed = os.getenv("FAKE_URL"), os.getenv("CLOSED_URL")
local fast = { retries = 2, backoff = 0.05, timeout = 5 }

T.test("post_json sends JSON with its headers and decodes the reply", function()
  local r = http.post_json(url .. "/echo", { model = "m", n = 3 }, { api_key = "k1", headers = { ["X-Team"] = "nlp" } })
  T.eq(r.json.model, "m")
  T.eq(r.json.n, 3)
  T.eq(r.headers.authorization, "Bearer k1")
  T.eq(r.headers["x-team"], "nlp")
  T.eq(r.headers["content-type"], "application/json")
end)

T.test("a 4xx is an error with the status and the server's message, not retried", function()
  local t0 = mf.host.clock()
  local err = T.raises(function() http.post_json(url .. "/bad", {}, { retries = 2, backoff = 1 }) end,
    "POST " .. url .. "/bad: HTTP 400: The model 'nope' does not exist")
  T.truthy(not err:find("attempts"), err)
  T.truthy(mf.host.clock() - t0 < 0.9, "no backoff for a 400")
end)

T.test("a 503 is retried, and reported after the last attempt", function()
  T.eq(http.post_json(url .. "/flaky/a", {}, fast).attempt, 2)
  T.raises(function() http.post_json(url .. "/down", {}, fast) end,
    "HTTP 503: the service is down (after 3 attempts)")
end)

T.test("a 200 that is not JSON is an error quoting it", function()
  T.raises(function() http.post_json(url .. "/malformed", {}, fast) end, "HTTP 200 reply is not JSON")
end)

T.test("get_json, and request returning any status", function()
  T.eq(http.get_json(url .. "/v1/models").data[1].id, "fake-judge")
  local status, text = http.request("GET", url .. "/nowhere")
  T.eq(status, 404)
  T.truthy(text:find("no route GET /nowhere", 1, true), text)
end)

T.test("a request that takes too long times out", function()
  T.raises(function() http.post_json(url .. "/slow", {}, { retries = 0, timeout = 0.2 }) end,
    "cannot reach " .. url .. "/slow")
end)

T.test("an unreachable server is a clear error", function()
  T.raises(function() http.post_json(closed .. "/v1/chat/completions", {}, { retries = 1, backoff = 0.01 }) end,
    "cannot reach " .. closed .. "/v1/chat/completions: ")
  T.raises(function() http.get_json("ftp://127.0.0.1/x") end, "bad URL ftp://127.0.0.1/x")
  T.raises(function() http.get_json(url, { headers = { X = "a\r\nB: c" } }) end, "header X holds a line break")
end)

T.test("stream hands over the body as it arrives and can stop early", function()
  local parts = {}
  local status = http.stream("POST", url .. "/stream", { body = "{}", on_chunk = function(s) parts[#parts + 1] = s end })
  T.eq(status, 200)
  T.eq(table.concat(parts), 'data: {"n": 0}\n\ndata: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n')
  local seen = 0
  http.stream("POST", url .. "/stream", { body = "{}", on_chunk = function() seen = seen + 1; return false end })
  T.eq(seen, 1)
  T.raises(function() http.stream("POST", url .. "/stream", { on_chunk = function() error("boom") end }) end, "boom")
end)

local items = {
  questions = { "Capital of France?", "2 + 2?", "Largest planet?", "Colour of the sky?" },
  references = { "Paris", "4", "Jupiter", "Blue" },
  answers = { "Paris", "5 judge-says: Score: 2", "judge-says: I cannot grade this",
    "judge-says: 10/10 would be too much; 4" },
}

T.test("judge scores each answer through the chat completions endpoint", function()
  local r = eval.judge{ url = url .. "/v1/", model = "fake-judge", api_key = "test-key", questions = items.questions,
    references = items.references, answers = items.answers }
  T.eq(r.n, 4)
  T.eq(r.scores[1], 5)
  T.eq(r.scores[2], 2)
  T.eq(r.scores[3], false)
  T.eq(r.scores[4], 4)
  T.eq(r.invalid, 1)
  T.near(r.mean, 11 / 3, 1e-12)
  T.eq(r.replies[3], "I cannot grade this")
end)

T.test("judge errors name the endpoint's complaint or the unreachable URL", function()
  local p = { url = url, model = "fake-judge", api_key = "wrong", questions = { "q" }, answers = { "a" } }
  T.raises(function() eval.judge(p) end, "judge: POST " .. url .. "/v1/chat/completions: HTTP 401: Incorrect API key")
  p.url, p.max_retries = closed, 0
  T.raises(function() eval.judge(p) end, "judge: cannot reach " .. closed .. "/v1/chat/completions")
  T.raises(function() eval.judge{ url = url, model = "m", questions = { "q" }, answers = {} } end,
    "judge: 0 answers for 1 questions")
end)

return T.done()
EOF
"$MOONFORGE" exec "$tmp/check.lua" || fail "mf.http / mf.eval.judge checks failed"

# A recipe takes the endpoint and key from the environment and shows the scores.
cat >"$tmp/judge.lua" <<'EOF'
local mf = require "moonforge"
local r = mf.recipe{ name = "judge" }
r:cell("judge", function(ctx)
  mf.eval.judge{ model = "fake-judge", questions = { "a?", "b?" }, answers = { "yes", "judge-says: 3" },
    ctx = ctx, prefix = "tuned", max_retries = 0 }
end)
return r
EOF
cd "$tmp"
MOONFORGE_JUDGE_URL="$FAKE_URL" MOONFORGE_JUDGE_KEY=test-key "$MOONFORGE" run judge.lua >out.txt 2>err.txt \
  || fail "judge recipe failed: $(cat err.txt)"
grep -q '"name":"tuned/judge_mean"' runs/judge-*/metrics.jsonl || fail "no tuned/judge_mean metric"
grep -q '"value":4' runs/judge-*/metrics.jsonl || fail "mean of 5 and 3 is not 4"
grep -q "judge scores" out.txt || fail "no score table in the output"
set +e
MOONFORGE_JUDGE_URL="$CLOSED_URL" OPENAI_API_KEY=test-key "$MOONFORGE" run judge.lua --no-cache >out.txt 2>err.txt
status=$?
set -e
[ "$status" = 1 ] || fail "unreachable judge: exit status $status, expected 1"
grep -q "judge: cannot reach $CLOSED_URL/v1/chat/completions" err.txt out.txt || fail "no clear error: $(cat err.txt)"
echo "ok"
