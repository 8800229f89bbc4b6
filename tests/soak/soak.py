#!/usr/bin/env python3
"""Sustained mixed load against a running chat-server; standard library only.

Workers (threads, each with its own keep-alive connection) pick requests by weight:
seed send, v1 send (JSON and SSE), message pages, conversation pages, seed history, creates.
Every interval prints requests, errors, p50/p99 latency and the server's RSS (VmRSS of --pid);
at the end, totals, per-route latencies and the memory growth first -> last interval.
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
from collections import defaultdict

# (name, weight). The history of the default conversation grows all run long (every seed send
# adds to it) and is streamed whole, so it is read rarely, as a browser would on page load.
MIX = [
    ("seed_send", 20),
    ("v1_send", 20),
    ("v1_send_sse", 15),
    ("v1_messages_page", 25),
    ("v1_conversations_page", 12),
    ("v1_create", 5),
    ("seed_history", 3),
]
WORDS = "the quick brown fox jumps over a lazy dog while soak tests keep running".split()


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    index = min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[index]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.interval = []  # (route, seconds, ok)
        self.all = defaultdict(list)
        self.errors = defaultdict(int)  # "route status" -> count
        self.total = 0
        self.failed = 0

    def record(self, route, seconds, ok, what=None):
        with self.lock:
            self.interval.append((route, seconds, ok))
            self.all[route].append(seconds)
            self.total += 1
            if not ok:
                self.failed += 1
                self.errors[f"{route} {what}"] += 1

    def take_interval(self):
        with self.lock:
            taken, self.interval = self.interval, []
        return taken


class Worker(threading.Thread):
    def __init__(self, host, port, stats, deadline, conversation, seed):
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.stats = stats
        self.deadline = deadline
        self.conversation = conversation
        self.conversations = [conversation]
        self.random = random.Random(seed)
        self.connection = None
        names, weights = zip(*MIX)
        self.names, self.weights = names, weights

    def connect(self):
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.connection is None:
            self.connect()
        try:
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection: reconnect once, as a client library would.
            self.connection.close()
            self.connect()
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        if response.getheader("connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        return response.status, data

    def text(self):
        return " ".join(self.random.choice(WORDS) for _ in range(self.random.randint(3, 30)))

    def one(self, route):
        conv = self.random.choice(self.conversations)
        if route == "seed_send":
            status, _ = self.request("POST", "/chat/message", {"message": self.text()})
            return status == 200, status
        if route == "v1_send":
            status, _ = self.request("POST", f"/api/v1/conversations/{conv}/messages", {"content": self.text()})
            return status == 201, status
        if route == "v1_send_sse":
            status, data = self.request(
                "POST", f"/api/v1/conversations/{conv}/messages", {"content": self.text()},
                {"Accept": "text/event-stream"},
            )
            ok = status == 200 and b"event: done" in data and b"event: error" not in data
            return ok, status if status != 200 else ("200-no-done" if not ok else 200)
        if route == "v1_messages_page":
            status, data = self.request("GET", f"/api/v1/conversations/{conv}/messages?limit=50")
            return status == 200, status
        if route == "v1_conversations_page":
            status, _ = self.request("GET", "/api/v1/conversations?limit=20")
            return status == 200, status
        if route == "v1_create":
            status, data = self.request("POST", "/api/v1/conversations", {"title": self.text()[:60]})
            if status == 201:
                self.conversations.append(json.loads(data)["id"])
                self.conversations = self.conversations[-20:]
            return status == 201, status
        if route == "seed_history":
            status, data = self.request("GET", "/chat/history")
            return status == 200, status
        raise ValueError(route)

    def run(self):
        while time.monotonic() < self.deadline:
            route = self.random.choices(self.names, self.weights)[0]
            start = time.perf_counter()
            try:
                ok, what = self.one(route)
            except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the run
                ok, what = False, type(error).__name__
                self.connection = None
            self.stats.record(route, time.perf_counter() - start, ok, what)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="chat-server pid, for VmRSS")
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--markdown", help="write the interval table and summary here (Markdown)")
    args = parser.parse_args()

    setup = http.client.HTTPConnection(args.host, args.port, timeout=30)
    conversations = []
    for index in range(args.concurrency):
        setup.request("POST", "/api/v1/conversations", body=json.dumps({"title": f"soak {index}"}),
                      headers={"Content-Type": "application/json"})
        response = setup.getresponse()
        conversations.append(json.loads(response.read())["id"])
    setup.close()

    stats = Stats()
    start = time.monotonic()
    deadline = start + args.seconds
    workers = [Worker(args.host, args.port, stats, deadline, conversations[i], seed=i)
               for i in range(args.concurrency)]
    for worker in workers:
        worker.start()

    header = f"{'t (s)':>6} {'requests':>9} {'req/s':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'RSS MiB':>8}"
    print(header, flush=True)
    rows = []
    next_tick = start + args.interval
    while True:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        elapsed = time.monotonic() - start
        taken = stats.take_interval()
        latencies = [seconds * 1000 for _, seconds, _ in taken]
        errors = sum(1 for _, _, ok in taken if not ok)
        rss = rss_kib(args.pid)
        row = {
            "t": round(elapsed), "requests": len(taken), "rps": len(taken) / args.interval,
            "errors": errors, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else float("nan"),
            "rss_mib": rss / 1024 if rss is not None else float("nan"),
        }
        rows.append(row)
        print(f"{row['t']:>6} {row['requests']:>9} {row['rps']:>7.0f} {row['errors']:>6} {row['p50']:>8.1f} "
              f"{row['p99']:>8.1f} {row['max']:>8.1f} {row['rss_mib']:>8.1f}", flush=True)
        if elapsed >= args.seconds:
            break
        next_tick += args.interval
    for worker in workers:
        worker.join(timeout=35)
    tail = stats.take_interval()  # requests that finished after the last tick
    if tail and rows:
        rows[-1]["requests"] += len(tail)
        rows[-1]["errors"] += sum(1 for _, _, ok in tail if not ok)

    all_latencies = [s * 1000 for values in stats.all.values() for s in values]
    first, last = rows[0]["rss_mib"], rows[-1]["rss_mib"]
    peak = max(row["rss_mib"] for row in rows)
    summary = [
        f"total requests: {stats.total} in {args.seconds} s ({stats.total / args.seconds:.0f} req/s), "
        f"concurrency {args.concurrency}",
        f"errors: {stats.failed}" + (f" ({dict(stats.errors)})" if stats.errors else ""),
        f"latency overall: p50 {percentile(all_latencies, 50):.1f} ms, p99 {percentile(all_latencies, 99):.1f} ms, "
        f"max {max(all_latencies):.1f} ms",
        f"memory (VmRSS): first interval {first:.1f} MiB, last {last:.1f} MiB, peak {peak:.1f} MiB, "
        f"growth {last - first:+.1f} MiB",
    ]
    route_lines = []
    for route, _ in MIX:
        values = [s * 1000 for s in stats.all.get(route, [])]
        if values:
            route_lines.append(f"| {route} | {len(values)} | {percentile(values, 50):.1f} | "
                               f"{percentile(values, 99):.1f} | {max(values):.1f} |")
    print()
    for line in summary:
        print("soak: " + line)
    print("\n| route | requests | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(route_lines))

    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write("| t (s) | requests | req/s | errors | p50 ms | p99 ms | max ms | RSS MiB |\n")
            out.write("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
            for row in rows:
                out.write(f"| {row['t']} | {row['requests']} | {row['rps']:.0f} | {row['errors']} | {row['p50']:.1f} | "
                          f"{row['p99']:.1f} | {row['max']:.1f} | {row['rss_mib']:.1f} |\n")
            out.write("\n| route | requests | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n")
            out.write("\n".join(route_lines) + "\n\n")
            out.write("\n".join(f"- {line}" for line in summary) + "\n")
    sys.exit(1 if stats.failed else 0)


if __name__ == "__main__":
    main()
