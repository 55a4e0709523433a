#!/usr/bin/env python3
"""The fleet test's client: requests every host every 100 ms (a new connection each time, as
a visitor's next page load would) and records what answered, one JSON line per request:
{"host", "t0", "t1", "kind": "app" | "page" | "refused" | "error", "detail"}.

  poll.py OUT STOPFILE MAX_SECONDS NAME=ADDRESS...

Stops when STOPFILE exists or after MAX_SECONDS, whichever comes first."""
import http.client
import json
import os
import sys
import threading
import time

INTERVAL = 0.1
out_path, stop_path, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
targets = [arg.split("=", 1) for arg in sys.argv[4:]]
deadline = time.time() + max_seconds
lock = threading.Lock()
out = open(out_path, "a", buffering=1)


def classify(addr):
    conn = http.client.HTTPConnection(addr, 80, timeout=2)
    try:
        conn.request("GET", "/", headers={"Connection": "close", "Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        if resp.status == 200 and body.startswith("APP OK"):
            return "app", body.strip()
        if resp.status == 503 and resp.getheader("x-maintenance", "").lower() == "on":
            return "page", "503"
        return "error", "unexpected answer %d %r" % (resp.status, body[:60])
    except ConnectionRefusedError:
        return "refused", "connection refused"
    except Exception as e:  # timeouts, resets: all failures the test must see
        return "error", "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()


def poll(name, addr):
    next_at = time.time()
    while time.time() < deadline and not os.path.exists(stop_path):
        t0 = time.time()
        kind, detail = classify(addr)
        t1 = time.time()
        with lock:
            out.write(json.dumps(dict(host=name, t0=t0, t1=t1, kind=kind, detail=detail)) + "\n")
        next_at += INTERVAL
        time.sleep(max(0.0, next_at - time.time()))


threads = [threading.Thread(target=poll, args=(n, a), daemon=True) for n, a in targets]
for t in threads:
    t.start()
for t in threads:
    t.join(max(0.0, deadline - time.time()) + 5)
