#!/usr/bin/env python3
"""maint's fleet test: the maint.ops Ansible collection, run for real.

Builds the collection (conf/ansible), installs it, runs `ansible-test sanity` on it, then
builds a small fleet on this machine, each host a network namespace:

    controller  (ansible-playbook; the "office", 192.0.2.0/24)
        |  192.0.2.16N+1 -- veth -- 192.0.2.16N+2  (sshd on :22)
    webN  (N = 1..3: sshd, the app on :80, maint with its own config and state directory)
        |  198.51.100.16N+2 -- veth -- 198.51.100.16N+1
    client  (requests every host every 100 ms and records what answered)

and runs real plays over real SSH: the role maint.ops.server on every host (twice: the
second run must change nothing), then a rolling upgrade (serial: 1; maintenance on, a
stand-in upgrade of the app, a health check on the real port from the host itself,
maintenance off) first with --check --diff, then for real, then again (no change), then a
play that checks the module's behaviour step by step. Every namespace, process and file it
made is removed at the end, also on failure.

Run it through tests/fleet/run (root, packages, the maint binary, cleanup on any exit).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ANSIBLE_CORE = "2.19.14"
HOSTS = ("web1", "web2", "web3")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PYTHON = "/usr/bin/python3"


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    # Once: the teardown that follows must not be interrupted by a second signal.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted("interrupted by signal %d" % signum)


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok    %s%s" % (name, ("  (%s)" % detail) if detail else ""), flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print("FAIL  %s%s" % (name, (": %s" % detail) if detail else ""), flush=True)
        return ok


def run(cmd, timeout, check=True, env=None, cwd=None, log=None):
    """Runs a command with a time limit; returns (rc, output). Output goes to `log` too."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=cwd)
        rc, out = p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        rc, out = -1, (e.stdout or b"").decode("utf-8", "replace") + "\n[timed out after %ss]" % timeout
    if log:
        with open(log, "a") as f:
            f.write("$ %s\n%s\n[exit %s]\n" % (" ".join(cmd), out, rc))
    if check and rc != 0:
        raise RuntimeError("%s failed (exit %s):\n%s" % (" ".join(cmd), rc, tail(out)))
    return rc, out


def tail(text, lines=40):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Lab:
    """The namespaces, links, sshd and apps. Knows how to tear all of it down."""

    def __init__(self, tag, tmp, maint_bin):
        self.tag = tag
        self.tmp = tmp
        self.maint_bin = maint_bin
        self.ctl = "mf-ctl-%s" % tag
        self.cli = "mf-cli-%s" % tag
        self.web = {h: "mf-%s-%s" % (h, tag) for h in HOSTS}
        self.namespaces = []
        self.hosts = {}
        for n, h in enumerate(HOSTS, start=1):
            self.hosts[h] = dict(
                ns=self.web[h],
                dir=os.path.join(tmp, h),
                ctl_addr="192.0.2.%d" % (16 * n + 2),        # where the controller reaches it
                ctl_peer="192.0.2.%d" % (16 * n + 1),
                client_addr="198.51.100.%d" % (16 * n + 2),  # where the client reaches it
                client_peer="198.51.100.%d" % (16 * n + 1),
                http_port=503,                               # maint's server (each host its own netns)
            )
        self.env = dict(PATH=SYSTEM_PATH, LANG="C.UTF-8", HOME=os.path.join(tmp, "home"))

    def ip(self, *args):
        run(["ip"] + list(args), timeout=20)

    def exec(self, ns, cmd, timeout=30, check=True):
        return run(["ip", "netns", "exec", ns] + cmd, timeout=timeout, check=check, env=self.env)

    def up(self):
        for ns in [self.ctl, self.cli] + list(self.web.values()):
            self.ip("netns", "add", ns)
            self.namespaces.append(ns)
            self.exec(ns, ["ip", "link", "set", "lo", "up"])
        for n, (h, host) in enumerate(self.hosts.items(), start=1):
            self.link(self.ctl, h, host["ctl_peer"], host["ns"], "ctl0", host["ctl_addr"], "c%d" % n)
            self.link(self.cli, h, host["client_peer"], host["ns"], "cli0", host["client_addr"], "k%d" % n)

    def link(self, ns_a, if_a, addr_a, ns_b, if_b, addr_b, tag):
        # Created straight into the namespaces under unique names, then renamed there.
        a, b = "mfa%s%s" % (tag, self.tag[-6:]), "mfb%s%s" % (tag, self.tag[-6:])
        self.ip("link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        for ns, old, new, addr in ((ns_a, a, if_a, addr_a), (ns_b, b, if_b, addr_b)):
            self.exec(ns, ["ip", "link", "set", old, "name", new])
            self.exec(ns, ["ip", "addr", "add", addr + "/28", "dev", new])
            self.exec(ns, ["ip", "link", "set", new, "up"])

    def ruleset(self, host):
        return self.exec(self.hosts[host]["ns"], ["nft", "list", "ruleset"])[1]

    def maint(self, host, *args, check=True):
        """maint as installed on the host (or the binary under test before the role ran)."""
        h = self.hosts[host]
        binary = os.path.join(h["dir"], "bin", "maint")
        if not os.path.exists(binary):
            binary = self.maint_bin
        config = os.path.join(h["dir"], "maint.toml")
        cmd = [binary, "--json"] + (["--config", config] if os.path.exists(config) else []) + list(args)
        return self.exec(h["ns"], cmd, check=check)

    def down(self):
        """maint off on every host, then every process left in the namespaces, then them."""
        for host, h in self.hosts.items():
            if h["ns"] in self.namespaces and os.path.exists(os.path.join(h["dir"], "maint.toml")):
                try:
                    self.maint(host, "off", check=False)
                except Exception as e:  # keep tearing down
                    print("cleanup: maint off on %s: %s" % (host, e))
        for ns in reversed(self.namespaces):
            kill_namespace(ns)
        self.namespaces = []


def namespace_pids(ns):
    try:
        out = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout.decode()
    except subprocess.TimeoutExpired:
        return []
    return [int(p) for p in out.split() if p.isdigit()]


def kill_namespace(ns):
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        pids = namespace_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while pids and time.time() < deadline and namespace_pids(ns):
            time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, timeout=10)


