//! Test hosts on one machine: a web server host and two clients, each in a network
//! namespace the test creates and removes, joined by plain veth pairs (no bridge in the
//! server's namespace: with br_netfilter the server's own NAT rules would fire on the bridge
//! port and redirects would silently fail).
//!
//!   public client  198.51.100.10  2001:db8:100::10 ──veth── 198.51.100.1  2001:db8:100::1  server
//!   office client  203.0.113.10   2001:db8:113::10 ──veth── 203.0.113.1   2001:db8:113::1  server
//!
//! Documentation prefixes only. Nothing here touches the machine's own namespace beyond
//! creating and deleting the namespaces and the veth pairs that move into them.

use std::os::fd::AsFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Host {
    pub ns: String,
    pub v4: &'static str,
    pub v6: &'static str,
}

pub struct Lab {
    /// Long-running processes started in the namespaces; killed and reaped on drop.
    children: std::sync::Mutex<Vec<std::process::Child>>,
    pub server: Host,
    pub public: Host,
    pub office: Host,
    /// The server's addresses as each client reaches it.
    pub server_public_v4: &'static str,
    pub server_public_v6: &'static str,
    pub server_office_v4: &'static str,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

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

impl Lab {
    pub fn new() -> Lab {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let name = |role: &str| format!("mt-{role}-{id}");
        let lab = Lab {
            children: std::sync::Mutex::new(Vec::new()),
            server: Host {
                ns: name("srv"),
                v4: "198.51.100.1",
                v6: "2001:db8:100::1",
            },
            public: Host {
                ns: name("pub"),
                v4: "198.51.100.10",
                v6: "2001:db8:100::10",
            },
            office: Host {
                ns: name("off"),
                v4: "203.0.113.10",
                v6: "2001:db8:113::10",
            },
            server_public_v4: "198.51.100.1",
            server_public_v6: "2001:db8:100::1",
            server_office_v4: "203.0.113.1",
        };
        for h in [&lab.server, &lab.public, &lab.office] {
            ip(&["netns", "add", &h.ns]);
            lab.exec(&h.ns, &["ip", "link", "set", "lo", "up"]);
        }
        let link = |client: &Host, srv_if: &str, srv_v4: &str, srv_v6: &str| {
            // veth names are limited to 15 characters and live briefly in the host namespace.
            let tag = NEXT.fetch_add(1, Ordering::Relaxed);
            let (a, b) = (
                format!("mta{}{tag}", std::process::id() % 100000),
                format!("mtb{}{tag}", std::process::id() % 100000),
            );
            ip(&[
                "link",
                "add",
                &a,
                "netns",
                &lab.server.ns,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &client.ns,
            ]);
            lab.exec(&lab.server.ns, &["ip", "link", "set", &a, "name", srv_if]);
            lab.exec(&client.ns, &["ip", "link", "set", &b, "name", "eth0"]);
            lab.exec(
                &lab.server.ns,
                &["ip", "addr", "add", &format!("{srv_v4}/24"), "dev", srv_if],
            );
            lab.exec(
                &lab.server.ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{srv_v6}/64"),
                    "dev",
                    srv_if,
                    "nodad",
                ],
            );
            lab.exec(&lab.server.ns, &["ip", "link", "set", srv_if, "up"]);
            lab.exec(
                &client.ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", client.v4),
                    "dev",
                    "eth0",
                ],
            );
            lab.exec(
                &client.ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/64", client.v6),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            lab.exec(&client.ns, &["ip", "link", "set", "eth0", "up"]);
        };
        link(&lab.public, "pub0", "198.51.100.1", "2001:db8:100::1");
        link(&lab.office, "off0", "203.0.113.1", "2001:db8:113::1");
        lab
    }

    /// Runs a command in a namespace and insists it succeeds.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let out = self.run(ns, args);
        assert!(
            out.status.success(),
            "in {ns}: {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command in a namespace; the caller judges the outcome.
    pub fn run(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Starts a long-running process in a namespace; `Drop` of the lab kills and reaps it.
    /// Returns its pid.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec");
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }

    /// Runs `f` on a thread that has joined namespace `ns`, so sockets it opens live there.
    /// Network namespaces are per thread; the test's own thread stays where it was.
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// The server namespace's nftables ruleset, for checks that maint touched nothing else.
    pub fn ruleset(&self) -> String {
        String::from_utf8_lossy(
            &self
                .exec(&self.server.ns, &["nft", "list", "ruleset"])
                .stdout,
        )
        .into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in [&self.server, &self.public, &self.office] {
            // Kill whatever still runs inside (app, maintenance server), then the namespace.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &h.ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).status();
        }
    }
}
