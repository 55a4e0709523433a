#!/usr/bin/env python3
"""The "app" in end-to-end tests: a real HTTP/1.1 server with keep-alive on port 80 (IPv4
and IPv6), answering every GET with 200 and a body that names it, so a test can tell the
app's answer from the maintenance page."""
import http.server
import socket
import sys


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real app server

    def do_GET(self):
        body = b"APP OK\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


port = int(sys.argv[1]) if len(sys.argv) > 1 else 80
DualStack(("::", port), App).serve_forever()
