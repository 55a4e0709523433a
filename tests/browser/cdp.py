"""A small Chrome DevTools protocol client for the browser tests: one websocket to the
browser (flattened sessions, one per tab), a reader thread, calls with timeouts, and the
events of each tab kept for the test to inspect.

Only `websocket-client` (PyPI) besides the standard library. The browser's debugging port
lives inside the client's network namespace; `netns()` puts the calling thread there while
the socket is made (a socket stays in the namespace it was created in).
"""
import base64
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import threading
import time

import websocket  # websocket-client

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(name):
    """Runs the body with this thread in network namespace `name` (from `ip netns add`)."""
    if not name:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if _libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(here)
        os.close(there)


class CDPError(Exception):
    pass


def browser_ws_url(port, ns=None, timeout=20.0):
    """Waits (bounded) for the browser's debugging endpoint and returns its websocket URL."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with netns(ns):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/json/version")
                body = c.getresponse().read()
                c.close()
            return json.loads(body)["webSocketDebuggerUrl"]
        except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
            last = e
            time.sleep(0.2)
    raise CDPError(f"the browser's debugging port {port} did not answer within {timeout:.0f} s: {last}")


class Browser:
    def __init__(self, ws_url, ns=None):
        with netns(ns):
            self.ws = websocket.create_connection(ws_url, timeout=10, suppress_origin=True,
                                                  enable_multithread=True)
        self.ws.settimeout(None)
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.pending = {}          # id -> [event, reply]
        self.events = {}           # sessionId -> list of (monotonic, wall, method, params)
        self.cond = threading.Condition()
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                break
            if not raw:
                break
            msg = json.loads(raw)
            if "id" in msg:
                with self.lock:
                    slot = self.pending.pop(msg["id"], None)
                if slot:
                    slot[1] = msg
                    slot[0].set()
            else:
                with self.cond:
                    self.events.setdefault(msg.get("sessionId"), []).append(
                        (time.monotonic(), time.time(), msg["method"], msg.get("params", {})))
                    self.cond.notify_all()
        self.closed = True
        with self.lock:
            for slot in self.pending.values():
                slot[0].set()
        with self.cond:
            self.cond.notify_all()

    def call(self, method, params=None, session=None, timeout=30.0):
        i = next(self.ids)
        slot = [threading.Event(), None]
        with self.lock:
            self.pending[i] = slot
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        if not slot[0].wait(timeout):
            with self.lock:
                self.pending.pop(i, None)
            raise CDPError(f"{method}: no answer within {timeout:.0f} s")
        reply = slot[1]
        if reply is None:
            raise CDPError(f"{method}: the browser closed the connection")
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}")
        return reply.get("result", {})

    def context(self):
        """A new browser context: its own cookies, storage, cache and connection pool."""
        return self.call("Target.createBrowserContext", {"disposeOnDetach": True})["browserContextId"]

    def tab(self, context=None):
        params = {"url": "about:blank"}
        if context:
            params["browserContextId"] = context
        target = self.call("Target.createTarget", params)["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Tab(self, target, session)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


class Tab:
    def __init__(self, browser, target, session):
        self.b, self.target, self.session = browser, target, session
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True})

    def call(self, method, params=None, timeout=30.0):
        return self.b.call(method, params, self.session, timeout)

    def events(self, method=None, since=0.0):
        with self.b.cond:
            evs = list(self.b.events.get(self.session, []))
        return [e for e in evs if e[0] >= since and (method is None or e[2] == method)]

    def wait_event(self, pred, timeout, since=0.0):
        """The first event (mono, wall, method, params) at or after `since` for which
        pred(method, params) holds, waiting at most `timeout` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.b.cond:
            while True:
                evs = [e for e in self.b.events.get(self.session, []) if e[0] >= since]
                for e in evs[seen:]:
                    if pred(e[2], e[3]):
                        return e
                seen = len(evs)
                left = deadline - time.monotonic()
                if left <= 0 or self.b.closed:
                    return None
                self.b.cond.wait(min(left, 0.5))

    def evaluate(self, expr, timeout=10.0, await_promise=False):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": await_promise}, timeout)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate {expr[:60]!r}: {r['exceptionDetails'].get('text')} "
                           f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r.get("result", {}).get("value")

    def try_evaluate(self, expr, timeout=3.0):
        """Like evaluate, but None when the page is between documents."""
        try:
            return self.evaluate(expr, timeout)
        except CDPError:
            return None

    def navigate(self, url, timeout=20.0):
        """Navigates and waits (bounded) for the new document's load event."""
        since = time.monotonic()
        r = self.call("Page.navigate", {"url": url}, timeout)
        if r.get("errorText"):
            raise CDPError(f"navigate {url}: {r['errorText']}")
        if not self.wait_event(lambda m, p: m == "Page.loadEventFired", timeout, since):
            raise CDPError(f"navigate {url}: no load event within {timeout:.0f} s")

    def wait_until(self, expr, timeout, interval=0.05):
        """Polls a JS expression until it is truthy; its value, or None at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.try_evaluate(expr)
            if v:
                return v
            time.sleep(interval)
        return None

    def viewport(self, width, height, mobile, scale=1, dark=False):
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})
        self.call("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})

    def screenshot(self, path, full_page=True):
        params = {"format": "png", "captureBeyondViewport": full_page}
        data = self.call("Page.captureScreenshot", params, 30)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def requests(self, since=0.0, documents=True):
        """(wall time, method, url) of every request the tab sent since `since` (without the
        documents it loaded, if `documents` is false)."""
        return [(e[1], e[3]["request"]["method"], e[3]["request"]["url"])
                for e in self.events("Network.requestWillBeSent", since)
                if documents or e[3].get("type") != "Document"]

    def console_errors(self, since=0.0, expected_status=None):
        """Exceptions, console.error calls and error log entries. With `expected_status`,
        the network log line a document's own status produces (Chrome logs "Failed to load
        resource: ... 503" for a 503 page) is left out: the status is what the page is for."""
        documents = {p["requestId"] for _, _, m, p in self.events("Network.requestWillBeSent", since)
                     if p.get("type") == "Document"}
        out = []
        for _, _, m, p in self.events(since=since):
            if (m == "Log.entryAdded" and expected_status and p["entry"].get("source") == "network"
                    and p["entry"].get("networkRequestId") in documents
                    and f"status of {expected_status} " in p["entry"].get("text", "")):
                continue
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                         for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        return out

    def close(self):
        try:
            self.b.call("Target.closeTarget", {"targetId": self.target}, timeout=5)
        except CDPError:
            pass
