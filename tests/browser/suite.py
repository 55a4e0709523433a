#!/usr/bin/env python3
"""maint's maintenance page in a real browser (issue 13). Run by tests/browser/run, which
installs what it needs; see tests/browser/README.md.

Hosts, each a network namespace this script creates and removes again (documentation
prefixes only), joined by one veth pair (no bridge in the server's namespace):

    client  198.51.100.10  2001:db8:100::10  Debian's chromium, headless, driven over the
                                             DevTools protocol (cdp.py) on 127.0.0.1:9222
    server  198.51.100.1   2001:db8:100::1   the app (app.py) on port 80, and maint
                                             (`maint on` / `maint off`), or with --stub the
                                             stand-in server (stub.py) behind an equivalent
                                             nftables redirect of our own

Scenarios: the page while maintenance is on (overflow at 320/390 px and desktop, light and
dark, contrast, local-time ETA, no-script fallback, no console errors, no favicon request,
screenshots), requests per minute of an idle tab, the time from `off` returning to the app's
page in the browser, a form POSTed during maintenance (never re-sent), and an app that
answers 502 for 5 s after `off`.
"""
import argparse
import datetime
import email.utils
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from pathlib import Path
from zoneinfo import ZoneInfo

from cdp import Browser, CDPError, browser_ws_url, netns

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SRV4, SRV6 = "198.51.100.1", "2001:db8:100::1"
CLI4, CLI6 = "198.51.100.10", "2001:db8:100::10"
DEVTOOLS_PORT = 9222
MAINT_PORT, STUB_CONTROL_PORT = 503, 8599
TZ, LOCALE = "Europe/Berlin", "en-GB"
TITLE = "Example Shop is down for maintenance"
REASON = ("We are moving the shop to new servers. Follow the work at "
          "https://status.example.org/incidents/2026-11-22-database-migration-and-storage-upgrade")
CONTACT = "ops@example.org"
WAIT_PATH = "/.maint/wait"


def now():
    return time.strftime("%H:%M:%S")


def log(msg):
    print(f"[{now()}] {msg}", flush=True)


class Failed(Exception):
    pass


