#!/usr/bin/env python3
"""The "app" in end-to-end and fleet tests: a real HTTP/1.1 server with keep-alive on a port
(80 by default; IPv4 and IPv6), answering every GET and HEAD with 200 and a body that names
it (and a POST, read whole however slowly it comes, with "UPLOAD OK <bytes>"), so a test can tell the app's answer from the maintenance page.

    app.py [PORT [VERSION_FILE]]

With VERSION_FILE the body is "APP OK v<version>" (read at start), so a fleet test can tell
the app before and after an upgrade; without it, "APP OK"."""
import http.server
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 80
if len(sys.argv) > 2:
    with open(sys.argv[2]) as f:
        BODY = ("APP OK v%s\n" % f.read().strip()).encode()
else:
    BODY = b"APP OK\n"


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real app server

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(BODY)

    do_HEAD = do_GET

    def do_POST(self):
        # An upload: read the whole body, however slowly it comes, then say how much came.
        left = int(self.headers.get("Content-Length", "0"))
        got = 0
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            got += len(chunk)
            left -= len(chunk)
        body = ("UPLOAD OK %d\n" % got).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


DualStack(("::", port), App).serve_forever()
