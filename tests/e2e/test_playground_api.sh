#!/usr/bin/env bash
# `moonforge playground` over HTTP, without a browser: the page and its
# files come from the binary and name nothing outside it; panes.json
# describes the panes and holds no key; each pane's proxy streams its
# upstream's server-sent events (a local model served in-process, an
# OpenAI-compatible endpoint — tests/e2e/chat_stub_server.py — with the key
# added); an upstream that cannot be reached or answers 404 ends the
# stream with an error event; foreign origins and hosts are refused; a
# client that leaves a slow stream does not block the rest; the front
# server has no model endpoints; --exit-after and SIGTERM stop it with
# status 0; a bad command line exits 2, a missing model 1. Servers bind
# 127.0.0.1, stop by themselves and are killed by pid when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"

start_port_server tests/e2e/chat_stub_server.py --timeout 60 --delay 0.2
stub="http://127.0.0.1:$port"
"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

# Starts a playground with the given arguments; sets $url (with its slash) and $pid.
start() {
  start_moonforge playground --port 0 "$@"
  url="$url/"
}

OPENAI_API_KEY=k4 start "$tmp/model" "$stub#stub" "http://127.0.0.1:$closed#gone" --system "Be brief." \
  --max-tokens 8 --exit-after 60
python3 - "$url" "$stub" <<'EOF' || fail "the playground's routes (see above)"
import http.client, json, re, sys, time, urllib.parse

url, stub = sys.argv[1], sys.argv[2]
port = urllib.parse.urlsplit(url).port

def request(method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body and json.dumps(body), headers=headers or {})
    r = c.getresponse()
    return r.status, r.getheader("Content-Type"), r.read().decode("utf-8", "replace")

def chat(pane, said="hi", **headers):
    body = {"model": panes[pane - 1]["model"], "messages": [{"role": "user", "content": said}],
            "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}
    return request("POST", "/proxy/%d" % pane, body, {"Content-Type": "application/json", **headers})

def events(text):
    return [json.loads(e[6:]) for e in re.findall(r"^data: .*$", text, re.M) if e != "data: [DONE]"]

status, kind, config = request("GET", "/panes.json")
assert status == 200 and kind == "application/json", (status, kind)
assert "k4" not in config, "the key is in panes.json"
config = json.loads(config)
panes = config["panes"]
assert [p["kind"] for p in panes] == ["local", "remote", "remote"], panes
assert [p["endpoint"] for p in panes] == ["proxy/1", "proxy/2", "proxy/3"], panes
assert panes[1]["model"] == "stub" and panes[1]["upstream"] == stub + "/v1/chat/completions", panes[1]
assert config["defaults"] == {"system": "Be brief.", "temperature": 0.7, "max_tokens": 8}, config["defaults"]

for path, expect in [("/", "text/html"), ("/playground.js", "text/javascript"), ("/playground.css", "text/css")]:
    status, kind, text = request("GET", path)
    assert status == 200 and kind.startswith(expect), (path, status, kind)
    assert not re.search(r"""(src|href)=["']?(https?:)?//|@import|url\(["']?(https?:)?//""", text), path + " loads from outside"
status, kind, page = request("GET", "/?autotest=x")
assert status == 200 and "playground.js" in page

# A local model through its proxy: OpenAI's chunks, the usage, [DONE].
status, kind, text = chat(1)
assert status == 200 and kind == "text/event-stream", (status, kind, text)
chunks = events(text)
assert chunks[-1]["usage"]["completion_tokens"] == 8 and text.endswith("data: [DONE]\n\n"), text
assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]), text

# The endpoint gets the key; the browser never sends it.
status, kind, text = chat(2, said="hello", Origin=url.rstrip("/"))
assert status == 200, (status, text)
said = "".join(c["choices"][0]["delta"].get("content", "") for c in events(text) if c["choices"])
assert said.startswith("auth=Bearer k4 system=none turns=1 said=hello w1"), said

# Nothing answers: the stream ends with the reason.
status, kind, text = chat(3)
assert status == 200 and "cannot reach" in events(text)[-1]["error"]["message"], text

# Other pages and rebound names may not use the proxies.
assert chat(2, Origin="http://evil.example")[0] == 403
assert chat(2, Host="evil.example:%d" % port)[0] == 403
assert chat(2, Origin="http://localhost:%d" % port)[0] == 403  # not this page's origin
assert request("GET", "/proxy/1")[0] == 405
assert request("POST", "/", {})[0] == 405
assert request("GET", "/nope")[0] == 404
status, kind, text = request("GET", "/v1/models")
assert status == 404 and json.loads(text)["error"]["code"] == "no_model", text
assert request("GET", "/health")[0] == 200

# A client that leaves a slow stream (0.2 s a piece) does not hold up others.
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
c.request("POST", "/proxy/2", body=json.dumps({"model": "stub", "max_tokens": 200, "stream": True,
          "messages": [{"role": "user", "content": "slow please"}]}), headers={"Content-Type": "application/json"})
r = c.getresponse()
assert r.status == 200 and r.read1(1)
c.close()
started = time.time()
assert chat(1)[0] == 200 and chat(2)[0] == 200
assert time.time() - started < 5, "requests after a client left took %.1f s" % (time.time() - started)
EOF

# An upstream that answers 404: the stream says so.
start "$stub#nope" --exit-after 30
python3 - "$url" <<'EOF' || fail "an upstream's 404"
import http.client, json, sys, urllib.parse
port = urllib.parse.urlsplit(sys.argv[1]).port
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
c.request("POST", "/proxy/1", body=json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}],
          "stream": True}), headers={"Content-Type": "application/json"})
text = c.getresponse().read().decode()
last = json.loads(text.strip().split("\n")[-1][6:])
assert "answered HTTP 404" in last["error"]["message"] and "does not exist" in last["error"]["message"], text
EOF
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "the playground exited $status after SIGTERM"

# --exit-after stops it by itself.
start "$stub#stub" --exit-after 0.5
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "the playground exited $status after --exit-after"

# A bad command line exits 2; a model that cannot load 1.
for args in "" "$tmp/model $tmp/model $tmp/model $tmp/model" "$tmp/model --port x" "$tmp/model --bogus 1"; do
  status=0
  # shellcheck disable=SC2086
  "$MOONFORGE" playground $args >/dev/null 2>&1 || status=$?
  [ "$status" -eq 2 ] || fail "'playground $args' exited $status, not 2"
done
status=0
"$MOONFORGE" playground "$tmp/no-such-model" --port 0 >/dev/null 2>"$tmp/err" || status=$?
[ "$status" -eq 1 ] && grep -q "no-such-model" "$tmp/err" || fail "a missing model exited $status: $(cat "$tmp/err")"
echo "ok"