class Run:
    """Everything the run created, so that cleanup removes exactly that."""

    def __init__(self, args):
        self.args = args
        tag = args.tag or str(os.getpid())
        self.ns_srv, self.ns_cli = f"mb-bsrv-{tag}", f"mb-bcli-{tag}"
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="maint-browser."))
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o755)
        self.namespaces = []
        self.procs = []
        self.passed, self.failed = 0, 0
        self.measures = []
        self.manifest()

    # -- bookkeeping for cleanup (also read by tests/browser/run's trap if we die hard)
    def manifest(self):
        (self.work / "cleanup.json").write_text(json.dumps({
            "namespaces": self.namespaces, "pids": [p.pid for p in self.procs]}))

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{' - ' + detail if detail else ''}", flush=True)
        return ok

    def measure(self, text):
        self.measures.append(text)
        print(f"  >>   {text}", flush=True)

    # -- processes and namespaces
    def run(self, ns, *cmd, timeout=30, check=True, input=None):
        full = ["ip", "netns", "exec", ns, *map(str, cmd)] if ns else list(map(str, cmd))
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise Failed(f"{' '.join(full)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def spawn(self, ns, *cmd, name, env=None):
        out = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen(["ip", "netns", "exec", ns, *map(str, cmd)], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        out.close()
        self.procs.append(p)
        self.manifest()
        return p

    def net(self):
        for ns in (self.ns_srv, self.ns_cli):
            self.run(None, "ip", "netns", "add", ns)
            self.namespaces.append(ns)
            self.manifest()
            self.run(ns, "ip", "link", "set", "lo", "up")
        a, b = f"mbs{self.ns_srv[-9:]}"[-15:], f"mbc{self.ns_cli[-9:]}"[-15:]
        self.run(None, "ip", "link", "add", a, "netns", self.ns_srv, "type", "veth",
                 "peer", "name", b, "netns", self.ns_cli)
        self.run(self.ns_srv, "ip", "link", "set", a, "name", "eth0")
        self.run(self.ns_cli, "ip", "link", "set", b, "name", "eth0")
        for ns, v4, v6 in ((self.ns_srv, SRV4, SRV6), (self.ns_cli, CLI4, CLI6)):
            self.run(ns, "ip", "addr", "add", f"{v4}/24", "dev", "eth0")
            self.run(ns, "ip", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
            self.run(ns, "ip", "link", "set", "eth0", "up")
        # The stateful firewall a real web host has (it also switches conntrack on before
        # maint arrives, as on a real host).
        self.run(self.ns_srv, "nft", "-f", "-", input=(
            "table inet host_filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
            "  ct state established,related accept\n  tcp dport { 22, 80, 443 } accept\n }\n}\n"))

    def local_get(self, port, path, timeout=5):
        """GET from the server host itself (never redirected): the app's and stub's controls."""
        with netns(self.ns_srv):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            c.close()
        return r.status, body

    def app_stats(self):
        return json.loads(self.local_get(80, "/_test/stats")[1])

    def cleanup(self):
        log("cleaning up")
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        # Whatever still runs inside our namespaces was started by this run (maint's server,
        # chromium's helpers): end it by pid, then remove the namespaces.
        for ns in self.namespaces:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
                pids = [int(x) for x in r.stdout.split()]
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if pids:
                    time.sleep(1)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces, self.procs = [], []
        (self.work / "cleanup.json").unlink(missing_ok=True)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


# ------------------------------------------------------------------------- maint, or the stub

class RealMaint:
    name = "maint"

    def __init__(self, run):
        self.run = run
        src = os.environ.get("MAINT_BIN") or str(REPO / "target" / "debug" / "maint")
        if not os.access(src, os.X_OK):
            raise Failed(f"no maint binary at {src} (build it, or set MAINT_BIN)")
        self.bin = run.work / "maint"
        shutil.copy2(src, self.bin)       # the checkout's binary may be rebuilt meanwhile
        self.config = run.work / "maint.toml"
        self.config.write_text(f"""[server]
http_port = {MAINT_PORT}
[page]
title = "{TITLE}"
contact = "{CONTACT}"
[tls]
discover = false
self_signed = true
[firewall]
http_ports = [80]
https_ports = [443]
[paths]
state_dir = "{run.work / 'state'}"
runtime_dir = "{run.work / 'state'}"
""")
        self.active = False
        log(f"maint: {src} (copied to {self.bin})")

    def maint(self, *args, timeout=60):
        r = self.run.run(self.run.ns_srv, self.bin, "--config", self.config, "--json", *args,
                         timeout=timeout, check=False)
        if r.returncode != 0:
            raise Failed(f"maint {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return json.loads(r.stdout)

    def on(self, window):
        args = ["on"] + (["--for", window] if window else []) + ["--reason", REASON]
        out = self.maint(*args)
        self.active = True
        until = out.get("until")
        return datetime.datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() if until else None

    def off(self):
        out = self.maint("off")
        self.active = False
        return out

    def stop(self):
        try:
            self.maint("off", timeout=30)
        except Exception as e:
            log(f"maint off at cleanup: {e}")


class StubMaint:
    """stub.py behind our own redirect, toggled in the order maint must keep: on = server
    ready, redirect, kill the app's states; off = stop redirecting new connections (keeping
    the nat chain), let the server answer its held requests and close its connections, then
    remove the table and kill the states redirected to it."""
    name = "stub"
    TABLE = "mbstub"

    def __init__(self, run, python):
        self.run = run
        self.until = int(time.time()) + 25 * 60 + 20
        run.spawn(run.ns_srv, python, HERE / "stub.py", "--port", MAINT_PORT,
                  "--control-port", STUB_CONTROL_PORT, "--hold", run.args.stub_hold,
                  "--title", TITLE, "--reason", REASON, "--contact", CONTACT,
                  "--until", self.until, *(["--no-close-idle"] if run.args.stub_keep_idle else []),
                  name="stub")
        wait_for(lambda: self._control("/stats"), 10, "the stub answers")
        self.active = False

    def _control(self, path):
        try:
            return json.loads(self.run.local_get(STUB_CONTROL_PORT, path)[1])
        except OSError:
            return None

    def on(self, window):
        self._control("/on")
        self.run.run(self.run.ns_srv, "nft", "-f", "-", input=f"""table inet {self.TABLE} {{
 chain prerouting {{
  type nat hook prerouting priority -110; policy accept;
  ip saddr 198.51.100.0/24 tcp dport 80 redirect to :{MAINT_PORT}
  ip6 saddr 2001:db8:100::/64 tcp dport 80 redirect to :{MAINT_PORT}
 }}
}}
""")
        self.run.run(self.run.ns_srv, "conntrack", "-D", "-p", "tcp", "--orig-port-dst", "80",
                     "--reply-port-src", "80", check=False)
        self.active = True
        return self.until

    def off(self):
        # Stop redirecting new connections, but keep the nat chain: with no nat chain left
        # in the namespace the kernel stops translating the replies of redirected
        # connections, and the held answers would leave from port 8503, unseen by the browser.
        self.run.run(self.run.ns_srv, "nft", "flush", "chain", "inet", self.TABLE, "prerouting")
        out = self._control("/off")
        self.run.run(self.run.ns_srv, "nft", "delete", "table", "inet", self.TABLE)
        self.run.run(self.run.ns_srv, "conntrack", "-D", "-p", "tcp", "--reply-port-src", MAINT_PORT,
                     check=False)
        self.active = False
        return out

    def stop(self):
        self.run.run(self.run.ns_srv, "nft", "delete", "table", "inet", self.TABLE, check=False)


# ------------------------------------------------------------------------------ helpers

def wait_for(f, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout} s waiting until {what}")
        time.sleep(interval)


def holding(tab, since):
    """Whether the tab has a request to the wait path in flight (sent, no answer yet)."""
    sent = {p["requestId"] for _, _, _, p in tab.events("Network.requestWillBeSent", since)
            if urllib.parse.urlsplit(p["request"]["url"]).path == WAIT_PATH}
    ended = {p["requestId"] for _, _, m, p in tab.events(since=since)
             if m in ("Network.responseReceived", "Network.loadingFailed")}
    return bool(sent - ended)


def trace(tab, since, t0):
    """What the tab asked and got since `since`: 't+1.23s GET /path -> 502' lines."""
    sent, out = {}, []
    for _, wall, m, p in tab.events(since=since):
        if m == "Network.requestWillBeSent":
            u = urllib.parse.urlsplit(p["request"]["url"])
            sent[p["requestId"]] = (wall, p["request"]["method"], u.path + ("?" + u.query if u.query else ""))
        elif m in ("Network.responseReceived", "Network.loadingFailed") and p["requestId"] in sent:
            w, meth, path = sent.pop(p["requestId"])
            res = (p["response"]["status"] if m == "Network.responseReceived"
                   else p.get("errorText", "failed"))
            mark = ""
            if m == "Network.responseReceived":
                h = {k.lower(): v for k, v in p["response"]["headers"].items()}
                mark = f" x-maintenance:{h['x-maintenance']}" if "x-maintenance" in h else ""
            out.append((w, f"t{w - t0:+.2f}s {meth} {path} -> {res}{mark}"))
    for w, meth, path in sent.values():
        out.append((w, f"t{w - t0:+.2f}s {meth} {path} -> (no answer yet)"))
    return [s for _, s in sorted(out)]


APP_SHOWN = ("document.documentElement.hasAttribute('data-app') && "
             "document.documentElement.dataset.shown")
IS_MAINT = "!document.documentElement.hasAttribute('data-app') && document.readyState === 'complete'"

OVERFLOW_JS = r"""(() => {
  const de = document.documentElement, main = document.querySelector('main') || document.body;
  const m = main.getBoundingClientRect(), bad = [];
  for (const el of main.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    if (r.right > m.right + 0.5 || r.left < m.left - 0.5)
      bad.push(el.tagName.toLowerCase() + ' outside the card: ' + (el.textContent || '').trim().slice(0, 40));
    const cs = getComputedStyle(el);
    if (cs.display !== 'inline' && el.scrollWidth > el.clientWidth + 1)
      bad.push(el.tagName.toLowerCase() + ' content wider than the box: ' + (el.textContent || '').trim().slice(0, 40));
  }
  if (main.scrollWidth > main.clientWidth + 1) bad.push('card content wider than the card');
  return { viewport: de.clientWidth, scroll: de.scrollWidth, card: [Math.round(m.left), Math.round(m.right)],
           bad: bad };
})()"""

CONTRAST_JS = r"""(() => {
  const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bgOf = el => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c; } return [255, 255, 255]; };
  let worst = 99, what = '';
  for (const el of document.querySelectorAll('main h1, main p, main a, main strong, main span')) {
    if (!el.getClientRects().length || !(el.textContent || '').trim()) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(bgOf(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst) { worst = ratio; what = el.tagName.toLowerCase() + ': ' + el.textContent.trim().slice(0, 30); }
  }
  return { worst: Math.round(worst * 100) / 100, what: what };
})()"""

PAGE_FACTS_JS = r"""(() => {
  const eta = document.querySelector('[data-maint-eta]');
  const script = document.querySelector('[data-maint-script]');
  const a = document.querySelector('main a');
  const nav = performance.getEntriesByType('navigation')[0] || {};
  return { eta: eta ? eta.textContent.replace(/\s+/g, ' ').trim() : null,
           scriptNote: script ? !!script.getClientRects().length : null,
           contactHref: a ? a.getAttribute('href') : null,
           status: nav.responseStatus || null,
           text: document.body ? document.body.innerText.replace(/\s+/g, ' ').trim() : '' };
})()"""


def local_clock(ts, tz):
    """The page's ETA time for a window ending at `ts`: rounded up to the minute, local."""
    end = datetime.datetime.fromtimestamp(math.ceil(ts / 60) * 60, ZoneInfo(tz))
    return end


def retry_after_of(tab):
    for _, wall, m, p in tab.events("Network.responseReceived"):
        if p.get("type") == "Document":
            h = {k.lower(): v for k, v in p["response"]["headers"].items()}
            ra = h.get("retry-after")
            if ra is None:
                return None
            if ra.strip().isdigit():
                return wall + int(ra) - 1      # whole seconds, counted from before the answer
            return email.utils.parsedate_to_datetime(ra).timestamp()
    return None


# ------------------------------------------------------------------------------ scenarios

class Suite:
    def __init__(self, run, maint, browser):
        self.r, self.m, self.b = run, maint, browser
        self.shots = Path(run.args.screenshots)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.maint_tabs = []       # tabs that showed the maintenance page, for console checks
        self.trial_times = []

    def tab(self):
        """A tab in a browser context of its own (own connections, storage, channels)."""
        return self.b.tab(self.b.context())

    def open_maint(self, tab, url):
        tab.navigate(url)
        if not tab.wait_until(IS_MAINT, 10):
            raise Failed(f"{url} did not show the maintenance page")
        self.maint_tabs.append(tab)

    def wait_holding(self, tab, since, timeout=8):
        try:
            wait_for(lambda: holding(tab, since), timeout, "the page holds its wait request")
            return True
        except Failed:
            log(f"  (no {WAIT_PATH} request in flight after {timeout} s: the page does not hold one)")
            return False

    def returned(self, tab, t_start, t_off, label, timeout=60):
        """Seconds from `off` returning to the app's page shown in the tab (negative: shown
        before the command had returned), and prints it with the time from `off` starting."""
        shown = tab.wait_until(APP_SHOWN, timeout)
        if not shown:
            self.r.check(f"{label}: the browser shows the app's page after off", False,
                         f"still not after {timeout} s")
            return None
        shown = int(shown) / 1000
        self.r.measure(f"app page shown {shown - t_off:+.2f} s after off returned "
                       f"({shown - t_start:.2f} s after off started): {label}")
        return shown - t_off

    # A. Maintenance on: the page itself, an idle tab, a POSTed form; then off.
    def phase_a(self):
        r, m = self.r, self.m
        log("A. maintenance on: the page, an idle tab, a POSTed form; then off")
        post = self.tab()
        post.navigate(f"http://{SRV4}/form")
        r.check("the app's form page loads before maintenance", bool(post.try_evaluate(APP_SHOWN)))

        until = m.on("25m")
        log(f"  {m.name} on (window end {datetime.datetime.fromtimestamp(until, datetime.timezone.utc):%H:%M:%S} UTC)"
            if until else f"  {m.name} on")

        idle = self.tab()
        idle_since = time.monotonic()
        self.open_maint(idle, f"http://{SRV4}/catalog/")

        # The visitor sends the form while maintenance is on: the POST reaches maint, not the app.
        since = time.monotonic()
        post.evaluate("setTimeout(() => document.forms[0].submit(), 0), true")
        if not post.wait_event(lambda mm, p: mm == "Page.loadEventFired", 15, since):
            raise Failed("the form submission did not load a page")
        post.wait_until(IS_MAINT, 5)
        facts = post.try_evaluate(PAGE_FACTS_JS) or {}
        self.maint_tabs.append(post)
        r.check("a form POSTed during maintenance gets the maintenance page",
                facts.get("status") == 503 and not post.try_evaluate("document.documentElement.hasAttribute('data-app')"),
                f"status {facts.get('status')}")
        r.check("the POST did not reach the app", self.r.app_stats()["posts"] == 0)

        ret = self.b.tab(self.b.context())
        self.open_maint(ret, f"http://{SRV4}/shop/cart?item=42#summary")
        ret6 = self.b.tab(self.b.context())
        self.open_maint(ret6, f"http://[{SRV6}]/account/orders")

        self.page_checks(until)

        # The idle tab: requests per minute while maintenance stays on.
        left = self.r.args.idle_seconds - (time.monotonic() - idle_since)
        if left > 0:
            log(f"  idle tab: watching its requests for {self.r.args.idle_seconds} s in all "
                f"({left:.0f} s more)")
            time.sleep(left)
        span = time.monotonic() - idle_since
        reqs = idle.requests(idle_since, documents=False)
        per_min = len(reqs) / span * 60
        r.measure(f"idle tab while on: {len(reqs)} requests in {span:.0f} s = {per_min:.2f} per minute "
                  f"({', '.join(sorted({urllib.parse.urlsplit(u).path for _, _, u in reqs})) or 'none'}); "
                  f"today's page: 2 per minute")
        r.check("idle tab: at most 2 requests a minute", len(reqs) <= 2 * span / 60 + 1,
                f"{len(reqs)} in {span:.0f} s")

        errors = [f"{t.target[:6]}: {e}" for t in self.maint_tabs for e in t.console_errors(expected_status=503)]
        r.check("no console errors on the maintenance page while on", not errors, "; ".join(errors[:5]))
        icons = [u for t in self.maint_tabs for _, _, u in t.requests() if u.endswith("/favicon.ico")]
        r.check("no favicon request", not icons, ", ".join(icons[:3]))

        # Off: every open tab should come back by itself, at once.
        tabs = {"GET tab (IPv4, URL with #fragment)": ret, "GET tab (IPv6)": ret6,
                "idle tab": idle, "tab that POSTed": post}
        for t in tabs.values():
            self.wait_holding(t, 0, 3)
        log(f"  {m.name} off")
        t_start = time.time()
        m.off()
        t_off = time.time()
        r.measure(f"{m.name} off took {t_off - t_start:.2f} s")
        times = {}
        for label, t in tabs.items():
            dt = self.returned(t, t_start, t_off, label)
            if dt is not None:
                times[label] = dt
        if times:
            r.check("visitors return within 2 s of off returning", max(times.values()) < 2.0,
                    f"slowest {max(times.values()):.2f} s")
        self.trial_times = [times.get("GET tab (IPv4, URL with #fragment)")]
        href = ret.try_evaluate("location.href")
        r.check("the GET tab came back to the same URL, fragment kept",
                href == f"http://{SRV4}/shop/cart?item=42#summary", str(href))

        # The POSTed form: back with a GET of the same URL; the POST never sent again.
        stats = r.app_stats()
        gets = [e for e in stats["log"] if e[0] >= t_start and e[2] == "/order"]
        r.check("the tab that POSTed came back with a GET of the same URL",
                post.try_evaluate("location.pathname") == "/order" and any(e[1] == "GET" for e in gets),
                f"app saw {[(e[1], e[2], e[3]) for e in gets]}")
        time.sleep(3)
        posts = r.app_stats()["posts"]
        r.check("the POST made during maintenance was not re-sent", posts == 0, f"app received {posts} POSTs")
        since = time.monotonic()
        post.evaluate("setTimeout(() => document.forms[0].submit(), 0), true")
        post.wait_event(lambda mm, p: mm == "Page.loadEventFired", 15, since)
        got = post.wait_until("document.title === 'Order received'", 10)
        posts = r.app_stats()["posts"]
        r.check("the form reaches the app exactly once, when the visitor sends it again",
                bool(got) and posts == 1, f"app received {posts} POSTs")
        for t in tabs.values():
            t.close()

    def page_checks(self, until):
        """Overflow, contrast, ETA, script-only text, screenshots: phone 320/390 px and
        desktop, light and dark, local time zone TZ and locale LOCALE."""
        r = self.r
        tab = self.tab()
        tab.call("Emulation.setTimezoneOverride", {"timezoneId": TZ})
        tab.call("Emulation.setLocaleOverride", {"locale": LOCALE})
        sizes = [("phone-320", 320, 640, True, 2), ("phone-390", 390, 844, True, 2),
                 ("desktop", 1280, 800, False, 1)]
        tab.viewport(320, 640, True, 2)
        self.open_maint(tab, f"http://{SRV4}/checkout/payment")
        facts = tab.try_evaluate(PAGE_FACTS_JS) or {}
        # The ETA: local time, rounded up, never earlier than Retry-After.
        if until:
            end = local_clock(until, TZ)
            want = end.strftime("%H:%M")
            eta = facts.get("eta") or ""
            m_ = re.search(r"back around (\d{1,2}):(\d{2})", eta)
            shown_ok = bool(m_) and f"{int(m_.group(1)):02d}:{m_.group(2)}" == want
            r.check("the ETA is the local time, rounded up", shown_ok and "in about" in eta,
                    f"{eta!r}, expected {want} ({TZ})")
            ra = retry_after_of(tab)
            if m_ and ra:
                shown_ts = end.replace(hour=int(m_.group(1)), minute=int(m_.group(2))).timestamp()
                r.check("the ETA is never earlier than Retry-After", shown_ts >= ra,
                        f"shown {m_.group(0)}, Retry-After {datetime.datetime.fromtimestamp(ra, ZoneInfo(TZ)):%H:%M:%S}")
        r.check("the sentence about returning by itself shows with script", facts.get("scriptNote") is True,
                str(facts.get("scriptNote")))
        r.check("the contact is a link", facts.get("contactHref") == f"mailto:{CONTACT}",
                str(facts.get("contactHref")))
        for name, w, h, mobile, scale in sizes:
            for dark in (False, True):
                tab.viewport(w, h, mobile, scale, dark)
                time.sleep(0.2)
                o = tab.evaluate(OVERFLOW_JS)
                mode = "dark" if dark else "light"
                r.check(f"no horizontal overflow, {name} {mode}",
                        o["scroll"] <= o["viewport"] and not o["bad"],
                        f"page {o['scroll']} px in a {o['viewport']} px viewport, card {o['card']}"
                        + (f"; {'; '.join(o['bad'][:3])}" if o["bad"] else ""))
                c = tab.evaluate(CONTRAST_JS)
                r.check(f"text contrast at least 4.5:1, {name} {mode}", c["worst"] >= 4.5,
                        f"lowest {c['worst']}:1 ({c['what']})")
                path = self.shots / f"{name}-{mode}.png"
                tab.screenshot(path)
                log(f"  screenshot {path}")
        # Without script: the UTC ETA, no sentence about script behaviour, still no overflow.
        ns = self.tab()
        ns.call("Emulation.setScriptExecutionDisabled", {"value": True})
        ns.viewport(320, 640, True, 2)
        ns.navigate(f"http://{SRV4}/checkout/payment")
        hidden = ns.evaluate("(() => { const e = document.querySelector('[data-maint-script]');"
                             " return !e || !e.getClientRects().length; })()")
        eta = ns.evaluate("(() => { const e = document.querySelector('main'); return e ? e.innerText : ''; })()")
        r.check("without script the sentence about returning by itself is not shown", hidden is True)
        if until:
            want = datetime.datetime.fromtimestamp(math.ceil(until / 60) * 60, datetime.timezone.utc)
            r.check("without script the ETA is UTC, rounded up", want.strftime("%Y-%m-%d %H:%M UTC") in eta,
                    f"expected {want:%Y-%m-%d %H:%M} UTC in {eta!r}")
        o = ns.evaluate(OVERFLOW_JS)
        r.check("without script no horizontal overflow at 320 px", o["scroll"] <= o["viewport"] and not o["bad"],
                f"page {o['scroll']} px in {o['viewport']} px" + (f"; {o['bad'][:2]}" if o["bad"] else ""))
        self.maint_tabs.append(ns)

    # B. The app answers 502 for 5 s after off: the visitor still ends on its real page.
    def phase_b(self):
        r, m = self.r, self.m
        log("B. the app answers 502 for 5 s after off")
        m.on(None)
        tab = self.tab()
        self.open_maint(tab, f"http://{SRV4}/dashboard")
        since = time.monotonic()
        self.wait_holding(tab, 0)
        r.local_get(80, "/_test/fail?seconds=5")
        t_start = time.time()
        m.off()
        t_off = time.time()
        dt = self.returned(tab, t_start, t_off, "the app answered 502 for 5 s after off", timeout=60)
        title = tab.try_evaluate("document.title")
        for line in trace(tab, since, t_off):
            log(f"    {line}")
        ok = dt is not None and title == "App page /dashboard"
        r.check("app answering 502 for 5 s after off: the visitor ends on the app's real page", ok,
                f"title {title!r}" + (f", after {dt:.2f} s" if dt is not None else ""))
        stay = tab.try_evaluate("document.title")
        time.sleep(2)
        r.check("and it stays there", tab.try_evaluate("document.title") == stay == "App page /dashboard")
        tab.close()

    # C. More return-time trials (alternating IPv4 and IPv6).
    def phase_c(self):
        r, m = self.r, self.m
        for i in range(self.r.args.trials - 1):
            host = SRV4 if i % 2 else f"[{SRV6}]"
            log(f"C. return trial {i + 2} ({'IPv4' if i % 2 else 'IPv6'})")
            m.on(None)
            tab = self.tab()
            self.open_maint(tab, f"http://{host}/products/{i}")
            self.wait_holding(tab, 0)
            time.sleep(1 + i)      # different points in the hold
            t_start = time.time()
            m.off()
            t_off = time.time()
            dt = self.returned(tab, t_start, t_off, f"trial {i + 2}, {'IPv4' if i % 2 else 'IPv6'}")
            if dt is not None:
                self.trial_times.append(dt)
                r.check(f"trial {i + 2}: back within 2 s", dt < 2.0, f"{dt:.2f} s")
            tab.close()

    # D. Over HTTPS, where the browser speaks HTTP/2 to maint and multiplexes its requests
    # on one connection (real maint only: the stub has no TLS).
    def phase_d(self):
        r, m = self.r, self.m
        if m.name != "maint":
            log("D. HTTPS (HTTP/2) return trial: skipped with the stub")
        else:
            log("D. return trial over HTTPS (HTTP/2 by ALPN)")
            m.on(None)
            tab = self.tab()
            self.open_maint(tab, f"https://{SRV4}/secure/account")
            protos = {p["response"].get("protocol") for _, _, _, p in tab.events("Network.responseReceived")}
            r.measure(f"HTTPS: the maintenance page came over {', '.join(sorted(filter(None, protos)))}")
            self.wait_holding(tab, 0)
            time.sleep(2)
            t_start = time.time()
            m.off()
            t_off = time.time()
            dt = self.returned(tab, t_start, t_off, "HTTPS trial (HTTP/2)")
            if dt is not None:
                self.trial_times.append(dt)
                r.check("HTTPS trial: back within 2 s", dt < 2.0, f"{dt:.2f} s")
            for line in trace(tab, 0, t_off)[-8:]:
                log(f"    {line}")
            tab.close()
        ts = [t for t in self.trial_times if t is not None]
        if ts:
            r.measure("from off returned to the app's page, over the trials: "
                      + ", ".join(f"{t:+.2f} s" for t in ts) + " (target under 2 s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stub", action="store_true", help="use stub.py instead of the real maint")
    ap.add_argument("--screenshots", default=str(HERE / "screenshots"), help="where to write PNGs")
    ap.add_argument("--idle-seconds", type=float, default=125, help="how long to watch the idle tab")
    ap.add_argument("--trials", type=int, default=3, help="return-time trials (the first is phase A)")
    ap.add_argument("--stub-hold", type=float, default=50, help="the stub's hold time, seconds")
    ap.add_argument("--stub-keep-idle", action="store_true",
                    help="the stub leaves idle keep-alive connections open at off (to see why it should not)")
    ap.add_argument("--work", help="work directory (created by the runner)")
    ap.add_argument("--tag", help="suffix of namespace names")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    run = Run(args)
    maint = browser = None
    try:
        run.net()
        cert, key = run.work / "app.crt", run.work / "app.key"
        run.run(None, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=shop.example",
                "-addext", f"subjectAltName=IP:{SRV4},IP:{SRV6}")
        run.spawn(run.ns_srv, sys.executable, HERE / "app.py", "80", "443", cert, key, name="app")
        wait_for(lambda: _try(run.app_stats), 10, "the app answers")
        maint = StubMaint(run, sys.executable) if args.stub else RealMaint(run)
        home = run.work / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_CACHE_HOME=str(home / ".cache"))
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(k, None)
        run.spawn(run.ns_cli, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--no-proxy-server", "--mute-audio",
                  "--ignore-certificate-errors",   # maint's and the app's self-signed certificates
                  "--password-store=basic", "--disable-features=Translate,MediaRouter,OptimizationHints",
                  f"--user-data-dir={run.work / 'profile'}", f"--remote-debugging-port={DEVTOOLS_PORT}",
                  "--remote-debugging-address=127.0.0.1", "about:blank", name="chromium", env=env)
        page_logic(run)
        browser = Browser(browser_ws_url(DEVTOOLS_PORT, run.ns_cli), run.ns_cli)
        version = browser.call("Browser.getVersion")
        log(f"browser: {version.get('product')}; maintenance server: {maint.name}")
        suite = Suite(run, maint, browser)
        for phase in (suite.phase_a, suite.phase_b, suite.phase_c, suite.phase_d):
            try:
                phase()
            except (Failed, CDPError, OSError, subprocess.TimeoutExpired) as e:
                run.check(f"{phase.__name__} ran to the end", False, str(e))
                traceback.print_exc()
                if maint.active:
                    try:
                        maint.off()
                    except Exception as e2:
                        log(f"off after failure: {e2}")
    except (Failed, CDPError, OSError, subprocess.TimeoutExpired) as e:
        run.check("set-up", False, str(e))
        traceback.print_exc()
    except KeyboardInterrupt as e:
        run.check("interrupted", False, str(e))
    finally:
        if browser:
            browser.close()
        if maint:
            maint.stop()
        run.cleanup()
    if run.measures:
        print("\nmeasurements:")
        for m in run.measures:
            print(f"  {m}")
    print(f"browser: {run.passed} passed, {run.failed} failed", flush=True)
    return 1 if run.failed else 0


def page_logic(run):
    """page.js on a simulated clock in Node (page_logic.js): its counts join the total."""
    log("page logic in Node, simulated clock (page_logic.js)")
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        run.check("page logic: node is installed", False)
        return
    r = subprocess.run([node, HERE / "page_logic.js"], capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        m = re.match(r"\s+(ok  |FAIL) (.*)", line)
        if m:
            print(line, flush=True)
            if m.group(1) == "FAIL":
                run.failed += 1
            else:
                run.passed += 1
    if r.returncode != 0 and "FAIL" not in r.stdout:
        run.check("page logic ran", False, (r.stderr or r.stdout)[-500:])


def _try(f):
    try:
        return f()
    except (OSError, ValueError, http.client.HTTPException):
        return None


if __name__ == "__main__":
    sys.exit(main())
