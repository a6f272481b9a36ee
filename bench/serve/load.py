"""Closed-loop load on an OpenAI-compatible server (standard library only).

    load.py URL MODEL CLIENTS REQUESTS MAX_TOKENS

CLIENTS threads send REQUESTS chat completions in all (greedy, max_tokens
MAX_TOKENS, each a different short question), each thread sending its next
request when the last one is answered. Prints JSON: requests/s, p50 and
p99 latency in seconds, completion tokens/s.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "Why is the sky blue?",
             "How many legs does a spider have?", "What is 12 times 12?", "Who wrote Hamlet?",
             "What is the boiling point of water in Celsius?", "Give a synonym for happy."]


def main():
    url, model = sys.argv[1], sys.argv[2]
    clients, total, max_tokens = (int(a) for a in sys.argv[3:6])
    u = urllib.parse.urlparse(url)
    latencies, tokens, lock = [], [0], threading.Lock()
    next_index = [0]

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= total:
                break
            body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}]}
            start = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            reply = json.loads(r.read())
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}: {reply}")
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens[0] += reply["usage"]["completion_tokens"]
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(json.dumps({"clients": clients, "requests": total, "requests_per_s": total / elapsed,
                      "p50_s": pct(0.50), "p99_s": pct(0.99), "tokens_per_s": tokens[0] / elapsed}))


if __name__ == "__main__":
    main()
