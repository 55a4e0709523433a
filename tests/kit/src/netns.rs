//! Test hosts on one machine: network namespaces the test creates and removes, joined by veth
//! pairs. Nothing here touches the machine's own namespace beyond creating and deleting the
//! namespaces and the veth pairs that move into them at once.
//!
//! No bridge ever goes into a host's namespace: with br_netfilter a bridge makes that host's
//! own NAT rules fire on the bridge port and redirects silently fail.

use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other namespace or link of this test run has: `PREFIX<pid>x<n>`, at most 15
/// characters so it also fits an interface name.
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    name.truncate(15);
    name
}

/// A network namespace, removed (with whatever still runs in it) when dropped.
pub struct Netns {
    pub name: String,
    /// Long-running processes started in it; killed and reaped on drop.
    children: Mutex<Vec<Child>>,
}

impl Netns {
    /// A new namespace for `role` (a short word that shows in `ip netns list`), with `lo` up.
    pub fn new(role: &str) -> Netns {
        let ns = Netns {
            name: unique(&format!("mt-{role}-")),
            children: Mutex::new(Vec::new()),
        };
        ip(&["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside and insists it succeeds.
    pub fn exec(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "in {}: {} failed: {}{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a whitespace-separated command line inside (no quoting) and insists it succeeds.
    pub fn sh(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        String::from_utf8_lossy(&self.exec(&words).stdout).into_owned()
    }

    /// Runs a command inside; the caller judges the outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ip netns exec")
    }

    /// A command that runs inside when started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts a long-running process inside, killed when the namespace is dropped. Returns
    /// its pid.
    pub fn spawn(&self, args: &[&str]) -> u32 {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec");
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        pid
    }

    /// Runs `f` on a thread that has joined this namespace, so sockets it opens (and threads
    /// it starts) live here. The calling thread stays where it was.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// [`Netns::thread`], waited for; a panic inside is the caller's panic.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.thread(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The nftables ruleset inside, for checks that maint touched nothing else.
    pub fn ruleset(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["nft", "list", "ruleset"]).stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever else still runs inside (a maintenance server `on` started), then the
        // namespace itself.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One end of a link: a namespace, the interface name inside it, and its addresses (CIDR).
pub struct End<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    pub v4: &'a str,
    pub v6: &'a str,
}

/// Joins two namespaces with a veth pair and brings both ends up with their addresses.
pub fn link(a: End<'_>, b: End<'_>) {
    // Created straight inside the namespaces, under temporary names that cannot collide.
    let (ta, tb) = (unique("mta"), unique("mtb"));
    ip(&[
        "link", "add", &ta, "netns", &a.ns.name, "type", "veth", "peer", "name", &tb, "netns",
        &b.ns.name,
    ]);
    for (end, tmp) in [(&a, &ta), (&b, &tb)] {
        end.ns.exec(&["ip", "link", "set", tmp, "name", end.ifname]);
        end.ns
            .exec(&["ip", "addr", "add", end.v4, "dev", end.ifname]);
        end.ns
            .exec(&["ip", "addr", "add", end.v6, "dev", end.ifname, "nodad"]);
        end.ns.exec(&["ip", "link", "set", end.ifname, "up"]);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
