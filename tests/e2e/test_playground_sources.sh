#!/usr/bin/env bash
# `moonforge playground --index` in headless Chromium: a tiny model answers
# from the RAG store of tests/lua/rag_store_testing.lua, the page lists the
# reply's sources under it (numbered, source and title, each text in a
# collapsed <details>), the matching document first; the exported cell
# serves the model with the same store and, replayed by `moonforge run`,
# prints the same reply. Skips (exit 0, saying so) when Chromium is not
# installed. Servers bind 127.0.0.1, stop by themselves and are killed by
# pid when the test ends.
source "$(dirname "${BASH_SOURCE[0]}")/loopback.sh"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "SKIP: no Chromium (Debian: apt-get install chromium); the playground's sources were not checked in a browser"
  exit 0
fi

"$MOONFORGE" exec tests/lua/serve_testing.lua "$tmp/model"
"$MOONFORGE" exec tests/lua/rag_store_testing.lua "$tmp"
start_moonforge playground "$tmp/model" --index "$tmp/docs.mfrag" --top-k 2 --port 0 --temperature 0 \
  --max-tokens 8 --exit-after 120
url="$url/"

mkdir "$tmp/browser"
python3 tests/e2e/playground_browser.py "$browser" "$url" "the cat sat on the mat" "$tmp/browser" ||
  fail "the page in Chromium: $(tail -c 2000 "$tmp/browser/dom.html" 2>/dev/null)"
python3 - "$tmp/browser" "$tmp/docs" <<'EOF' || fail "the sources on the page: $(cat "$tmp/browser/dom.html")"
import html.parser, json, sys
out, docs = sys.argv[1], sys.argv[2]
panes = json.load(open(out + "/panes.json"))
assert len(panes) == 1 and panes[0]["replies"] == 1 and not panes[0]["failed"], panes

class Sources(html.parser.HTMLParser):
    """The .sources boxes: per source, its summary, its text and whether it is open."""
    def __init__(self):
        super().__init__()
        self.boxes, self.field, self.stack = [], None, []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        self.stack.append(tag)
        if "sources" in classes:
            self.boxes.append([])
        elif "source" in classes:
            self.boxes[-1].append({"summary": "", "text": "", "open": "open" in a})
        elif tag == "summary" and self.boxes and self.boxes[-1]:
            self.field = ("summary", len(self.stack))
        elif "source-text" in classes:
            self.field = ("text", len(self.stack))
    def handle_endtag(self, tag):
        if self.field and len(self.stack) == self.field[1]:
            self.field = None
        self.stack.pop()
    def handle_data(self, data):
        if self.field:
            self.boxes[-1][-1][self.field[0]] += data

page = Sources()
page.feed(open(out + "/dom.html").read())
assert len(page.boxes) == 1, "%d source lists" % len(page.boxes)
sources = page.boxes[0]
assert len(sources) == 2, sources
assert sources[0]["summary"] == "[1] %s/cats.txt" % docs, sources[0]
assert sources[0]["text"] == "the cat sat on the mat" and not sources[0]["open"], sources[0]
assert sources[1]["summary"].startswith("[2] %s/" % docs), sources[1]
EOF

# The exported cell serves the model with the store and prints the same reply.
cell="$tmp/browser/cell.lua"
grep -q "mf.deploy.serve({ model = \"$tmp/model\", index = \"$tmp/docs.mfrag\", top_k = 2, port = 0 })" "$cell" ||
  fail "the cell does not serve the store: $(cat "$cell")"
replay_exported_cell "$cell" "$tmp/browser/panes.json" 1
echo "ok"
