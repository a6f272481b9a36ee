#!/usr/bin/env bash
# `moonforge serve --index` and `moonforge playground --index` on loopback:
# a RAG store of three short documents, embedded with the committed tiny
# random BERT, before a tiny random llama. A chat reply carries the
# numbered sources, best first, the document that matches the question
# first; its prompt is exactly the chat with the sources as a system
# message (appended to one the chat has), which the reply and
# usage.prompt_tokens show against model:chat on a second copy of the model;
# a stream brings the sources in its first event only; "top_k" and
# "retrieval": false are honoured and checked; /v1/models, /health and
# completions are unchanged; /metrics counts retrievals. A playground with
# --index streams the sources through its proxy. A store that cannot be
# opened, an encoder of another dimension or a store without an encoder
# stop both commands at once with a one-line error and status 2. Servers
# bind 127.0.0.1, stop by themselves (--exit-after) and are killed by pid
# when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"

"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"

# The store (tests/lua/rag_store_testing.lua), broken copies of it, and
# what each request must give: the sources retrieval must find, and the
# reply and prompt length of the chat with those sources put before it as
# the server documents.
cat >"$tmp/prepare.lua" <<'EOF'
local mf = require "moonforge"
local json = require "moonforge.json"
local host = require "moonforge.host"
local tmp = arg[1]
require("rag_store_testing").make_store(tmp)

local function copy_store(name, change)
  local dir = tmp .. "/" .. name
  assert(host.mkdir_p(dir))
  for _, file in ipairs({ "index.mfvi", "chunks.jsonl", "store.json" }) do
    assert(host.write_atomic(dir .. "/" .. file, host.read_file(tmp .. "/docs.mfrag/" .. file)))
  end
  local manifest = json.decode(host.read_file(dir .. "/store.json"))
  change(dir, manifest)
  assert(host.write_atomic(dir .. "/store.json", json.encode(manifest)))
end
copy_store("no-encoder.mfrag", function(_, m) m.encoder = nil end)
copy_store("narrow.mfrag", function(dir, m)
  local narrow = mf.rag.vector_index { dim = 8, kind = "exact" }
  for _ = 1, m.count do narrow:add(nil, { 1, 0, 0, 0, 0, 0, 0, 1 }) end
  narrow:save(dir .. "/index.mfvi")
  m.dim = 8
end)
assert(host.mkdir_p(tmp .. "/corrupt.mfrag"))
assert(host.write_atomic(tmp .. "/corrupt.mfrag/store.json", "{\"format\": "))

