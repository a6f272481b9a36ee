#!/usr/bin/env python3
"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests (standard
library only). It listens on the given port (0: any free one), prints the
port on stdout, and stops by itself after --timeout seconds.

Routes:
  POST /echo                  200 {"method", "path", "headers", "json"}: what arrived
  POST /bad                   400 with an OpenAI-shaped error body
  POST /flaky/<key>           503 on the first request for <key>, then 200 {"attempt": n}
  POST /down                  503 always
  POST /malformed             200 with a body that is not JSON
  POST /slow                  200 after a second
  GET  /v1/models             200 the model list
  POST /v1/chat/completions   a judge: replies with the text after "judge-says:" in
                              the last user message (default "5"); checks the
                              request's shape and, with --key, its bearer token
  POST /stream                server-sent events: three data lines, then [DONE]
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-judge"


class Handler(BaseHTTPRequestHandler):
    attempts = {}
    lock = threading.Lock()
    api_key = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind="invalid_request_error"):
        self.reply(status, {"error": {"message": message, "type": kind, "code": None}})

    def read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        text = self.rfile.read(n)
        try:
            return json.loads(text) if text else None
        except ValueError:
            return text.decode("utf-8", "replace")

    def do_GET(self):
        if self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self.error(404, "no route GET " + self.path)

    def do_POST(self):
        body = self.read_json()
        if self.path == "/echo":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.reply(200, {"method": "POST", "path": self.path, "headers": headers, "json": body})
        elif self.path == "/bad":
            self.error(400, "The model 'nope' does not exist")
        elif self.path.startswith("/flaky/"):
            with self.lock:
                n = self.attempts.get(self.path, 0) + 1
                self.attempts[self.path] = n
            if n == 1:
                self.error(503, "overloaded, try again", "server_error")
            else:
                self.reply(200, {"attempt": n})
        elif self.path == "/down":
            self.error(503, "the service is down", "server_error")
        elif self.path == "/malformed":
            self.reply(200, b'{"choices": [ this is not json', "text/plain")
        elif self.path == "/slow":
            time.sleep(1)
            self.reply(200, {"slow": True})
        elif self.path == "/v1/chat/completions":
            self.judge(body)
        elif self.path == "/stream":
            self.stream()
        else:
            self.error(404, "no route POST " + self.path)

    def judge(self, body):
        if self.api_key and self.headers.get("Authorization") != "Bearer " + self.api_key:
            return self.error(401, "Incorrect API key provided", "invalid_api_key")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(400, "'messages' is required")
        if body.get("model") != MODEL:
            return self.error(404, "The model '%s' does not exist" % body.get("model"))
        if body.get("temperature") != 0:
            return self.error(400, "the judge expects temperature 0")
        users = [m.get("content", "") for m in body["messages"] if m.get("role") == "user"]
        text = users[-1] if users else ""
        _, marker, said = text.partition("judge-says:")
        content = said.split("\n")[0].strip() if marker else "5"
        self.reply(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split())},
        })

    def stream(self):
        # HTTP/1.0 without a length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        events = [b'data: {"n": %d}\n\n' % i for i in range(3)] + [b"data: [DONE]\n\n"]
        try:
            for event in events:
                self.wfile.write(event)
                self.wfile.flush()
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it may


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--key", default=None, help="bearer token the judge route requires")
    args = ap.parse_args()
    Handler.api_key = args.key
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Timer(args.timeout, server.shutdown).start()
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
