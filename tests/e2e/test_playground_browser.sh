#!/usr/bin/env bash
# The playground in headless Chromium: a tiny model in two panes and a
# slow OpenAI-compatible endpoint (tests/e2e/chat_stub_server.py, reached
# through the playground's proxy with the key) in a third; a prompt typed
# by the page's own autotest; every pane streams its reply (in more than
# one event; the endpoint's in one event per piece) with its token count
# and latency; a screenshot is taken; the exported recipe cell runs with
# `moonforge run` and prints the same replies. Skips (exit 0, saying so)
# when Chromium is not installed. Servers bind 127.0.0.1, stop by
# themselves and are killed by pid when the test ends.
# PLAYGROUND_SCREENSHOT=FILE keeps the screenshot.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "SKIP: no Chromium (Debian: apt-get install chromium); the playground's browser test did not run"
  exit 0
fi

start_port_server tests/e2e/chat_stub_server.py --timeout 120 --delay 0.01
stub="http://127.0.0.1:$port"
"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"
# 150 tokens: a tiny model's reply takes long enough to come in several events.
OPENAI_API_KEY=k3 start_moonforge playground "$tmp/model" "$tmp/model" "$stub" --port 0 --temperature 0 \
  --max-tokens 150 --exit-after 120
url="$url/"

mkdir "$tmp/browser"
python3 tests/e2e/playground_browser.py "$browser" "$url" "slowly, please" "$tmp/browser" ||
  fail "the page in Chromium: $(tail -c 2000 "$tmp/browser/dom.html" 2>/dev/null)"
[ -z "${PLAYGROUND_SCREENSHOT:-}" ] || cp "$tmp/browser/playground.png" "$PLAYGROUND_SCREENSHOT"
python3 - "$tmp/browser" <<'EOF' || fail "the panes: $(cat "$tmp/browser/panes.json")"
import json, re, sys
out = sys.argv[1]
panes = json.load(open(out + "/panes.json"))
assert len(panes) == 3, "%d panes" % len(panes)
for i, p in enumerate(panes, 1):
    assert not p["failed"], "pane %d failed: %s" % (i, p["texts"])
    assert p["replies"] == 1, "pane %d has %d replies" % (i, p["replies"])
    assert p["chunks"] > 1, "pane %d got its reply in %d event(s), not streamed" % (i, p["chunks"])
    assert p["texts"][0].strip(), "pane %d shows an empty reply" % i
    assert re.match(r"\d+ tokens · first token [0-9.]+ s · [0-9.]+ s · [0-9.]+ tokens/s$",
                    p["stats"][0]), "pane %d: %s" % (i, p["stats"])
assert panes[0]["texts"] == panes[1]["texts"], "greedy replies of one model differ"
said = panes[2]["texts"][0]
assert said.startswith("auth=Bearer k3 system=none turns=1 said=slowly, please w1 w2"), said
assert panes[2]["chunks"] == 150, "the endpoint's 150 pieces came in %d events" % panes[2]["chunks"]
assert panes[2]["stats"][0].startswith("150 tokens · "), panes[2]["stats"]
png = open(out + "/playground.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, "no real screenshot (%d bytes)" % len(png)
EOF

# The exported cell replays the session in a recipe.
cell="$tmp/browser/cell.lua"
grep -q '^r:cell("playground session", function(ctx)' "$cell" || fail "the export is not a cell: $(cat "$cell")"
grep -q 'model1:chat(tok1, messages, opts)' "$cell" || fail "the cell does not chat: $(cat "$cell")"
grep -q "mf.http.post_json(\"$stub/v1/chat/completions\"" "$cell" || fail "the cell does not call the endpoint: $(cat "$cell")"
grep -q "k3" "$cell" && fail "the key is in the exported cell"
replay_exported_cell "$cell" "$tmp/browser/panes.json" 2
echo "ok"
