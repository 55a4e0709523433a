#!/usr/bin/env python3
"""The app behind maint in the browser tests: a real HTTP/1.1 keep-alive server on port 80
(IPv4 and IPv6), and on 443 with TLS when given a certificate, with HTML pages a browser can
tell apart from the maintenance page.

    GET  /form, GET /order   a form that POSTs to /order
    POST /order              counted; answers "Order received"
    GET  /.maint/...         404, as a real app answers a path it does not know
    GET  anything else       200, a page naming the path
    /favicon.ico             404

Every page carries <html data-app> and an inline script that stamps the time the browser
showed it (data-shown, ms since the epoch), so a test can tell when a visitor arrived.

Controls, answered only to the host itself (127.0.0.1 / ::1, which maint never redirects):
    GET /_test/fail?seconds=5   answer 502 (like a reverse proxy whose upstream is down) to
                                everyone else for that long, starting now
    GET /_test/stats            JSON: posts received, the last requests (method, path, status)
SIGUSR1 does the same as /_test/fail?seconds=5.
"""
import html
import http.server
import json
import signal
import socket
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
STATE = {"posts": 0, "fail_until": 0.0, "log": []}

FORM = """<form method="post" action="/order">
<input type="hidden" name="item" value="42"><input name="note" value="gift wrap">
<button type="submit">Place order</button></form>"""


def page(title, body):
    return f"""<!DOCTYPE html>
<html lang="en" data-app>
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{html.escape(title)}</title>
<script>document.documentElement.dataset.shown = String(Date.now());</script></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>
""".encode()


BAD_GATEWAY = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real app server
    server_version = "app"
    sys_version = ""

    def local(self):
        return self.client_address[0] in ("127.0.0.1", "::1", "::ffff:127.0.0.1")

    def answer(self, status, body, ctype="text/html; charset=utf-8"):
        with LOCK:
            STATE["log"].append([round(time.time(), 3), self.command, self.path, status])
            del STATE["log"][:-200]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def failing(self):
        with LOCK:
            return time.time() < STATE["fail_until"]

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_test/"):
            if not self.local():
                return self.answer(403, b"forbidden\n", "text/plain")
            if url.path == "/_test/fail":
                q = urllib.parse.parse_qs(url.query)
                secs = float(q.get("seconds", ["5"])[0])
                with LOCK:
                    STATE["fail_until"] = time.time() + secs
                return self.answer(200, b"failing\n", "text/plain")
            if url.path == "/_test/stats":
                with LOCK:
                    body = json.dumps({"posts": STATE["posts"], "log": STATE["log"]}).encode()
                return self.answer(200, body, "application/json")
            return self.answer(404, b"no such control\n", "text/plain")
        if self.failing():
            return self.answer(502, BAD_GATEWAY)
        if url.path == "/favicon.ico" or url.path.startswith("/.maint/"):
            return self.answer(404, page("Not found", "<p>The app has no such page.</p>"))
        if url.path in ("/form", "/order"):
            return self.answer(200, page("Order form", FORM))
        return self.answer(200, page(f"App page {url.path}", "<p>This is the app.</p>"))

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        if self.failing():
            return self.answer(502, BAD_GATEWAY)
        with LOCK:
            STATE["posts"] += 1
            n = STATE["posts"]
        self.answer(200, page("Order received", f"<p>Order number {n}.</p>"))

    def log_message(self, *args):
        pass


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def fail_on_signal(*_):
    with LOCK:
        STATE["fail_until"] = time.time() + 5


if __name__ == "__main__":
    # app.py [PORT [TLS_PORT CERT KEY]]: plain HTTP on PORT, and HTTPS on TLS_PORT when given.
    signal.signal(signal.SIGUSR1, fail_on_signal)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    if len(sys.argv) > 4:
        import ssl
        tls = DualStack(("::", int(sys.argv[2])), App)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        ctx.set_alpn_protocols(["http/1.1"])
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    DualStack(("::", port), App).serve_forever()
