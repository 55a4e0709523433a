//! nftables backend against the real kernel, each case in a network namespace of its own.
//!
//! A case runs on a fresh thread that unshares its network namespace (namespaces are per
//! thread), so neither the backend's netlink sockets nor the `nft`/`conntrack` children the
//! thread spawns ever see the machine's own firewall. The namespace dies with the thread.
//! Without root the cases skip, except under CI, where they fail loudly.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use maint_backends::nftables::Nftables;
use maint_backends::{Backend, BackendError, Options, Policy, PortMap, StateTarget};

/// Runs `f` in a new network namespace (with `lo` up); None when skipped for lack of root.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("CI").is_some() {
            panic!("the nftables integration tests need root (CI runs them as root)");
        }
        eprintln!("skipped: the nftables integration tests need root");
        return None;
    }
    let handle = std::thread::spawn(move || {
        let host = std::fs::read_link("/proc/self/ns/net").expect("read own netns");
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        let here = std::fs::read_link("/proc/thread-self/ns/net").expect("read thread netns");
        assert_ne!(
            host, here,
            "refusing to run outside a private network namespace"
        );
        run("ip", &["link", "set", "lo", "up"]);
        f()
    });
    match handle.join() {
        Ok(v) => Some(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a command (in the calling thread's namespace); panics unless it succeeds.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn run_stdin(cmd: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn nft_load(text: &str) {
    let out = run_stdin("nft", &["-f", "-"], text);
    assert!(
        out.status.success(),
        "nft -f - failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backend() -> Nftables {
    Nftables::new(Options {
        name: "maint".into(),
        pfctl: "pfctl".into(),
    })
}

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|s| s.parse().unwrap()).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn policy_a() -> Policy {
    Policy::new(
        nets(&[
            "198.51.100.0/24",
            "203.0.113.0/25",
            "2001:db8::/48",
            "2001:db8:5::/64",
        ]),
        nets(&["198.51.100.7/32", "2001:db8::1/128"]),
        [
            PortMap {
                public: 80,
                server: 8503,
            },
            PortMap {
                public: 443,
                server: 8504,
            },
            PortMap {
                public: 8080,
                server: 9000,
            },
        ],
        Some(now() + 3600),
    )
}

fn policy_b() -> Policy {
    Policy::new(
        nets(&["192.0.2.0/24"]),
        [],
        [PortMap {
            public: 80,
            server: 8600,
        }],
        None,
    )
}

fn list_table() -> String {
    run("nft", &["list", "table", "inet", "maint"])
}

fn tables() -> Vec<String> {
    run("nft", &["list", "tables"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn apply_loads_sets_and_rules_and_reads_back() {
    in_netns(|| {
        let b = backend();
        assert_eq!(b.current().unwrap(), None);
        let p = policy_a();
        b.apply(&p).unwrap();

        let json: serde_json::Value =
            serde_json::from_str(&run("nft", &["-j", "list", "table", "inet", "maint"])).unwrap();
        let items = json["nftables"].as_array().unwrap();
        let set = |name: &str| {
            items
                .iter()
                .find(|i| i["set"]["name"] == name)
                .unwrap_or_else(|| panic!("set {name} missing"))["set"]
                .clone()
        };
        assert_eq!(set("src4")["type"], "ipv4_addr");
        assert_eq!(set("src6")["type"], "ipv6_addr");
        assert_eq!(set("src4")["flags"], serde_json::json!(["interval"]));
        let elems = |name: &str| -> Vec<String> {
            set(name)["elem"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            let p = &e["prefix"];
                            if p.is_null() {
                                e.as_str().unwrap().to_owned()
                            } else {
                                format!("{}/{}", p["addr"].as_str().unwrap(), p["len"])
                            }
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(elems("src4"), ["198.51.100.0/24", "203.0.113.0/25"]);
        assert_eq!(elems("src6"), ["2001:db8::/48", "2001:db8:5::/64"]);
        assert_eq!(elems("exc4"), ["198.51.100.7"]);
        assert_eq!(elems("exc6"), ["2001:db8::1"]);
        let chain = |name: &str| {
            items
                .iter()
                .find(|i| i["chain"]["name"] == name)
                .unwrap_or_else(|| panic!("chain {name} missing"))["chain"]
                .clone()
        };
        assert_eq!(chain("prerouting")["type"], "nat");
        assert_eq!(chain("prerouting")["prio"], -110);
        assert_eq!(chain("input")["type"], "filter");
        assert_eq!(chain("input")["prio"], -10);
        let rules = items.iter().filter(|i| i["rule"].is_object()).count();
        // prerouting: 2 returns + 3 ports x 2 families; input: 3 + 1 + 3 + 3 x 2
        assert_eq!(rules, 8 + 13);

        let text = list_table();
        assert!(text.contains("redirect to :8503"), "{text}");
        assert!(text.contains("meta time < \""), "{text}");
        assert!(
            text.contains(&format!(
                "comment \"maint:1 ports=80>8503,443>8504,8080>9000 until={}\"",
                p.until.unwrap()
            )),
            "{text}"
        );

        assert_eq!(b.current().unwrap(), Some(p));
    });
}