class Fleet:
    def __init__(self, args, report):
        self.args = args
        self.report = report
        self.tmp = tempfile.mkdtemp(prefix="maint-fleet-")
        os.chmod(self.tmp, 0o755)  # maint's server runs as nobody and reads its page here
        os.makedirs(os.path.join(self.tmp, "home"), mode=0o700)  # HOME of everything the test runs
        self.lab = Lab(args.tag, self.tmp, args.maint)
        self.venv = args.venv
        self.timings = []
        self.procs = []

    # ---- set-up -------------------------------------------------------------------------

    def phase(self, name, started):
        self.timings.append((name, time.time() - started))

    def venv_python(self):
        return os.path.join(self.venv, "bin", "python")

    def ensure_venv(self):
        started = time.time()
        ap = os.path.join(self.venv, "bin", "ansible-playbook")
        env = self.ansible_env()  # HOME in the work directory: nothing lands in the real one
        ok = False
        if os.path.exists(ap):
            rc, out = run([ap, "--version"], timeout=60, check=False, env=env)
            ok = rc == 0 and ("core %s]" % ANSIBLE_CORE) in out
        if not ok:
            print("==> creating %s with ansible-core==%s" % (self.venv, ANSIBLE_CORE), flush=True)
            shutil.rmtree(self.venv, ignore_errors=True)
            run([SYSTEM_PYTHON, "-m", "venv", self.venv], timeout=120, env=env)
            run([os.path.join(self.venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                 "ansible-core==%s" % ANSIBLE_CORE], timeout=600, env=env)
        rc, out = run([ap, "--version"], timeout=60, env=env)
        self.report.check("ansible-core %s in a virtual environment" % ANSIBLE_CORE,
                          ("core %s]" % ANSIBLE_CORE) in out, self.venv)
        self.phase("venv", started)

    def ansible_env(self, log=None):
        env = dict(self.lab.env)
        env.update(
            PATH=os.path.join(self.venv, "bin") + ":" + SYSTEM_PATH,
            ANSIBLE_CONFIG=os.path.join(self.tmp, "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=os.path.join(self.tmp, "collections"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ beside the callback plugin in the tree
        )
        if log:
            env["FLEET_LOG"] = log
        return env

    def build_collection(self):
        started = time.time()
        dist = os.path.join(self.tmp, "dist")
        galaxy = os.path.join(self.venv, "bin", "ansible-galaxy")
        env = self.ansible_env()
        rc, out = run([galaxy, "collection", "build", os.path.join(REPO, "conf", "ansible"),
                       "--output-path", dist], timeout=120, check=False, env=env)
        tarballs = [f for f in os.listdir(dist)] if os.path.isdir(dist) else []
        if not self.report.check("the collection builds (ansible-galaxy collection build conf/ansible)",
                                 rc == 0 and len(tarballs) == 1, ", ".join(tarballs) or tail(out)):
            raise RuntimeError("cannot go on without the collection")
        rc, out = run([galaxy, "collection", "install", os.path.join(dist, tarballs[0]),
                       "-p", os.path.join(self.tmp, "collections")], timeout=120, check=False, env=env)
        installed = os.path.join(self.tmp, "collections", "ansible_collections", "maint", "ops",
                                 "plugins", "modules", "maintenance.py")
        if not self.report.check("the collection installs from its tarball",
                                 rc == 0 and os.path.exists(installed), "" if rc == 0 else tail(out, 5)):
            raise RuntimeError("cannot go on without the collection")
        self.phase("build + install collection", started)

    def syntax_check(self):
        """The example playbooks users copy: conf/ansible-playbook.yml and the collection's."""
        bad = []
        for playbook in (os.path.join(REPO, "conf", "ansible-playbook.yml"), "maint.ops.rolling_upgrade"):
            rc, out = run([os.path.join(self.venv, "bin", "ansible-playbook"), "--syntax-check", playbook],
                          timeout=120, check=False, env=self.ansible_env())
            if rc != 0:
                bad.append("%s: %s" % (playbook, tail(out, 10)))
        self.report.check("example playbooks pass --syntax-check (conf/ansible-playbook.yml, "
                          "maint.ops.rolling_upgrade)", not bad, "; ".join(bad))

    def sanity(self):
        if self.args.sanity == "none":
            print("==> ansible-test sanity skipped (--sanity none)")
            return
        started = time.time()
        root = os.path.join(self.tmp, "sanity", "ansible_collections", "maint", "ops")
        shutil.copytree(os.path.join(REPO, "conf", "ansible"), root,
                        ignore=shutil.ignore_patterns("tests/output", "*.tar.gz", "__pycache__"))
        # ansible-test keeps its per-test virtual environments under ~/.ansible/test; a home
        # beside the venv keeps them between runs and out of the real home. It bootstraps pip
        # in them with get-pip.py from the internet, which is not reachable here: a stand-in
        # gets pip from ensurepip, then pip itself from PyPI.
        home = os.path.join(self.venv, "ansible-test-home")
        cache = os.path.join(home, ".ansible", "test", "cache")
        os.makedirs(cache, exist_ok=True)
        reqs = os.path.join(self.venv, "lib")
        pip_version = "24.2"
        for dirpath, _, files in os.walk(reqs):
            if "python_requirements.py" in files and dirpath.endswith(os.path.join("ansible_test", "_internal")):
                m = re.search(r"pip='([0-9.]+)'", open(os.path.join(dirpath, "python_requirements.py")).read())
                pip_version = m.group(1) if m else pip_version
        write(os.path.join(cache, "get_pip_%s.py" % pip_version.replace(".", "_")),
              "# Stand-in for get-pip.py, written by maint's tests/fleet: pip from ensurepip, then\n"
              "# the pip version ansible-test asks for from PyPI.\n"
              "import subprocess, sys\n"
              "args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]\n"
              "subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)\n"
              "subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)\n")
        env = self.ansible_env()
        env["HOME"] = home
        _, out = run([self.venv_python(), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=30)
        py = out.strip()
        test = os.path.join(self.venv, "bin", "ansible-test")
        log = os.path.join(self.tmp, "sanity.log")
        rc, out = run([test, "sanity", "--test", "validate-modules", "--python", py, "--requirements"],
                      timeout=600, check=False, env=env, cwd=root, log=log)
        self.report.check("ansible-test sanity --test validate-modules", rc == 0,
                          "" if rc == 0 else tail(out, 30))
        if self.args.sanity == "all":
            rc, out = run([test, "sanity", "--skip-test", "validate-modules", "--python", py, "--requirements"],
                          timeout=900, check=False, env=env, cwd=root, log=log)
            ran = re.findall(r'^Running sanity test "([^"]+)"', out, re.M)
            self.report.check("ansible-test sanity, every other test (%d: %s)" % (len(ran), ", ".join(ran)),
                              rc == 0 and len(ran) > 10, "" if rc == 0 else tail(out, 30))
        self.phase("ansible-test sanity", started)

    def write_ansible_files(self):
        t = self.tmp
        ssh = os.path.join(t, "ssh")
        os.makedirs(os.path.join(ssh, "cp"), mode=0o700)
        os.makedirs(os.path.join(t, "home"), mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "maint-fleet", "-f",
             os.path.join(ssh, "id_ed25519")], timeout=30)
        write(os.path.join(ssh, "authorized_keys"), open(os.path.join(ssh, "id_ed25519.pub")).read(), 0o600)
        write(os.path.join(ssh, "config"), "\n".join([
            "Host *",
            "  User root",
            "  IdentityFile %s/id_ed25519" % ssh,
            "  IdentitiesOnly yes",
            "  UserKnownHostsFile %s/known_hosts" % ssh,
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 5",
            "  ControlMaster auto",
            "  ControlPath %s/cp/%%C" % ssh,
            "  ControlPersist 30s",
            "  LogLevel ERROR",
            ""]))
        known = []
        inventory = {"web": {"hosts": {}}, "local": {"hosts": {"localhost": {
            "ansible_connection": "local",
            # Ansible expands ~ as ~root, whatever HOME says: keep it out of the real home.
            "ansible_remote_tmp": os.path.join(t, "home", "ansible-tmp"),
            "ansible_python_interpreter": self.venv_python()}}}}
        for name, h in self.lab.hosts.items():
            d = h["dir"]
            os.makedirs(os.path.join(d, "app"))
            os.makedirs(os.path.join(d, "ansible-tmp"), mode=0o700)
            key = os.path.join(d, "ssh_host_ed25519_key")
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key], timeout=30)
            known.append("%s %s" % (h["ctl_addr"], " ".join(open(key + ".pub").read().split()[:2])))
            write(os.path.join(d, "sshd_config"), "\n".join([
                "ListenAddress %s:22" % h["ctl_addr"],
                "HostKey %s" % key,
                "PidFile %s/sshd.pid" % d,
                "AuthorizedKeysFile %s/authorized_keys" % ssh,
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",          # the keys live under /tmp, which is world-writable
                "PermitTTY no",            # no pty: no login records in the machine's files
                "PrintMotd no",
                "PrintLastLog no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                ""]))
            # The same app as the end-to-end tests', told its version by a file.
            shutil.copy(os.path.join(HERE, "..", "support", "app.py"),
                        os.path.join(d, "app", "app.py"))
            shutil.copy(os.path.join(HERE, "appctl"), os.path.join(d, "app", "appctl"))
            write(os.path.join(d, "app", "VERSION"), "1\n")
            inventory["web"]["hosts"][name] = {
                "ansible_host": h["ctl_addr"],
                "ansible_remote_tmp": os.path.join(d, "ansible-tmp"),
                "office_addr": h["ctl_addr"],
                "host_dir": d,
                "app_dir": os.path.join(d, "app"),
                "maint_binary": os.path.join(d, "bin", "maint"),
                "maint_config": os.path.join(d, "maint.toml"),
                "maint_http_port": h["http_port"],
            }
        write(os.path.join(ssh, "known_hosts"), "\n".join(known) + "\n")
        write(os.path.join(t, "inventory.json"), json.dumps(inventory, indent=2))
        write(os.path.join(t, "ansible.cfg"), "\n".join([
            "[defaults]",
            "inventory = %s/inventory.json" % t,
            "collections_path = %s/collections" % t,
            "home = %s/ansible-home" % t,
            "local_tmp = %s/ansible-home/tmp" % t,
            "interpreter_python = %s" % SYSTEM_PYTHON,
            "callback_plugins = %s/callback_plugins" % HERE,
            "callbacks_enabled = fleet_log",
            "host_key_checking = True",
            "retry_files_enabled = False",
            "forks = 5",
            "timeout = 15",
            "",
            "[ssh_connection]",
            "pipelining = True",
            "ssh_args = -F %s/config" % ssh,
            "control_path_dir = %s/cp" % ssh,
            ""]))

    def start_hosts(self):
        started = time.time()
        self.lab.up()
        self.write_ansible_files()
        for name, h in self.lab.hosts.items():
            self.lab.exec(h["ns"], [os.path.join(h["dir"], "app", "appctl"), "start"])
            # sshd chroots into /run/sshd for privilege separation. That directory is the
            # machine's, so sshd gets a mount namespace of its own with a private /run.
            log = open(os.path.join(h["dir"], "sshd.log"), "w")
            script = ("mount -t tmpfs -o mode=0755,size=1m maint-fleet /run && mkdir -m 0755 /run/sshd "
                      "&& exec /usr/sbin/sshd -D -e -f %s/sshd_config" % h["dir"])
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", h["ns"], "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.lab.env))
        ssh = os.path.join(self.tmp, "ssh")
        for name, h in self.lab.hosts.items():
            deadline = time.time() + 15
            while True:
                rc, out = self.lab.exec(self.lab.ctl, ["ssh", "-F", os.path.join(ssh, "config"),
                                                       h["ctl_addr"], "true"], check=False, timeout=10)
                if rc == 0:
                    break
                if time.time() > deadline:
                    raise RuntimeError("sshd on %s does not answer: %s\n%s" % (
                        name, out, open(os.path.join(h["dir"], "sshd.log")).read()))
                time.sleep(0.2)
        self.report.check("3 web hosts up: namespaces, sshd, app v1 on port 80", True,
                          ", ".join("%s %s" % (n, h["ctl_addr"]) for n, h in self.lab.hosts.items()))
        self.phase("namespaces + sshd + apps", started)

    # ---- plays --------------------------------------------------------------------------

    def play(self, name, playbook, *extra, timeout=300):
        """Runs ansible-playbook in the controller's namespace; returns (rc, stdout, events)."""
        n = len([x for x in os.listdir(self.tmp) if x.startswith("play-")]) + 1
        base = os.path.join(self.tmp, "play-%02d-%s" % (n, name))
        events = base + ".events.jsonl"
        cmd = ["ip", "netns", "exec", self.lab.ctl, os.path.join(self.venv, "bin", "ansible-playbook"),
               os.path.join(HERE, "playbooks", playbook)] + list(extra)
        started = time.time()
        rc, out = run(cmd, timeout=timeout, check=False, env=self.ansible_env(events), log=base + ".log")
        self.phase("play: %s" % name, started)
        print("      %s: exit %d in %.1f s (log %s.log)" % (name, rc, time.time() - started, base), flush=True)
        return rc, out, read_jsonl(events)

    def start_client(self, name):
        out = os.path.join(self.tmp, "client-%s.jsonl" % name)
        stop = out + ".stop"
        targets = ["%s=%s" % (n, h["client_addr"]) for n, h in self.lab.hosts.items()]
        p = subprocess.Popen(["ip", "netns", "exec", self.lab.cli, SYSTEM_PYTHON, os.path.join(HERE, "poll.py"),
                              out, stop, "600"] + targets, stdin=subprocess.DEVNULL, env=self.lab.env)
        self.procs.append(p)
        # A second of traffic before the play, so every host's sequence starts with the app.
        time.sleep(1.0)
        return p, out, stop

    def stop_client(self, client):
        p, out, stop = client
        time.sleep(1.0)  # and a second after it
        write(stop, "")
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        records = read_jsonl(out)
        by_host = {h: sorted((r for r in records if r["host"] == h), key=lambda r: r["t0"]) for h in HOSTS}
        return by_host

    @staticmethod
    def runs(records):
        """Consecutive records of one kind: [(kind, [records])]."""
        out = []
        for r in records:
            if out and out[-1][0] == r["kind"]:
                out[-1][1].append(r)
            else:
                out.append((r["kind"], [r]))
        return out

    def describe_runs(self, records):
        parts = []
        for kind, rs in self.runs(records):
            what = kind
            if kind == "app":
                what = "app %s" % "/".join(sorted(set(r["detail"].split()[-1] for r in rs)))
            parts.append("%s x%d (%.1f s)" % (what, len(rs), rs[-1]["t1"] - rs[0]["t0"]))
        return " -> ".join(parts)

    def client_clean(self, by_host, label):
        bad = [r for rs in by_host.values() for r in rs if r["kind"] in ("refused", "error")]
        refused = [r for r in bad if r["kind"] == "refused"]
        total = sum(len(rs) for rs in by_host.values())
        self.report.check("%s: no connection refused, no failed request (%d requests)" % (label, total),
                          not bad and total > 0,
                          "; ".join("%s %s %s" % (r["host"], r["kind"], r["detail"]) for r in bad[:5])
                          + (" (%d refused)" % len(refused) if refused else ""))

    @staticmethod
    def results(events, task, status=None):
        return {e["host"]: e for e in events if e["ev"] == "result" and e["task"] == task
                and (status is None or e["status"] == status)}

    @staticmethod
    def stats(events):
        s = [e for e in events if e["ev"] == "stats"]
        return s[-1]["hosts"] if s else {}

    def setup_role(self):
        extra = ["-e", "maint_src=%s" % self.args.maint]
        rc, out, events = self.play("role", "setup.yml", *extra)
        stats = self.stats(events)
        self.report.check("role maint.ops.server installs maint, its config and unit on 3 hosts",
                          rc == 0 and all(stats.get(h, {}).get("changed", 0) >= 3 for h in HOSTS),
                          "changed per host: %s" % {h: stats.get(h, {}).get("changed") for h in HOSTS}
                          if rc == 0 else tail(out))
        if rc != 0:
            raise RuntimeError("cannot go on without maint on the hosts")
        h = self.lab.hosts["web1"]
        config = open(os.path.join(h["dir"], "maint.toml")).read()
        unit = open(os.path.join(h["dir"], "maint.service")).read()
        want_exec = "ExecStart=%s/bin/maint --config %s/maint.toml serve" % (h["dir"], h["dir"])
        self.report.check("role: the config has the alias, ports, state dir and metrics listener; the unit runs that maint",
                          'office = ["192.0.2.0/24"]' in config and "http_port = %d" % h["http_port"] in config
                          and '[metrics]\nlisten = "127.0.0.1:9503"' in config
                          and 'state_dir = "%s/state"' % h["dir"] in config and want_exec in unit
                          and "ReadWritePaths=%s/state" % h["dir"] in unit,
                          "" if want_exec in unit else unit)
        rc, out, events = self.play("role-again", "setup.yml", *extra)
        stats = self.stats(events)
        self.report.check("role rerun: no change on any host",
                          rc == 0 and all(stats.get(h, {}).get("changed", 1) == 0 for h in HOSTS),
                          "changed per host: %s" % {h: stats.get(h, {}).get("changed") for h in HOSTS})

    def kernel_and_server_idle(self, label, before):
        same = {h: self.lab.ruleset(h) == before[h] for h in HOSTS}
        self.report.check("%s: every kernel table as it was (nft list ruleset, 3 hosts)" % label,
                          all(same.values()), "" if all(same.values()) else
                          "differs on %s" % [h for h, s in same.items() if not s])
        statuses = {h: json.loads(self.lab.maint(h, "status")[1]) for h in HOSTS}
        idle = {h: not s["active"] and s["server"] is None and not s["sources"] for h, s in statuses.items()}
        self.report.check("%s: maint off and no maintenance server running on any host" % label,
                          all(idle.values()), "" if all(idle.values()) else
                          json.dumps({h: s for h, s in statuses.items() if not idle[h]})[:500])

    def check_run(self, before):
        client = self.start_client("check")
        rc, out, events = self.play("check-diff", "rolling.yml", "--check", "--diff", "-e", "app_version=2")
        by_host = self.stop_client(client)
        self.report.check("--check --diff run exits 0", rc == 0, tail(out) if rc else "")
        on = self.results(events, "Maintenance on")
        good = {}
        for h in HOSTS:
            r = on.get(h, {}).get("result", {})
            d = r.get("diff", {})
            good[h] = (r.get("changed") is True and d.get("before", {}).get("active") is False
                       and d.get("after", {}).get("active") is True
                       and d.get("after", {}).get("exceptions") == ["office"]
                       and d.get("after", {}).get("reason") == "Upgrading the app to v2"
                       and r.get("msg", "").startswith("would turn maintenance on"))
        self.report.check("--check --diff: 'Maintenance on' would change on each host, diff before/after",
                          all(good.values()), "" if all(good.values()) else
                          json.dumps({h: on.get(h, {}).get("result") for h in HOSTS if not good[h]})[:800])
        shown = len(re.findall(r'^\+\s+"active": true', out, re.M))
        self.report.check("--check --diff output shows active false -> true for each host",
                          shown == len(HOSTS) and len(re.findall(r'^-\s+"active": false', out, re.M)) >= len(HOSTS),
                          "%d diffs shown" % shown)
        upgrade = self.results(events, "Upgrade the app")
        self.report.check("--check: the stand-in upgrade is skipped on every host",
                          all(upgrade.get(h, {}).get("status") == "skipped" for h in HOSTS))
        self.kernel_and_server_idle("--check", before)
        pages = {h: sum(1 for r in rs if r["kind"] != "app") for h, rs in by_host.items()}
        self.report.check("--check: the client saw only the app on every host",
                          all(v == 0 for v in pages.values()) and all(by_host[h] for h in HOSTS),
                          "non-app answers: %s" % pages)
        self.client_clean(by_host, "--check")
        for h in HOSTS:
            print("      %s during --check: %s" % (h, self.describe_runs(by_host[h])))

    def real_run(self, before):
        client = self.start_client("rolling")
        rc, out, events = self.play("rolling", "rolling.yml", "-e", "app_version=2")
        by_host = self.stop_client(client)
        stats = self.stats(events)
        self.report.check("rolling upgrade (serial: 1) exits 0", rc == 0 and all(
            stats.get(h, {}).get("failures", 1) == 0 for h in HOSTS), tail(out) if rc else "")

        starts = {e["host"]: e["t"] for e in events if e["ev"] == "start" and e["task"] == "Maintenance on"}
        ends = {h: e["t"] for h, e in self.results(events, "Maintenance off").items()}
        turns = {h: (starts.get(h), ends.get(h)) for h in HOSTS}
        for h in HOSTS:
            kinds = [k for k, _ in self.runs(by_host[h])]
            self.report.check("%s: the client saw app, then page, then app" % h, kinds == ["app", "page", "app"],
                              self.describe_runs(by_host[h]))
        self.client_clean(by_host, "rolling upgrade")

        ordered = all(turns[h][0] and turns[h][1] for h in HOSTS) and all(
            turns[a][1] < turns[b][0] for a, b in zip(HOSTS, HOSTS[1:]))
        t0 = min([t for t, _ in turns.values() if t] or [0])
        shown = ", ".join("%s %.1f-%.1f s" % (h, turns[h][0] - t0, turns[h][1] - t0)
                          for h in HOSTS if turns[h][0] and turns[h][1])
        self.report.check("one host at a time: each host's turn (maintenance on .. off) ends before the next begins",
                          ordered, shown if ordered else json.dumps(turns))
        outside = []
        for h in HOSTS:
            t_on, t_off = turns[h]
            for r in by_host[h]:
                if r["kind"] == "page" and (t_on is None or t_off is None or r["t1"] < t_on or r["t0"] > t_off):
                    outside.append("%s page at %.3f outside its turn %s" % (h, r["t0"], turns[h]))
        pages = sum(1 for h in HOSTS for r in by_host[h] if r["kind"] == "page")
        self.report.check("the page only ever on the host whose turn it is (%d page answers)" % pages,
                          not outside and pages > 0, "; ".join(outside[:5]))

        versions = {}
        for h in HOSTS:
            runs = self.runs(by_host[h])
            versions[h] = [sorted(set(r["detail"] for r in rs)) for kind, rs in runs if kind == "app"]
        self.report.check("the client saw app v1 before and v2 after the page, on every host",
                          all(v == [["APP OK v1"], ["APP OK v2"]] for v in versions.values()),
                          "" if all(v == [["APP OK v1"], ["APP OK v2"]] for v in versions.values())
                          else json.dumps(versions))

        health = self.results(events, "Health check on the real port, from the host itself")
        office = self.results(events, "The office (excepted) reaches the upgraded app during maintenance")
        self.report.check("health check on port 80 from the host itself passed during maintenance, every host",
                          all(health.get(h, {}).get("status") == "ok" for h in HOSTS),
                          json.dumps({h: health.get(h, {}).get("status") for h in HOSTS}))
        self.report.check("the office (excepted) reached the upgraded app during maintenance, every host",
                          all(office.get(h, {}).get("status") == "ok" for h in HOSTS),
                          json.dumps({h: office.get(h, {}).get("status") for h in HOSTS}))
        on = self.results(events, "Maintenance on")
        off = self.results(events, "Maintenance off")
        self.report.check("module results: on and off changed, with maint's status (active true, then false)",
                          all(on.get(h, {}).get("status") == "changed" and off.get(h, {}).get("status") == "changed"
                              and on[h]["result"]["status"]["active"] is True
                              and on[h]["result"]["status"]["server"]["healthy"] is True
                              and off[h]["result"]["status"]["active"] is False for h in HOSTS))
        self.kernel_and_server_idle("after the rolling upgrade", before)
        for h in HOSTS:
            t_on, t_off = turns[h]
            page = [r for r in by_host[h] if r["kind"] == "page"]
            span = (page[-1]["t1"] - page[0]["t0"]) if page else 0
            print("      %s: %s; turn %.1f s, page seen for %.1f s"
                  % (h, self.describe_runs(by_host[h]), (t_off - t_on) if t_on and t_off else -1, span))

    def rerun(self):
        client = self.start_client("rerun")
        rc, out, events = self.play("rerun", "rolling.yml", "-e", "app_version=2")
        by_host = self.stop_client(client)
        stats = self.stats(events)
        self.report.check("the same play again: no change on any host",
                          rc == 0 and all(stats.get(h, {}).get("changed", 1) == 0
                                          and stats.get(h, {}).get("failures", 1) == 0 for h in HOSTS),
                          "changed per host: %s" % {h: stats.get(h, {}).get("changed") for h in HOSTS}
                          if rc == 0 else tail(out))
        self.report.check("the same play again: the client saw only the app",
                          all(by_host[h] and all(r["kind"] == "app" for r in by_host[h]) for h in HOSTS),
                          "; ".join("%s: %s" % (h, self.describe_runs(by_host[h])) for h in HOSTS))

    def module_play(self, before):
        rc, out, events = self.play("module", "module.yml")
        want = open(os.path.join(HERE, "playbooks", "module.yml")).read().count("ansible.builtin.assert:")
        asserts = [e for e in events if e["ev"] == "result" and e["action"] == "ansible.builtin.assert"]
        passed = [e for e in asserts if e["status"] == "ok"]
        failed = [e for e in events if e["ev"] == "result" and e["status"] == "failed"]
        self.report.check("module behaviour (reruns, extend, check mode, bad input, info): %d of %d asserts passed"
                          % (len(passed), want), rc == 0 and len(passed) == want and not failed,
                          "; ".join("%s: %s" % (e["task"], e["result"].get("msg")) for e in failed)[:1500]
                          or ("" if rc == 0 else tail(out)))
        self.kernel_and_server_idle("after the module play", before)

    def main(self):
        self.ensure_venv()
        self.build_collection()
        self.sanity()
        self.start_hosts()
        self.syntax_check()
        self.setup_role()
        before = {h: self.lab.ruleset(h) for h in HOSTS}
        self.check_run(before)
        self.real_run(before)
        self.rerun()
        self.module_play(before)

    def cleanup(self):
        started = time.time()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        self.lab.down()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        left = [ns for ns in subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, timeout=10)
                .stdout.decode().split() if ns.endswith("-%s" % self.args.tag)]
        self.report.check("cleanup: every namespace and process of the test is gone", not left, " ".join(left))
        if self.args.keep or self.report.failed:
            print("==> kept %s (logs of every play: play-*.log, client records: client-*.jsonl)" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.phase("cleanup", started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maint", required=True, help="the maint binary under test")
    parser.add_argument("--tag", default=str(os.getpid()), help="suffix of namespace names")
    parser.add_argument("--venv", default=os.environ.get("FLEET_VENV")
                        or "/tmp/maint-fleet-venv-ansible-core-%s" % ANSIBLE_CORE,
                        help="the virtual environment with ansible-core (created if missing, kept between runs)")
    parser.add_argument("--sanity", choices=["all", "validate-modules", "none"],
                        default=os.environ.get("FLEET_SANITY", "all"), help="which ansible-test sanity tests to run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    args.maint = os.path.abspath(args.maint)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    report = Report()
    started = time.time()
    fleet = Fleet(args, report)
    print("==> maint %s; work directory %s" % (args.maint, fleet.tmp), flush=True)
    try:
        fleet.main()
    except (Exception, KeyboardInterrupt, Interrupted) as e:
        report.check("the fleet test ran to the end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            fleet.cleanup()
        except Exception as e:
            report.check("cleanup", False, "%s: %s" % (type(e).__name__, e))
        print("==> timings: " + ", ".join("%s %.1f s" % t for t in fleet.timings)
              + "; total %.1f s" % (time.time() - started))
        if report.failures:
            print("==> failed: " + "; ".join(report.failures))
        print("fleet: %d passed, %d failed" % (report.passed, report.failed), flush=True)
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
