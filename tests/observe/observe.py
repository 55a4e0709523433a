#!/usr/bin/env python3
"""maint's observability, end to end (issue 14). Run by tests/observe/run inside a private
mount namespace, as root:

    journald (real systemd-journald, its /run and journal on tmpfs in this mount namespace)

    ns srv: maint serve, [metrics] listen = 127.0.0.1:9503      ns cli: curl, raw sockets
        192.0.2.1/24, 2001:db8:14::1/64  -- veth --  192.0.2.2/24, 2001:db8:14::2/64

Checks:
  - the metrics listener, scraped from the server's namespace and parsed with
    prometheus_client's own text-format parser while the client hits the page: the counters
    move by what the client did (per scheme and answer format, a direct connection refused, a
    failed TLS handshake, states killed), maint_active follows on/off, maint_kernel_in_sync and
    maint_repairs_total follow a flush of the ruleset, and the listener cannot be reached from
    the client's namespace;
  - `maint status --format prometheus --output FILE` parsed by the same parser, the file
    written whole (mode 0644, no temporary file left);
  - the audit trail read back with `journalctl -o export`: one entry per transition (on,
    change, off, expiry, repair, restore) with its MESSAGE_ID, who, what and why;
  - `maint status` says who switched maintenance on and since when, in RFC 3339.

Prints `ok`/`FAIL` per check and ends with `observe: N passed, N failed`; exit 1 on failure.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SRV, CLI = "mo-srv", "mo-cli"
SRV4, CLI4 = "192.0.2.1", "192.0.2.2"
SRV6, CLI6 = "2001:db8:14::1", "2001:db8:14::2"
METRICS = "127.0.0.1:9503"
IDS = {
    "on": "643c4a2f617942f399de044badf3342d",
    "change": "83354ba8e0644a4aa8f8a07a96b01fa7",
    "off": "02169d5ffa164939a3b7761a12b023cf",
    "expiry": "39887ca48a8946b7b77331da12c8d891",
    "repair": "a2f724607fce4a0ba8d0eb2238a82099",
    "restore": "8844450c8e694d4e9a0db5dae6772738",
}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def run(cmd, timeout=30, check=True, env=None, input=None):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=env, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def ns(name, *cmd, **kw):
    return run(["ip", "netns", "exec", name, *cmd], **kw)


def wait_for(what, predicate, timeout=10.0, every=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Host:
    """Everything the test made, so that teardown removes exactly that."""

    def __init__(self, maint, keep):
        self.maint = maint
        self.keep = keep
        self.work = Path(tempfile.mkdtemp(prefix="maint-observe."))
        os.chmod(self.work, 0o755)
        self.journald = None
        self.server = None
        self.config = self.work / "maint.toml"
        self.prom_file = self.work / "textfile" / "maint.prom"

    # --- the private mount namespace and its journald
    def private_run_and_journal(self):
        run(["mount", "--make-rprivate", "/"])
        run(["mount", "-t", "tmpfs", "tmpfs", "/run"])
        if Path("/var/log/journal").is_dir():
            run(["mount", "-t", "tmpfs", "tmpfs", "/var/log/journal"])
        Path("/run/systemd/journal").mkdir(parents=True)
        Path("/run/log/journal").mkdir(parents=True)
        journald = next((p for p in ["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"]
                         if Path(p).exists()), None)
        if not journald:
            raise RuntimeError("systemd-journald not found (the systemd package)")
        self.journald = subprocess.Popen([journald], stdout=subprocess.DEVNULL,
                                         stderr=open(self.work / "journald.log", "w"))
        wait_for("journald's socket", lambda: Path("/run/systemd/journal/socket").is_socket())

    # --- network namespaces
    def network(self):
        for name in (SRV, CLI):
            run(["ip", "netns", "add", name])
            ns(name, "ip", "link", "set", "lo", "up")
        run(["ip", "link", "add", "mo-s", "netns", SRV, "type", "veth", "peer", "name", "mo-c",
             "netns", CLI])
        for name, dev, v4, v6 in ((SRV, "mo-s", SRV4, SRV6), (CLI, "mo-c", CLI4, CLI6)):
            ns(name, "ip", "addr", "add", f"{v4}/24", "dev", dev)
            ns(name, "ip", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ns(name, "ip", "link", "set", dev, "up")

    def write_config(self):
        assets = self.work / "assets"
        assets.mkdir()
        (assets / "site.css").write_text("body { color: #333 }\n")
        self.config.write_text(f"""# maint observability test (generated)
