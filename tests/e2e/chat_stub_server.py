#!/usr/bin/env python3
"""An OpenAI-compatible chat endpoint on 127.0.0.1 for the chat and
playground tests (standard library only). It prints its port, and stops by
itself after --timeout seconds.

GET  /v1/models            one model, "stub"
POST /v1/chat/completions  model "stub" only (else 404, OpenAI-shaped).
    The reply tells what arrived, so a test can check what was sent:
    "auth=<Authorization or none> system=<system prompt or none>
    turns=<number of messages> said=<last user message>", then
    max_tokens - 1 words "w1 w2 ...". With stream: true each piece is one
    server-sent event (--delay seconds apart when the last user message
    starts with "slow"), then a usage chunk (when
    stream_options.include_usage) and [DONE].
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    delay = 0.0

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        else:
            self.reply(404, {"error": {"message": "no route GET " + self.path}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.reply(404, {"error": {"message": "no route POST " + self.path}})
        if body.get("model") != "stub":
            return self.reply(404, {"error": {"message": "The model '%s' does not exist" % body.get("model")}})
        messages = body.get("messages") or []
        system = [m["content"] for m in messages if m.get("role") == "system"]
        users = [m["content"] for m in messages if m.get("role") == "user"]
        pieces = ["auth=%s system=%s turns=%d said=%s" % (self.headers.get("Authorization", "none"),
                                                           system[0] if system else "none", len(messages),
                                                           users[-1] if users else "")]
        pieces += [" w%d" % i for i in range(1, int(body.get("max_tokens") or 16))]
        if not body.get("stream"):
            return self.reply(200, {"object": "chat.completion", "model": "stub", "choices": [
                {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "".join(pieces)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(pieces)}})
        delay = self.delay if users and users[-1].startswith("slow") else 0.0
        self.stream(pieces, (body.get("stream_options") or {}).get("include_usage"), delay)

    def stream(self, pieces, include_usage, delay):
        # HTTP/1.0 without a length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(delta, **extra):
            chunk = {"object": "chat.completion.chunk", "model": "stub",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish", None)}]}
            chunk.update(extra)
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        try:
            event({"role": "assistant", "content": ""})
            for piece in pieces:
                event({"content": piece})
                time.sleep(delay)
            event({}, finish="length")
            if include_usage:
                event({}, usage={"prompt_tokens": 1, "completion_tokens": len(pieces)})
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it may


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds between the pieces of a slow reply")
    args = ap.parse_args()
    Handler.delay = args.delay
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Timer(args.timeout, server.shutdown).start()
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
