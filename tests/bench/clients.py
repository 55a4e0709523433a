#!/usr/bin/env python3
"""Client-side helpers for the maint benchmark suite; run inside the client namespace.

    clients.py idle     --host H --port P --count N [--max-seconds S] [--wait]
        Opens N keep-alive connections, sends one GET on each and reads the answer, prints
        "ready OK FAILED" and then holds them all open until stdin closes (or S seconds pass).

    clients.py browsers --host H --port P --matched SRC:N --excepted SRC:N --out FILE
                        [--max-seconds S] [--marker TEXT]
        Browser-like clients: one keep-alive connection each; a request that fails on a
        connection (reset, EOF, refused) is retried once on a fresh connection, as browsers do
        for idempotent requests. Runs until stdin closes (bounded by S seconds), then writes
        every request's outcome to FILE as JSON. Timestamps are time.monotonic(), which is
        CLOCK_MONOTONIC and therefore comparable with the orchestrator's clock.

Python 3.11 standard library only.
"""

import argparse
import asyncio
import errno
import json
import resource
import socket
import sys
import threading
import time


def raise_nofile(n=200_000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def request_bytes(host):
    return (f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: maint-bench\r\n"
            "Accept: text/html\r\nConnection: keep-alive\r\n\r\n").encode()


# ---------------------------------------------------------------- idle keep-alive holder

async def idle_main(args):
    req = request_bytes(args.host)
    # --wait: after the page, each connection holds the page's wait request, as an open tab
    # does during maintenance (the server answers it when maintenance ends).
    wait = (f"GET /.maint/wait HTTP/1.1\r\nHost: {args.host}\r\nAccept: */*\r\n\r\n").encode()
    conns = []
    failed = 0
    sem = asyncio.Semaphore(args.parallel)

    async def open_one():
        nonlocal failed
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), 10)
                w.write(req)
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await asyncio.wait_for(r.readexactly(length), 10)
                if args.wait:
                    w.write(wait)
                    await w.drain()
                conns.append((r, w))
            except Exception:
                failed += 1

    await asyncio.gather(*(open_one() for _ in range(args.count)))
    print(f"ready {len(conns)} {failed}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    # Connections the server closed meanwhile (idle timeout) would show up here.
    alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    for _, w in conns:
        w.close()
    print(f"done {alive}", flush=True)


# ---------------------------------------------------------------- browser-like clients

class Lost(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


class Browser:
    def __init__(self, host, port, src, marker, timeout):
        self.host, self.port, self.src = host, port, src
        self.marker = marker
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.req = request_bytes(host)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((self.src, 0))
        s.connect((self.host, self.port))
        self.sock = s
        self.buf = b""

    def recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("EOF before a complete answer")
        self.buf += data

    def once(self):
        """One request on the current (or a new) connection; returns (status, body, close)."""
        if self.sock is None:
            self.connect()
        self.sock.sendall(self.req)
        while b"\r\n\r\n" not in self.buf:
            self.recv_more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        self.buf = rest
        while len(self.buf) < length:
            self.recv_more()
        body, self.buf = self.buf[:length], self.buf[length:]
        if close:
            self.close()
        return status, body

    def get(self):
        """A page view: returns (outcome, attempts, saw_refused)."""
        saw_refused = False
        for attempt in (1, 2):
            try:
                status, body = self.once()
                if status == 200 and body.startswith(b"APP"):
                    return "app", attempt, saw_refused
                if status == 503 and self.marker in body:
                    return "maint", attempt, saw_refused
                return f"other-{status}", attempt, saw_refused
            except socket.timeout:
                self.close()
                return "timeout", attempt, saw_refused   # browsers do not retry a timeout
            except ConnectionRefusedError:
                saw_refused = True
                self.close()
                kind = "refused"
            except (ConnectionError, OSError, ValueError, IndexError):
                self.close()
                kind = "no-answer"
        return kind, 2, saw_refused


def browsers_main(args):
    stop = threading.Event()
    records = []
    lock = threading.Lock()
    marker = args.marker.encode()

    def run(role, src, idx):
        b = Browser(args.host, args.port, src, marker, args.timeout)
        mine = []
        while not stop.is_set():
            t0 = time.monotonic()
            outcome, attempts, refused = b.get()
            t1 = time.monotonic()
            mine.append((role, idx, round(t0, 6), round(t1, 6), outcome, attempts, refused))
            if outcome not in ("app", "maint"):
                time.sleep(0.05)
            elif args.think:
                time.sleep(args.think)
        b.close()
        with lock:
            records.extend(mine)

    threads = []
    for role, spec in (("matched", args.matched), ("excepted", args.excepted)):
        if not spec:
            continue
        src, n = spec.rsplit(":", 1)
        for i in range(int(n)):
            t = threading.Thread(target=run, args=(role, src, i), daemon=True)
            threads.append(t)
    for t in threads:
        t.start()
    print("ready", flush=True)
    waiter = threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True)
    waiter.start()
    stop.wait(args.max_seconds)
    stop.set()
    for t in threads:
        t.join(args.timeout + 5)
    with open(args.out, "w") as f:
        json.dump({"fields": ["role", "client", "t0", "t1", "outcome", "attempts", "saw_refused"],
                   "records": records}, f)
    print(f"done {len(records)}", flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--host", required=True)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--parallel", type=int, default=256)
    i.add_argument("--max-seconds", type=float, default=300)
    i.add_argument("--wait", action="store_true", help="then hold GET /.maint/wait on each")
    b = sub.add_parser("browsers")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--matched", default="")
    b.add_argument("--excepted", default="")
    b.add_argument("--out", required=True)
    b.add_argument("--marker", default="maintenance")
    b.add_argument("--timeout", type=float, default=5.0)
    b.add_argument("--think", type=float, default=0.005)
    b.add_argument("--max-seconds", type=float, default=300)
    args = p.parse_args()
    raise_nofile()
    if args.cmd == "idle":
        asyncio.run(idle_main(args))
    else:
        browsers_main(args)


if __name__ == "__main__":
    main()
