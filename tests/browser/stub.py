#!/usr/bin/env python3
"""A stand-in for maint's maintenance server, for developing the page before the server
side exists (`tests/browser/run --stub`). It renders src/server/builtin.html with the
template context maint provides (Jinja2 with HTML auto-escaping, as minijinja does), injects
src/server/page.js before </body>, and implements the held request:

    GET /.maint/wait   held up to --hold seconds, then 204 + x-maintenance: on.
                       When maintenance ends: every held request is answered at once with
                       204 + x-maintenance: off + connection: close, and later ones at once.
    /.maint/<other>    404 (no assets)
    anything else      the 503 page, x-maintenance: on, Retry-After, no-store

Control, on 127.0.0.1 only (--control-port):
    GET /off   maintenance ends: answers the held requests, closes idle keep-alive
               connections (so the browser's next request opens a new connection, which the
               firewall, already without the redirect, sends to the app), and returns once
               every held request has been answered (at most 2 s)
    GET /on    maintenance (again)
    GET /stats JSON counters
"""
import argparse
import datetime
import email.utils
import http.server
import json
import math
import pathlib
import socket
import sys
import threading
import time

import jinja2

SRC = pathlib.Path(__file__).resolve().parent.parent.parent / "src" / "server"


class State:
    def __init__(self, hold):
        self.hold = hold
        self.cond = threading.Condition()
        self.on = True
        self.epoch = 0          # bumped when maintenance ends
        self.held = 0
        self.requests = 0
        self.waits = 0
        self.conns = set()      # open connections: handler objects


def contact_href(contact):
    c = contact.strip()
    if not c or " " in c:
        return ""
    if c.startswith("https://") or c.startswith("mailto:"):
        return c
    if "@" in c:
        return "mailto:" + c
    if "." in c and "/" not in c.split(".", 1)[0]:
        return "https://" + c
    return ""


def render(args):
    until = args.until
    eta = until_rfc = None
    if until is not None:
        up = datetime.datetime.fromtimestamp(math.ceil(until / 60) * 60, datetime.timezone.utc)
        eta = up.strftime("%Y-%m-%d %H:%M UTC")
        until_rfc = datetime.datetime.fromtimestamp(until, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.Undefined)
    html = env.from_string((SRC / "builtin.html").read_text()).render(
        title=args.title, reason=args.reason, contact=args.contact,
        contact_href=contact_href(args.contact), eta=eta, until=until_rfc,
        until_unix=until, retry_after=args.retry_after, assets="/.maint/")
    script = (SRC / "page.js").read_text()
    script = script.replace("UNTIL_MS", "null" if until is None else str(until * 1000))
    script = script.replace("WAIT_PATH", json.dumps("/.maint/wait"))
    at = html.rfind("</body>")
    html = html[:at] + script + html[at:] if at >= 0 else html + script
    return html.encode()


def make_handler(state, page, args):
    # As maint: the HTTP date of the window's end, or seconds when there is no window.
    retry_after = (email.utils.formatdate(args.until, usegmt=True) if args.until
                   else str(args.retry_after))

    class Maint(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maint-stub"
        sys_version = ""

        def setup(self):
            super().setup()
            with state.cond:
                state.conns.add(self)
            self.idle = True

        def finish(self):
            with state.cond:
                state.conns.discard(self)
            super().finish()
            try:
                self.connection.shutdown(socket.SHUT_WR)   # the FIN goes out now, not at GC
            except OSError:
                pass
            self.release()

        def parse_request(self):
            self.idle = False
            with state.cond:
                state.requests += 1
            return super().parse_request()

        def send(self, status, body, headers, close=False):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            if status != 204:
                self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD" and status != 204:
                self.wfile.write(body)
            self.wfile.flush()
            self.idle = True

        def wait(self):
            with state.cond:
                state.waits += 1
                epoch = state.epoch
                on = False
                if state.on:
                    # Counted as held until the answer is written and, when maintenance
                    # ended, the connection closed (see finish): /off returns only then, so
                    # the states are killed after the answer left through the NAT mapping.
                    state.held += 1
                    self.holding = True
                    deadline = time.monotonic() + state.hold
                    while state.on and state.epoch == epoch:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        state.cond.wait(left)
                    on = state.on and state.epoch == epoch
            self.send(204, b"", [("x-maintenance", "on" if on else "off"),
                                 ("Cache-Control", "no-store")], close=not on)
            if on:
                self.release()

        def release(self):
            if getattr(self, "holding", False):
                self.holding = False
                with state.cond:
                    state.held -= 1
                    state.cond.notify_all()

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/.maint/wait":
                return self.wait()
            with state.cond:
                on = state.on
            if path.startswith("/.maint/"):
                return self.send(404, b"no such asset\n", [
                    ("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                    ("x-maintenance", "on")], close=not on)
            # A request with a body is answered without reading it, then closed (as maint does).
            body_sent = self.headers.get("Content-Length") not in (None, "0")
            self.send(503, page, [
                ("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("Retry-After", retry_after), ("Vary", "Accept"), ("x-maintenance", "on")],
                close=body_sent or not on)

        do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        def log_message(self, *a):
            pass

    return Maint


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def control_handler(state, args):
    class Control(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/off":
                with state.cond:
                    state.on = False
                    state.epoch += 1
                    state.cond.notify_all()
                    deadline = time.monotonic() + 2
                    while state.held and time.monotonic() < deadline:
                        state.cond.wait(0.05)
                    idle = [c for c in state.conns if c.idle] if args.close_idle else []
                    left = state.held
                for c in idle:
                    try:
                        c.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                body = json.dumps({"held_left": left, "idle_closed": len(idle)})
            elif self.path == "/on":
                with state.cond:
                    state.on = True
                body = "{}"
            elif self.path == "/stats":
                with state.cond:
                    body = json.dumps({"on": state.on, "requests": state.requests,
                                       "waits": state.waits, "held": state.held,
                                       "connections": len(state.conns)})
            else:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    return Control


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8503)
    p.add_argument("--control-port", type=int, default=8599)
    p.add_argument("--hold", type=float, default=50.0)
    p.add_argument("--title", default="Down for maintenance")
    p.add_argument("--reason", default="We are performing scheduled maintenance.")
    p.add_argument("--contact", default="")
    p.add_argument("--until", type=int, default=None, help="window end, Unix seconds")
    p.add_argument("--retry-after", type=int, default=300)
    p.add_argument("--no-close-idle", dest="close_idle", action="store_false")
    args = p.parse_args()
    state = State(args.hold)
    page = render(args)
    srv = DualStack(("::", args.port), make_handler(state, page, args))
    ctl = http.server.ThreadingHTTPServer(("127.0.0.1", args.control_port), control_handler(state, args))
    ctl.daemon_threads = True
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    print(f"stub: serving on {args.port}, control on 127.0.0.1:{args.control_port}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
