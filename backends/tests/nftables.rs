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

#[test]
fn applying_twice_changes_nothing() {
    in_netns(|| {
        let b = backend();
        let p = policy_a();
        b.apply(&p).unwrap();
        let first = list_table();
        b.apply(&p).unwrap();
        assert_eq!(list_table(), first);
        assert_eq!(b.current().unwrap(), Some(p));
    });
}

#[test]
fn a_new_policy_replaces_the_old_one_entirely() {
    in_netns(|| {
        let b = backend();
        b.apply(&policy_a()).unwrap();
        let p = policy_b();
        b.apply(&p).unwrap();
        assert_eq!(b.current().unwrap(), Some(p));
        let text = list_table();
        for gone in [
            "198.51.100.0/24",
            "2001:db8::/48",
            "8504",
            "9000",
            "meta time",
        ] {
            assert!(!text.contains(gone), "{gone} survived the replace:\n{text}");
        }
        assert!(text.contains("redirect to :8600"), "{text}");
    });
}

#[test]
fn a_refused_batch_leaves_the_previous_table() {
    in_netns(|| {
        let b = backend();
        let a = policy_a();
        b.apply(&a).unwrap();
        let before = list_table();
        let err = b.apply_refused_for_test(&policy_b()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BackendError::Failed(_)), "{msg}");
        assert!(msg.contains("missing table inet maint-missing"), "{msg}");
        assert_eq!(list_table(), before);
        assert_eq!(b.current().unwrap(), Some(a));
    });
}

#[test]
fn clear_removes_only_our_table() {
    in_netns(|| {
        let b = backend();
        assert!(!b.clear().unwrap(), "nothing to clear yet");
        run("nft", &["add", "table", "inet", "other"]);
        run("nft", &["add", "table", "ip", "maint"]);
        b.apply(&policy_a()).unwrap();
        assert!(b.clear().unwrap());
        assert_eq!(tables(), ["table inet other", "table ip maint"]);
        assert!(!b.clear().unwrap());
        assert_eq!(b.current().unwrap(), None);
    });
}

#[test]
fn a_foreign_table_of_our_name_is_never_touched() {
    in_netns(|| {
        let b = backend();
        run(
            "nft",
            &[
                "add",
                "table",
                "inet",
                "maint",
                "{ comment \"someone else\"; }",
            ],
        );
        run("nft", &["add", "chain", "inet", "maint", "keep"]);
        let before = list_table();
        let err = b.apply(&policy_a()).unwrap_err().to_string();
        assert!(err.contains("not created by maint"), "{err}");
        let err = b.clear().unwrap_err().to_string();
        assert!(err.contains("not created by maint"), "{err}");
        let err = b.current().unwrap_err().to_string();
        assert!(err.contains("does not look like maint's"), "{err}");
        let warnings = b.preflight().unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("not created by maint")),
            "{warnings:?}"
        );
        assert_eq!(list_table(), before);
    });
}

#[test]
fn a_stamped_table_with_other_rules_does_not_read_back() {
    in_netns(|| {
        let b = backend();
        b.apply(&policy_a()).unwrap();
        run(
            "nft",
            &[
                "add", "rule", "inet", "maint", "input", "tcp", "dport", "22", "drop",
            ],
        );
        let err = format!("{:#}", anyhow::Error::from(b.current().unwrap_err()));
        assert!(err.contains("chain input has 14 rules"), "{err}");
        let warnings = b.preflight().unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("does not read back")),
            "{warnings:?}"
        );
        // Still maint's (stamped): apply replaces it wholesale.
        b.apply(&policy_a()).unwrap();
        assert!(!list_table().contains("dport 22"));
    });
}

#[test]
fn render_loads_with_nft_and_matches_apply() {
    in_netns(|| {
        let b = backend();
        let p = policy_a();
        b.apply(&p).unwrap();
        let applied = list_table();
        nft_load(&b.render(None));
        assert_eq!(b.current().unwrap(), None);
        nft_load(&b.render(Some(&p)));
        assert_eq!(list_table(), applied);
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        // Loading the text over an existing table replaces it, like apply.
        nft_load(&b.render(Some(&policy_b())));
        assert_eq!(b.current().unwrap(), Some(policy_b()));
        // render(None) is loadable when nothing is in place, too.
        nft_load(&b.render(None));
        nft_load(&b.render(None));
        assert!(tables().is_empty());
    });
}

#[test]
fn everything_and_the_top_of_the_address_space_read_back() {
    in_netns(|| {
        let b = backend();
        let p = Policy::new(
            maint_backends::everything(),
            nets(&["255.255.255.0/24", "ffff::/16", "0.0.0.0/32"]),
            [PortMap {
                public: 80,
                server: 8503,
            }],
            None,
        );
        b.apply(&p).unwrap();
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        let text = list_table();
        assert!(text.contains("0.0.0.0/0"), "{text}");
        assert!(text.contains("::/0"), "{text}");
        assert!(text.contains("255.255.255.0/24"), "{text}");
        nft_load(&b.render(Some(&p)));
        assert_eq!(list_table(), text);
    });
}

#[test]
fn no_ports_and_empty_sets_are_a_valid_policy() {
    in_netns(|| {
        let b = backend();
        let p = Policy::new([], [], [], None);
        b.apply(&p).unwrap();
        assert_eq!(b.current().unwrap(), Some(p));
    });
}
