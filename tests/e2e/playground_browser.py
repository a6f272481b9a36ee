#!/usr/bin/env python3
"""Drives the playground page in headless Chromium (standard library only).

usage: playground_browser.py CHROMIUM URL PROMPT OUTDIR

The page drives itself with ?autotest=PROMPT: it sends PROMPT to every
pane, waits for the replies, shows the exported recipe cell and marks
<body data-autotest="done"> (or "failed"). This script only watches: it
speaks the DevTools protocol over --remote-debugging-pipe (JSON messages
ended by NUL on file descriptors 3 and 4), waits for the mark, then saves
OUTDIR/dom.html, OUTDIR/playground.png, OUTDIR/cell.lua (the exported
cell) and OUTDIR/panes.json (per pane: events streamed, replies, failure,
the reply texts and their token counts and times). Exits 1 with the reason when the page does not finish
within a minute.
"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
from html.parser import HTMLParser


class Browser:
    def __init__(self, binary, profile):
        to_browser, self.commands = os.pipe()
        self.replies, from_browser = os.pipe()

        def wire():  # in the child: the protocol's descriptors 3 and 4 (first moved clear of them)
            reads, writes = os.dup(to_browser), os.dup(from_browser)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        # --no-sandbox: tests may run as root, where Chromium's sandbox refuses to start.
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--remote-debugging-pipe", "--user-data-dir=" + profile, "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False)
        os.close(to_browser)
        os.close(from_browser)
        self.next_id = 0
        self.buffer = b""

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                data = os.read(self.replies, 1 << 16)
                if not data:
                    raise RuntimeError("Chromium closed the pipe during " + method)
                self.buffer += data
            text, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(text)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"]))
                return reply["result"]

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Page(HTMLParser):
    """The parts of the page the test looks at."""

    def __init__(self):
        super().__init__()
        self.panes = []
        self.cell = ""
        self.into = None  # where text goes: a pane's reply list or "cell"
        self.depth = 0
        self.in_template = 0  # the pane <template> is not a pane

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "template":
            self.in_template += 1
        if self.in_template:
            return
        if tag == "section" and "pane" in classes:
            self.panes.append({"chunks": int(a.get("data-chunks") or 0), "replies": int(a.get("data-replies") or 0),
                               "failed": a.get("data-failed") == "true", "texts": [], "stats": []})
        elif tag == "div" and "message" in classes and "assistant" in classes and self.panes:
            self.panes[-1]["texts"].append("")
            self.into, self.depth = self.panes[-1]["texts"], 1
        elif tag == "div" and "stats" in classes and self.panes:
            self.panes[-1]["stats"].append("")
            self.into, self.depth = self.panes[-1]["stats"], 1
        elif tag == "textarea" and a.get("id") == "export-text":
            self.into, self.depth = "cell", 1
        elif self.into is not None:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "template":
            self.in_template -= 1
        if self.into is not None:
            self.depth -= 1
            if self.depth == 0:
                self.into = None

    def handle_data(self, data):
        if self.into == "cell":
            self.cell += data
        elif self.into is not None:
            self.into[-1] += data


def evaluate(browser, session, expression):
    return browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")


def main():
    binary, base, prompt, outdir = sys.argv[1:5]
    browser = Browser(binary, outdir + "/chromium")
    try:
        target = browser.call("Target.createTarget", url=base + "?autotest=" + urllib.parse.quote(prompt))
        session = browser.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        state, deadline = None, time.time() + 60
        while state not in ("done", "failed") and time.time() < deadline:
            time.sleep(0.1)
            state = evaluate(browser, session, "document.body ? document.body.dataset.autotest || '' : ''")
        dom = evaluate(browser, session, "document.documentElement.outerHTML")
        png = browser.call("Page.captureScreenshot", session, format="png")["data"]
    finally:
        browser.close()
    with open(outdir + "/dom.html", "w") as f:
        f.write(dom)
    with open(outdir + "/playground.png", "wb") as f:
        f.write(base64.b64decode(png))
    page = Page()
    page.feed(dom)
    with open(outdir + "/cell.lua", "w") as f:
        f.write(page.cell)
    with open(outdir + "/panes.json", "w") as f:
        json.dump(page.panes, f)
    if state != "done":
        sys.exit("the page did not finish (data-autotest=%r); see %s/dom.html" % (state, outdir))


if __name__ == "__main__":
    main()
