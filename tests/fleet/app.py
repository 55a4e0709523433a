#!/usr/bin/env python3
"""The app on each fleet host: HTTP/1.1 with keep-alive on port 80 (IPv4 and IPv6), answering
every request with 200 and "APP OK v<version>", the version read from the VERSION file beside
it at start, so the client can tell the app before and after the upgrade from maint's page."""
import http.server
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION")) as f:
    BODY = ("APP OK v%s\n" % f.read().strip()).encode()


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(BODY)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


DualStack(("::", int(sys.argv[1]) if len(sys.argv) > 1 else 80), App).serve_forever()
