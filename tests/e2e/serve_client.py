"""Loopback client for tests/e2e/test_serve.sh (Python standard library only).

    serve_client.py concurrency URL PID CLIENTS ROUNDS
        CLIENTS different greedy requests at once, ROUNDS times: every reply
        must equal the same request made alone, the server must have decoded
        several sequences together, and its RSS must stay flat across rounds.
    serve_client.py hostile URL
        a slow partial request is dropped after the server's timeout, many
        idle connections do not stop service, a client that leaves a stream
        frees its slot.
    serve_client.py queue URL
        with one slot and a queue of one, a burst gets 429s in OpenAI's shape.
    serve_client.py inflight URL SECONDS_FILE
        one long request whose reply must still arrive after SIGTERM.
"""
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse


def connect(url, timeout=60):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def call(url, method, path, body=None):
    c = connect(url)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def post(url, path, body):
    status, data = call(url, "POST", path, body)
    if status != 200:
        raise AssertionError(f"POST {path}: HTTP {status}: {data[:300]!r}")
    return json.loads(data)


def metric(url, name):
    _, data = call(url, "GET", "/metrics")
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def request_for(i):
    if i % 2:
        return "/v1/completions", {"prompt": f"Story number {i}: once upon a time", "max_tokens": 24,
                                   "temperature": 0}
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": f"Question {i}: why is the sky blue?"}],
                                    "max_tokens": 24, "temperature": 0}


def answer(reply):
    choice = reply["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def concurrency(url, pid, clients, rounds):
    alone = [answer(post(url, *request_for(i))) for i in range(clients)]
    most_active, rss, stop = [0], [], threading.Event()

    def watch():
        while not stop.is_set():
            most_active[0] = max(most_active[0], metric(url, "moonforge_active_sequences"))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for r in range(rounds):
        got, errors = [None] * clients, []

        def client(i):
            try:
                got[i] = answer(post(url, *request_for(i)))
            except Exception as e:  # reported below, with the client's number
                errors.append(f"client {i}: {e}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise AssertionError("; ".join(errors))
        for i in range(clients):
            if got[i] != alone[i]:
                raise AssertionError(f"round {r} client {i}: {got[i]!r} != alone {alone[i]!r}")
        rss.append(rss_kib(pid))
    stop.set()
    watcher.join()
    print(f"{clients} clients x {rounds} rounds: replies equal; most sequences at once {most_active[0]:.0f}; "
          f"RSS KiB by round {rss}")
    if most_active[0] < 2:
        raise AssertionError("the server never decoded two sequences together")
    growth = rss[-1] - rss[1]
    if growth > 4096:
        raise AssertionError(f"RSS grew by {growth} KiB between round 2 and round {rounds}")


def slow_partial_request(url, timeout_s):
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": \"he")
    s.settimeout(timeout_s + 10)
    start = time.time()
    try:
        closed = s.recv(100) == b""
    except ConnectionResetError:
        closed = True
    waited = time.time() - start
    s.close()
    if not closed or waited > timeout_s + 5:
        raise AssertionError(f"a partial request was kept for {waited:.1f} s")
    print(f"partial request dropped after {waited:.1f} s")


def many_connections(url, n):
    u = urllib.parse.urlparse(url)
    socks = []
    for i in range(n):
        s = socket.create_connection((u.hostname, u.port))
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost")
        socks.append(s)
    status, _ = call(url, "GET", "/health")
    for s in socks:
        s.close()
    if status != 200:
        raise AssertionError(f"/health with {n} idle connections: {status}")
    print(f"{n} idle connections: still serving")


def leaving_client(url):
    body = {"prompt": "A long tale", "max_tokens": 200, "temperature": 0, "stream": True}
    full = post(url, "/v1/completions", dict(body, stream=False))
    if full["choices"][0]["finish_reason"] != "length":
        raise AssertionError("the reference reply ended early; pick another prompt")
    # The tiny model writes 200 tokens in about 0.1 s: on a loaded machine
    # it can finish before the close reaches the server, hence three tries.
    u = urllib.parse.urlparse(url)
    payload = json.dumps(body).encode()
    for _ in range(3):
        before = metric(url, "moonforge_completion_tokens_total")
        s = socket.create_connection((u.hostname, u.port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        s.recv(64)
        s.close()
        for _ in range(200):
            if metric(url, "moonforge_active_sequences") == 0:
                break
            time.sleep(0.01)
        used = metric(url, "moonforge_completion_tokens_total") - before
        if used < 200:
            print(f"a client that left after its first bytes used {used:.0f} of 200 tokens")
            return
    raise AssertionError("the stream of a client that left ran to the end three times")


def hostile(url):
    slow_partial_request(url, 2)
    many_connections(url, 200)
    leaving_client(url)
    status, _ = call(url, "GET", "/health")
    assert status == 200


def queue(url):
    results = []

    def client(i):
        results.append(call(url, "POST", "/v1/completions",
                            {"prompt": f"burst {i}", "max_tokens": 100, "temperature": 0}))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(s for s, _ in results)
    busy = [json.loads(d) for s, d in results if s == 429]
    if not busy or 200 not in statuses or set(statuses) - {200, 429}:
        raise AssertionError(f"statuses of a burst: {statuses}")
    for e in busy:
        assert e["error"]["code"] == "queue_full" and e["error"]["message"], e
    print(f"burst of 12 with one slot and a queue of one: {statuses.count(200)} served, {len(busy)} refused (429)")


def inflight(url, ready_file):
    c = connect(url)
    c.request("POST", "/v1/chat/completions",
              body=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
                               "temperature": 0}),
              headers={"Content-Type": "application/json"})
    open(ready_file, "w").close()
    r = c.getresponse()
    data = r.read()
    print(f"in-flight request during SIGTERM: HTTP {r.status}")
    if r.status != 200 or "choices" not in json.loads(data):
        raise AssertionError(data[:300])


def main():
    cmd, url = sys.argv[1], sys.argv[2]
    if cmd == "concurrency":
        concurrency(url, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "hostile":
        hostile(url)
    elif cmd == "queue":
        queue(url)
    elif cmd == "inflight":
        inflight(url, sys.argv[3])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