local store = mf.rag.open_store(tmp .. "/docs.mfrag")
local tok = mf.tokenizer.load(tmp .. "/model")
local model = mf.model.load(tmp .. "/model")
local function with_sources(messages, hits)
  local block = { "Answer from the numbered sources below and cite them as [n]." }
  for i, h in ipairs(hits) do
    local where = h.title and (h.source .. " \226\128\186 " .. h.title) or h.source
    block[#block + 1] = string.format("[%d] (%s) %s", i, where, h.text)
  end
  local text, out = table.concat(block, "\n"), {}
  for i, m in ipairs(messages) do out[i] = m end
  if out[1].role == "system" then out[1] = { role = "system", content = out[1].content .. "\n\n" .. text }
  else table.insert(out, 1, { role = "system", content = text }) end
  return out
end
local cases = {
  { messages = { { role = "user", content = "the cat sat on the mat" } }, top_k = 2 },
  { messages = { { role = "system", content = "Be brief." }, { role = "user", content = "hello" },
    { role = "assistant", content = "hi" }, { role = "user", content = "a dog ran quickly" } }, top_k = 3 },
  { messages = { { role = "user", content = "the cat sat on the mat" } }, retrieval = false },
}
for _, c in ipairs(cases) do
  local messages = c.messages
  c.ids = {}
  if c.retrieval ~= false then
    local hits = store:retrieve(messages[#messages].content, c.top_k, { mode = "dense" })
    for i, h in ipairs(hits) do c.ids[i] = h.id end
    messages = with_sources(messages, hits)
  end
  c.prompt_tokens = #tok:chat(messages, { add_generation_prompt = true })
  -- as bytes: a random model's reply need not be UTF-8
  c.reply = { model:chat(tok, messages, { max_tokens = 6, temperature = 0 }):byte(1, -1) }
end
assert(host.write_atomic(tmp .. "/cases.json", json.encode(cases)))
EOF
"$MOONFORGE" exec "$tmp/prepare.lua" "$tmp"

# Starts a command that prints its URL; sets $url and $pid.
start() { start_moonforge "$@" --port 0 --exit-after 120; }

start serve "$tmp/model" --index "$tmp/docs.mfrag" --name tiny
python3 - "$url" "$tmp" <<'EOF' || fail "serve --index (see above)"
import http.client, json, re, sys, urllib.parse

url, tmp = sys.argv[1], sys.argv[2]
port = urllib.parse.urlsplit(url).port
cases = json.load(open(tmp + "/cases.json"))

# A reply as JSON carries it: bytes that are not UTF-8 become U+FFFD (one
# per byte on the server, one per maximal run in Python: runs compared as one).
def text_of(reply_bytes):
    return re.sub("\ufffd+", "\ufffd", bytes(reply_bytes).decode("utf-8", "replace"))

def same_text(got, want_bytes):
    return re.sub("\ufffd+", "\ufffd", got) == text_of(want_bytes)

def request(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=body and json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read().decode()

def chat(case, **extra):
    body = {"messages": case["messages"], "max_tokens": 6, "temperature": 0}
    body.update({key: case[key] for key in ("top_k", "retrieval") if key in case}, **extra)
    return request("POST", "/v1/chat/completions", body)

# Sources best first, the matching document first, and the prompt that holds them.
for i, case in enumerate(cases):
    status, text = chat(case)
    assert status == 200, (i, status, text)
    reply = json.loads(text)
    assert same_text(reply["choices"][0]["message"]["content"], case["reply"]), (i, reply, text_of(case["reply"]))
    assert reply["usage"]["prompt_tokens"] == case["prompt_tokens"], (i, reply["usage"], case["prompt_tokens"])
    if case.get("retrieval") is False:
        assert "sources" not in reply, reply
        continue
    sources = reply["sources"]
    assert [s["id"] for s in sources] == case["ids"], (i, sources, case["ids"])
    assert [s["index"] for s in sources] == list(range(1, len(sources) + 1)), sources
    assert all(a["score"] >= b["score"] for a, b in zip(sources, sources[1:])), sources
    for s in sources:
        assert set(s) == {"index", "id", "source", "title", "score", "text"}, s
first = json.loads(chat(cases[0])[1])["sources"][0]
assert first["source"].endswith("/cats.txt") and first["text"] == "the cat sat on the mat", first
assert abs(first["score"] - 1) < 1e-5 and first["title"] is None, first
dogs = [s for s in json.loads(chat(cases[1])[1])["sources"] if s["source"].endswith("/dogs.md")][0]
assert dogs["title"] == "Dogs" and dogs["text"] == "# Dogs\na dog ran quickly", dogs
no_retrieval = cases[2]["prompt_tokens"]
assert cases[0]["prompt_tokens"] > no_retrieval + 20, (cases[0]["prompt_tokens"], no_retrieval)

# A stream: the sources in the first event, and only there; the same reply.
status, text = chat(cases[1], stream=True)
events = [json.loads(e[6:]) for e in re.findall(r"^data: .*$", text, re.M) if e != "data: [DONE]"]
assert status == 200 and text.endswith("data: [DONE]\n\n"), text
assert [s["id"] for s in events[0]["sources"]] == cases[1]["ids"], events[0]
assert all("sources" not in e for e in events[1:]), text
said = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
assert same_text(said, cases[1]["reply"]), (said, text_of(cases[1]["reply"]))

# The default top_k is 4 (here: every chunk); a chat with no user message looks nothing up.
status, text = request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "cat"}], "max_tokens": 1})
assert status == 200 and len(json.loads(text)["sources"]) == 3, text
status, text = request("POST", "/v1/chat/completions", {"messages": [{"role": "system", "content": "x"}], "max_tokens": 1})
assert status == 200 and json.loads(text)["sources"] == [], text