[server]
listen = ["0.0.0.0", "::"]

[page]
assets = "{assets}"

[tls]
discover = false
self_signed = true

[paths]
state_dir = "{self.work}/state"
runtime_dir = "{self.work}/run"

[metrics]
listen = "{METRICS}"
""")

    def start_server(self):
        log = open(self.work / "serve.log", "a")
        self.server = subprocess.Popen(["ip", "netns", "exec", SRV, self.maint, "--config", self.config,
                                        "serve"], stdout=log, stderr=log)
        wait_for("the metrics listener", lambda: self.scrape_text(check=False))

    def stop_server(self):
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=15)
        self.server = None

    def cli(self, *args, user=None, origin=None, check=True):
        env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "MAINT_ORIGIN")}
        if user:
            env["SUDO_USER"] = user
        if origin:
            env["MAINT_ORIGIN"] = origin
        return ns(SRV, self.maint, "--config", self.config, *args, env=env, check=check, timeout=60)

    def scrape_text(self, check=True):
        p = ns(SRV, "curl", "-sS", "--max-time", "5", f"http://{METRICS}/metrics", check=check)
        return p.stdout if p.returncode == 0 else None

    def scrape(self):
        return parse(self.scrape_text())

    def teardown(self):
        self.stop_server()
        for name in (SRV, CLI):
            for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", name], check=False)
        if self.journald and self.journald.poll() is None:
            self.journald.terminate()
            self.journald.wait(timeout=10)
        if self.keep:
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def parse(text):
    """{(name, frozenset(labels)): value} from prometheus_client's parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def delta(before, after, name, **labels):
    return (val(after, name, **labels) or 0) - (val(before, name, **labels) or 0)