# Bad retrieval fields are 400s naming them.
for body, param in [({"top_k": 0}, "top_k"), ({"top_k": 65}, "top_k"), ({"top_k": "2"}, "top_k"),
                    ({"retrieval": "no"}, "retrieval")]:
    status, text = chat(cases[0], **body)
    assert status == 400 and json.loads(text)["error"]["param"] == param, (body, status, text)

# The rest of the API is unchanged.
status, text = request("GET", "/v1/models")
assert status == 200 and json.loads(text)["data"][0]["id"] == "tiny", text
assert request("GET", "/health") == (200, '{"status":"ok"}')
status, text = request("POST", "/v1/completions", {"prompt": "the cat", "max_tokens": 2})
assert status == 200 and "sources" not in json.loads(text), text
status, text = request("GET", "/metrics")
count = int(re.search(r"^moonforge_retrieval_duration_seconds_count (\d+)$", text, re.M).group(1))
assert count == 6, text  # the six chats above that looked something up
assert re.search(r'^moonforge_retrieval_duration_seconds_bucket\{le="\+Inf"\} %d$' % count, text, re.M), text
EOF
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "serve --index exited $status after SIGTERM"

# The playground passes the store to its local panes; the page's events carry the sources.
start playground "$tmp/model" --index "$tmp/docs.mfrag" --top-k 1
python3 - "$url" "$tmp" <<'EOF' || fail "playground --index (see above)"
import http.client, json, re, sys, urllib.parse
url, tmp = sys.argv[1], sys.argv[2]
port = urllib.parse.urlsplit(url).port
cases = json.load(open(tmp + "/cases.json"))
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
c.request("GET", "/panes.json")
pane = json.loads(c.getresponse().read())["panes"][0]
assert pane["index"].endswith("/docs.mfrag") and pane["top_k"] == 1, pane
c.request("POST", "/proxy/1", body=json.dumps({"messages": cases[0]["messages"], "max_tokens": 2, "stream": True}),
          headers={"Content-Type": "application/json"})
text = c.getresponse().read().decode()
events = [json.loads(e[6:]) for e in re.findall(r"^data: .*$", text, re.M) if e != "data: [DONE]"]
assert [s["id"] for s in events[0]["sources"]] == cases[0]["ids"][:1], text
EOF
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "playground --index exited $status after SIGTERM"

# Stores that cannot serve: one line on stderr naming the fault, status 2, at once.
check_refused() {
  local expect=$1
  shift
  local status=0
  timeout 60 "$MOONFORGE" "$@" --port 0 --exit-after 5 >"$tmp/out" 2>"$tmp/err" || status=$?
  [ "$status" -eq 2 ] || fail "'$*' exited $status: $(cat "$tmp/err")"
  [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "'$*' wrote more than one line: $(cat "$tmp/err")"
  grep -qF -- "$expect" "$tmp/err" || fail "'$*' did not say '$expect': $(cat "$tmp/err")"
  [ ! -s "$tmp/out" ] || fail "'$*' started: $(cat "$tmp/out")"
}
for cmd in serve playground; do
  check_refused "rag store $tmp/absent.mfrag: no store.json (not a RAG store)" $cmd "$tmp/model" --index "$tmp/absent.mfrag"
  check_refused "rag store $tmp/corrupt.mfrag: store.json: line 1" $cmd "$tmp/model" --index "$tmp/corrupt.mfrag"
  check_refused "gives vectors of dim 16 but the index holds dim 8" $cmd "$tmp/model" --index "$tmp/narrow.mfrag"
  check_refused 'store.json names no "encoder"' $cmd "$tmp/model" --index "$tmp/no-encoder.mfrag"
  check_refused "--top-k needs --index" $cmd "$tmp/model" --top-k 2
  check_refused "--top-k expects 1 to 64" $cmd "$tmp/model" --index "$tmp/docs.mfrag" --top-k 65
done
echo "ok"