def journal_entries():
    """Every entry of the test's journal, from `journalctl -o export` (the journal export
    format: KEY=value lines, or KEY, newline, a little-endian 64-bit length and the bytes)."""
    raw = subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "export", "--no-pager"],
                         capture_output=True, timeout=30).stdout
    entries, entry, i = [], {}, 0
    while i < len(raw):
        nl = raw.index(b"\n", i)
        line = raw[i:nl]
        if not line:
            if entry:
                entries.append(entry)
            entry, i = {}, nl + 1
            continue
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", raw[nl + 1:nl + 9])
            value = raw[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        entry[key.decode()] = value.decode("utf-8", "replace")
    if entry:
        entries.append(entry)
    return entries


def audit_entries(kind):
    return [e for e in journal_entries() if e.get("MESSAGE_ID") == IDS[kind]]


def curl(*args, check=True):
    return ns(CLI, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", *args,
              check=check).stdout


def tls_garbage():
    """A plain HTTP request to the HTTPS port: the TLS handshake fails."""
    code = ("import socket; s = socket.create_connection(('%s', 443), 5); "
            "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); s.settimeout(5); "
            "s.recv(100)" % SRV4)
    ns(CLI, sys.executable, "-c", code, check=False)


def direct_connection():
    """A connection to the server's own port, not through the redirect: refused."""
    code = ("import socket; s = socket.create_connection(('%s', 503), 2); s.settimeout(2); "
            "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(len(s.recv(100)))" % SRV4)
    return ns(CLI, sys.executable, "-c", code, check=False).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maint", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    r = Report()
    h = Host(a.maint, a.keep)
    held = None
    try:
        h.private_run_and_journal()
        h.network()
        h.write_config()
        h.start_server()

        # --- off: the listener answers, maintenance is off
        s = h.scrape()
        r.check("metrics parse with prometheus_client; maint_active 0 before `on`",
                val(s, "maint_active") == 0.0, f"{val(s, 'maint_active')}")
        r.check("maint_server_up 1 and maint_build_info on the listener",
                val(s, "maint_server_up") == 1.0 and any(k[0] == "maint_build_info" for k in s))

        # --- on, by alice through Ansible
        p = h.cli("--json", "on", "all", "--for", "1h", "--reason", "database upgrade",
                  user="alice", origin="ansible")
        until = json.loads(p.stdout)["until"]
        s = h.scrape()
        r.check("maint_active 1 after `on`", val(s, "maint_active") == 1.0)
        until_secs = int(time.mktime(time.strptime(until, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone)
        r.check("maint_window_end_timestamp_seconds is the window's end",
                val(s, "maint_window_end_timestamp_seconds") == until_secs,
                f"{val(s, 'maint_window_end_timestamp_seconds')} vs {until} ({until_secs})")
        r.check("maint_sources counts one prefix per family for `all`",
                (val(s, "maint_sources", family="ipv4"), val(s, "maint_sources", family="ipv6")) == (1.0, 1.0))
        r.check("maint_kernel_in_sync 1 after `on`", val(s, "maint_kernel_in_sync") == 1.0,
                f"{val(s, 'maint_kernel_in_sync')}")

        # --- clients hit the page; the counters move by exactly what they did
        before = h.scrape()
        codes = [curl("-H", "Accept: text/html", f"http://{SRV4}/") for _ in range(3)]
        codes += [curl("-H", "Accept: application/json", f"http://{SRV4}/any/path") for _ in range(2)]
        codes += [curl("-H", "Accept: text/plain", f"http://[{SRV6}]/")]
        codes += [curl("-k", "-H", "Accept: text/html", f"https://{SRV4}/") for _ in range(2)]
        codes += [curl(f"http://{SRV4}/.maint/site.css")]
        tls_garbage()
        # maint's table drops direct connections to the server's ports while it is loaded.
        direct = direct_connection()
        after = h.scrape()
        r.check("the clients got the page (503) and the asset (200)",
                codes == ["503"] * 8 + ["200"], f"{codes}")
        expected = {("http", "html"): 3, ("http", "json"): 2, ("http", "text"): 1,
                    ("https", "html"): 2, ("http", "asset"): 1, ("https", "json"): 0}
        got = {k: delta(before, after, "maint_requests_total", scheme=k[0], format=k[1]) for k in expected}
        r.check("maint_requests_total moved by scheme and format as the clients asked", got == expected,
                f"{got}")
        r.check("maint_tls_handshake_failures_total moved by the one failed handshake",
                delta(before, after, "maint_tls_handshake_failures_total") == 1,
                f"{delta(before, after, 'maint_tls_handshake_failures_total')}")
        r.check("during maintenance a direct connection to the server port never reaches it (the table drops it)",
                delta(before, after, "maint_connections_refused_total", cause="direct") == 0 and direct == "",
                f"delta {delta(before, after, 'maint_connections_refused_total', cause='direct')}, read {direct!r}")
        r.check("maint_connections_accepted_total moved by the 10 connections (9 served, 1 failed handshake)",
                delta(before, after, "maint_connections_accepted_total") == 10,
                f"{delta(before, after, 'maint_connections_accepted_total')}")
        names = [k for k in after if k[0] == "maint_certificate_expiry_timestamp_seconds"]
        r.check("maint_certificate_expiry_timestamp_seconds by name (the self-signed certificate)",
                len(names) == 1 and after[names[0]] > time.time(), f"{names}")

        # --- the listener is the server's own: not reachable from the client's namespace
        for target in (f"http://{SRV4}:9503/metrics", f"http://{METRICS}/metrics", f"http://[{SRV6}]:9503/metrics"):
            p = ns(CLI, "curl", "-sS", "--max-time", "3", target, check=False)
            r.check(f"the metrics listener is not reachable from the client namespace ({target})",
                    p.returncode != 0 and "maint_" not in p.stdout, f"exit {p.returncode}")

        # --- change, by bob from cron
        h.cli("on", "all", "--except", "198.51.100.0/24", "--for", "1h", "--reason", "still upgrading",
              user="bob", origin="cron")
        s = h.scrape()
        r.check("maint_exceptions counts the new exception", val(s, "maint_exceptions", family="ipv4") == 1.0)
        st = json.loads(h.cli("--json", "status").stdout)
        r.check("status: switched on by alice (ansible), last changed by bob (cron)",
                (st.get("on_by") or {}).get("user") == "alice" and (st.get("on_by") or {}).get("origin") == "ansible"
                and st["by"]["user"] == "bob" and st["by"]["origin"] == "cron", f"{st.get('on_by')} {st.get('by')}")
        text = h.cli("status").stdout
        r.check("status text: since ... by alice (ansible)",
                any(l.startswith("since:") and "by alice (ansible)" in l for l in text.splitlines()), text)
        started = (st.get("server") or {}).get("started", "")
        r.check("status: server.started in RFC 3339, since in RFC 3339",
                isinstance(started, str) and started.endswith("Z") and "T" in started
                and st["since"].endswith("Z"), f"{started!r} {st['since']!r}")

        # --- a flush of the ruleset: the keeper repairs, the metrics say so
        ns(SRV, "nft", "flush", "ruleset")
        s = wait_for("maint_repairs_total 1", lambda: (lambda m: m if val(m, "maint_repairs_total") == 1 else None)(h.scrape()))
        r.check("maint_repairs_total 1 after `nft flush ruleset`", val(s, "maint_repairs_total") == 1)
        r.check("maint_kernel_in_sync 1 again after the repair", val(s, "maint_kernel_in_sync") == 1.0)

        # --- the textfile for node_exporter
        h.prom_file.parent.mkdir()
        h.cli("status", "--format", "prometheus", "--output", h.prom_file)
        text = h.prom_file.read_text()
        f = parse(text)
        r.check("status --format prometheus --output FILE parses with the same parser",
                val(f, "maint_active") == 1.0 and val(f, "maint_kernel_in_sync") == 1.0
                and val(f, "maint_server_up") == 1.0 and val(f, "maint_repairs_total") == 1.0,
                text[:400])
        r.check("... and carries the server's counters",
                (val(f, "maint_requests_total", scheme="http", format="html") or 0) >= 3)
        mode = stat.S_IMODE(h.prom_file.stat().st_mode)
        r.check("... written whole: mode 0644, nothing else left in its directory",
                mode == 0o644 and os.listdir(h.prom_file.parent) == ["maint.prom"],
                f"{oct(mode)} {os.listdir(h.prom_file.parent)}")

        # --- off, by carol, cuts a kept-alive connection to the page
        held = subprocess.Popen(["ip", "netns", "exec", CLI, sys.executable, "-c",
                                 "import socket, time; s = socket.create_connection(('%s', 80), 5); "
                                 "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); s.recv(65536); "
                                 "print('held', flush=True); time.sleep(30)" % SRV4],
                                stdout=subprocess.PIPE, text=True)
        held.stdout.readline()
        before = h.scrape()
        h.cli("off", user="carol", origin="ssh")
        after = h.scrape()
        r.check("maint_active 0 after `off`", val(after, "maint_active") == 0.0)
        r.check("maint_states_killed_total moved by the kept-alive connection `off` cut",
                delta(before, after, "maint_states_killed_total") >= 1,
                f"{delta(before, after, 'maint_states_killed_total')}")
        held.kill()
        held.wait()
        held = None
        # With no table loaded the server's port is open, and the server itself refuses
        # connections that did not come through the redirect.
        before = h.scrape()
        direct = direct_connection()
        after = h.scrape()
        r.check("with maintenance off, a direct connection to the server port is refused and counted (cause=direct)",
                delta(before, after, "maint_connections_refused_total", cause="direct") == 1 and direct in ("", "0"),
                f"delta {delta(before, after, 'maint_connections_refused_total', cause='direct')}, read {direct!r}")

        # --- a window that ends by itself
        h.cli("on", "all", "--for", "2s", "--reason", "quick restart", user="dave", origin="terminal")
        wait_for("the expiry audit entry", lambda: audit_entries("expiry"), timeout=15, every=0.5)
        s = h.scrape()
        r.check("maint_active 0 once the window ended", val(s, "maint_active") == 0.0)

        # --- a restart with maintenance recorded and the table gone: restore
        h.cli("on", "all", "--reason", "kernel update", user="erin", origin="ssh")
        h.stop_server()
        ns(SRV, "nft", "delete", "table", "inet", "maint")
        h.start_server()
        s = h.scrape()
        r.check("maint_restores_total 1 after a start that put maintenance back",
                val(s, "maint_restores_total") == 1.0, f"{val(s, 'maint_restores_total')}")
        r.check("maint_active 1 after the restore", val(s, "maint_active") == 1.0)
        h.cli("off", user="erin", origin="ssh")

        # --- the audit trail, from the journal
        wait_for("the last off in the journal", lambda: len(audit_entries("off")) >= 2, timeout=10)
        want = {
            "on": ("alice", "ansible", "database upgrade", "all", ""),
            "change": ("bob", "cron", "still upgrading", "all", "198.51.100.0/24"),
            "off": ("carol", "ssh", "still upgrading", "all", "198.51.100.0/24"),
            "repair": ("maint", "keeper", "still upgrading", "all", "198.51.100.0/24"),
            "expiry": ("maint", "keeper", "quick restart", "all", ""),
            "restore": ("maint", "serve", "kernel update", "all", ""),
        }
        for kind, (user, origin, reason, sources, exceptions) in want.items():
            found = audit_entries(kind)
            e = found[0] if found else {}
            got = (e.get("MAINT_USER"), e.get("MAINT_ORIGIN"), e.get("MAINT_REASON"), e.get("MAINT_SOURCES"),
                   e.get("MAINT_EXCEPTIONS"))
            r.check(f"journal: the {kind} entry (MESSAGE_ID {IDS[kind][:8]}…) says who, what and why",
                    got == (user, origin, reason, sources, exceptions) and e.get("SYSLOG_IDENTIFIER") == "maint"
                    and e.get("MAINT_TRANSITION") == kind and reason in e.get("MESSAGE", "")
                    and "ports 80→503" in e.get("MAINT_PORTS", "") + e.get("MESSAGE", ""),
                    f"{got} {e.get('MESSAGE', '')!r}")
        ons = audit_entries("on")
        r.check("journal: each switch on logged once (alice, dave, erin), with the window when there is one",
                [e.get("MAINT_USER") for e in ons] == ["alice", "dave", "erin"]
                and ons[0].get("MAINT_UNTIL") == until and ons[2].get("MAINT_UNTIL") == "",
                f"{[(e.get('MAINT_USER'), e.get('MAINT_UNTIL')) for e in ons]}")
        r.check("journal: the expiry logged once, though the keeper looked every second",
                len(audit_entries("expiry")) == 1, f"{len(audit_entries('expiry'))}")
        r.check("journal: the entries' priority is notice (5)",
                all(e.get("PRIORITY") == "5" for k in IDS for e in audit_entries(k)))
    except Exception as e:  # noqa: BLE001 - any failure is a failed check, then teardown
        r.check("the test ran to the end", False, f"{type(e).__name__}: {e}")
        log = h.work / "serve.log"
        if log.exists():
            print("--- serve.log (tail)\n" + "".join(log.read_text().splitlines(True)[-30:]))
    finally:
        if held:
            held.kill()
        h.teardown()
    print(f"observe: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
