//! nftables backend against the real kernel, each case in a network namespace of its own.
//!
//! A case runs on a thread that has joined a namespace of the test kit's (namespaces are per
//! thread), so neither the backend's netlink sockets nor the `nft`/`conntrack` children the
//! thread spawns ever see the machine's own firewall; the namespace is removed afterwards.
//! Without root the cases skip, except under CI, where they fail loudly.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use maint_backends::nftables::Nftables;
use maint_backends::{Admission, Backend, BackendError, Policy, PortMap};
use maint_testkit::netns::Netns;

/// Whether root-only cases may run (see the test kit).
fn have_root() -> bool {
    maint_testkit::root::have_root("the nftables backend tests")
}

/// Runs `f` in a network namespace of its own (with `lo` up), removed afterwards; None when
/// skipped for lack of root.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !have_root() {
        return None;
    }
    Some(Netns::new("nft").within(f))
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
    Nftables::new("maint".into())
}

/// Runs the commands of a `render_clear` text as an operator would paste them.
fn run_script(text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let out = Command::new("sh").args(["-c", line]).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
        // prerouting: 4 returns (exceptions, passes) + 3 ports x 2 families;
        // input: 3 accepts + lo + 3 drops + (invalid, reply-direction) x 3 ports x 2 families
        assert_eq!(rules, 10 + 19);

        let text = list_table();
        assert!(text.contains("redirect to :8503"), "{text}");
        assert!(text.contains("meta time < \""), "{text}");
        assert!(
            text.contains(&format!(
                "comment \"maint:1 ports=80>8503,443>8504,8080>9000 until={} id={}\"",
                p.until.unwrap(),
                p.digest()
            )),
            "{text}"
        );

        assert_eq!(b.current().unwrap(), Some(p));
    });
}

/// The elements of one of maint's sets as `nft -j` lists them: (prefix, timeout seconds).
fn set_elements(set: &str) -> Vec<(String, Option<u64>)> {
    let out = run("nft", &["-j", "list", "set", "inet", "maint", set]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let elems = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["set"]["elem"].as_array().cloned())
        .unwrap_or_default();
    elems
        .iter()
        .map(|e| {
            let (val, timeout) = match e.get("elem") {
                Some(inner) => (inner["val"].clone(), inner["timeout"].as_u64()),
                None => (e.clone(), None),
            };
            let text = match val.get("prefix") {
                Some(p) => format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]),
                None => val.as_str().unwrap().to_owned(),
            };
            (text, timeout)
        })
        .collect()
}

#[test]
fn admissions_go_into_the_pass_sets_with_their_timeout_and_leave_the_policy_alone() {
    in_netns(|| {
        let b = backend();
        let p = policy_a();
        // Nothing in place: an admission has nowhere to go.
        let early = Admission {
            net: "192.0.2.7/32".parse().unwrap(),
            until: Some(now() + 600),
        };
        assert!(b.admit(&early).is_err());
        b.apply(&p).unwrap();
        let digest = b.in_force().unwrap().unwrap().digest;

        b.admit(&early).unwrap();
        b.admit(&Admission {
            net: "2001:db8:7:7::/64".parse().unwrap(),
            until: None,
        })
        .unwrap();
        let v4 = set_elements("pass4");
        assert_eq!(v4.len(), 1, "{v4:?}");
        assert_eq!(v4[0].0, "192.0.2.7");
        let t = v4[0].1.expect("a timed admission carries a timeout");
        assert!((595..=600).contains(&t), "timeout {t}");
        assert_eq!(set_elements("pass6"), [("2001:db8:7:7::/64".into(), None)]);

        // Admitting again sets the end anew.
        b.admit(&Admission {
            until: Some(now() + 60),
            ..early
        })
        .unwrap();
        let t = set_elements("pass4")[0].1.unwrap();
        assert!(t <= 60, "timeout {t} after re-admission");

        // The policy and its stamp know nothing of admissions.
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        assert_eq!(b.in_force().unwrap().unwrap().digest, digest);

        b.withdraw(&[early.net, "2001:db8:7:7::/64".parse().unwrap()])
            .unwrap();
        assert!(set_elements("pass4").is_empty());
        assert!(set_elements("pass6").is_empty());
        // Gone already (expired): not an error.
        b.withdraw(&[early.net]).unwrap();

        // The kernel ends a timed admission by itself.
        b.admit(&Admission {
            net: "198.51.100.9/32".parse().unwrap(),
            until: Some(now() + 1),
        })
        .unwrap();
        assert_eq!(set_elements("pass4").len(), 1);
        std::thread::sleep(Duration::from_millis(2500));
        assert!(set_elements("pass4").is_empty());
    });
}

#[test]
fn a_draining_policy_applies_reads_back_and_loads_as_text() {
    in_netns(|| {
        let b = backend();
        let p = policy_a().draining(true);
        b.apply(&p).unwrap();
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        let text = list_table();
        assert!(text.contains("tcp flags syn / fin,syn,rst,ack"), "{text}");
        assert!(!text.contains("reject"), "{text}");
        assert!(text.contains(" drain\""), "{text}");
        // The rendered text loads as the same table.
        run("nft", &["delete", "table", "inet", "maint"]);
        nft_load(&b.render_apply(&p));
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        // The end of the drain is a new policy.
        let done = p.draining(false);
        b.apply(&done).unwrap();
        assert_eq!(b.current().unwrap(), Some(done));
        assert!(list_table().contains("reject with tcp reset"));
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
        assert!(err.contains("chain input has 20 rules"), "{err}");
        // The stamp still says what is in force (`status` and `on` read only that; the
        // keeper reads the whole table back when another program edits it).
        assert_eq!(b.in_force().unwrap().unwrap().digest, policy_a().digest());
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
        run_script(&b.render_clear());
        assert_eq!(b.current().unwrap(), None);
        nft_load(&b.render_apply(&p));
        assert_eq!(list_table(), applied);
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        // Loading the text over an existing table replaces it, like apply.
        nft_load(&b.render_apply(&policy_b()));
        assert_eq!(b.current().unwrap(), Some(policy_b()));
        // The clear commands remove maint's table and nothing else.
        run_script(&b.render_clear());
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
        nft_load(&b.render_apply(&p));
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

/// 100,000 IPv4 /24 sources and 10,000 /28 exceptions. These cannot all come from the
/// documentation ranges; they are inert set data in a namespace that routes nothing.
fn big_policy() -> Policy {
    let v4 = |a: u32, len: u8| IpNet::V4(ipnet::Ipv4Net::new(a.into(), len).unwrap());
    let base: u32 = 10 << 24;
    let sources = (0..100_000u32).map(|i| v4(base + i * 512, 24));
    let exceptions = (0..10_000u32).map(|i| v4(base + i * 5120 + 16, 28));
    Policy::new(
        sources,
        exceptions,
        [
            PortMap {
                public: 80,
                server: 8503,
            },
            PortMap {
                public: 443,
                server: 8504,
            },
        ],
        Some(now() + 600),
    )
}

/// Runs `f` and says how long it took, for the times the scale tests print.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Behaviour at scale; how fast, against `nft -f`, is measured by the benchmarks
/// (tests/bench), not asserted here: these machines are shared and noisy.
#[test]
fn a_hundred_thousand_prefixes_apply_read_back_and_load_as_text() {
    in_netns(|| {
        let b = backend();
        let p = big_policy();
        assert_eq!(p.sources.len(), 100_000);
        assert_eq!(p.exceptions.len(), 10_000);
        let ((), apply) = timed(|| b.apply(&p).unwrap());
        let (back, read) = timed(|| b.current().unwrap());
        assert!(back == Some(p.clone()), "the big policy did not read back");
        let ((), replace) = timed(|| b.apply(&p).unwrap());
        assert!(b.clear().unwrap());
        // The dry-run text of the same policy loads with nft and reads back the same.
        let ((), nft) = timed(|| nft_load(&b.render_apply(&p)));
        assert_eq!(b.current().unwrap(), Some(p.clone()));
        assert!(b.clear().unwrap());
        eprintln!(
            "100k prefixes + 10k exceptions: apply {apply:?} (replacing itself {replace:?}), \
             current {read:?}; nft -f of render_apply() {nft:?}"
        );
    });
}

/// Loads conntrack entries in one `conntrack -R` run; each line is a `conntrack -I` command.
fn conntrack_insert(lines: &[String]) {
    let path =
        std::env::temp_dir().join(format!("maint-ct-{}-{}.txt", std::process::id(), unsafe {
            libc::gettid()
        }));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = Command::new("conntrack")
        .arg("-R")
        .arg(&path)
        .output()
        .expect("spawn conntrack");
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "conntrack -R failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ct_line(src: &str, dst: &str, sport: u16, dport: u16, reply_sport: u16) -> String {
    format!(
        "-I -p tcp -s {src} -d {dst} --sport {sport} --dport {dport} -r {dst} -q {src} \
         --reply-port-src {reply_sport} --reply-port-dst {sport} --state ESTABLISHED -t 300 \
         -u SEEN_REPLY"
    )
}

/// The conntrack table as `src sport dport reply-sport` lines, sorted.
fn conntrack_list() -> Vec<String> {
    let out = Command::new("conntrack")
        .args(["-L", "-o", "extended"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let field = |key: &str, nth: usize| {
                l.split_whitespace()
                    .filter_map(|w| w.strip_prefix(key))
                    .nth(nth)
                    .unwrap_or("?")
                    .to_owned()
            };
            let proto = l.split_whitespace().nth(2).unwrap_or("?");
            format!(
                "{proto} {} {} {} {}",
                field("src=", 0),
                field("sport=", 0),
                field("dport=", 0),
                field("sport=", 1)
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kill_disagreeing_states_removes_exactly_the_entries_that_disagree() {
    in_netns(|| {
        let b = backend();
        let p = Policy::new(
            nets(&["198.51.100.0/24", "2001:db8::/32"]),
            nets(&["198.51.100.9/32"]),
            [
                PortMap {
                    public: 80,
                    server: 8503,
                },
                PortMap {
                    public: 443,
                    server: 8504,
                },
            ],
            None,
        );
        conntrack_insert(&[
            ct_line("198.51.100.1", "192.0.2.1", 40001, 80, 80), // app, matched: App
            ct_line("2001:db8::5", "2001:db8::1", 40002, 443, 443), // app, matched: App
            ct_line("198.51.100.9", "192.0.2.1", 40003, 80, 80), // excepted
            ct_line("203.0.113.5", "192.0.2.1", 40004, 80, 80),  // not a source
            ct_line("198.51.100.1", "192.0.2.1", 40005, 22, 22), // ssh
            ct_line("198.51.100.2", "192.0.2.1", 40006, 80, 8503), // redirected: Server
            ct_line("203.0.113.6", "192.0.2.1", 40007, 443, 8504), // redirected: Server
            ct_line("198.51.100.3", "192.0.2.1", 40008, 443, 8503), // odd pairing: kept
        ]);
        conntrack_insert(&[
            "-I -p udp -s 198.51.100.1 -d 192.0.2.1 --sport 40009 --dport 80 -t 300".into(),
        ]);
        assert_eq!(conntrack_list().len(), 9);

        // The policy's clients still on the app go, and so does the redirected client the
        // policy does not redirect (203.0.113.6); the matched redirected one stays.
        assert_eq!(b.kill_disagreeing_states(&p, &p.ports).unwrap(), 3);
        assert_eq!(
            conntrack_list(),
            [
                "tcp 198.51.100.1 40005 22 22",
                "tcp 198.51.100.2 40006 80 8503",
                "tcp 198.51.100.3 40008 443 8503",
                "tcp 198.51.100.9 40003 80 80",
                "tcp 203.0.113.5 40004 80 80",
                "udp 198.51.100.1 40009 80 80",
            ]
        );
        assert_eq!(b.kill_disagreeing_states(&p, &p.ports).unwrap(), 0);

        // `off`: every redirected client goes back; nobody's connection to the app is cut.
        assert_eq!(
            b.kill_disagreeing_states(&Policy::nobody(), &p.ports)
                .unwrap(),
            1
        );
        assert_eq!(
            conntrack_list(),
            [
                "tcp 198.51.100.1 40005 22 22",
                "tcp 198.51.100.3 40008 443 8503",
                "tcp 198.51.100.9 40003 80 80",
                "tcp 203.0.113.5 40004 80 80",
                "udp 198.51.100.1 40009 80 80",
            ]
        );
    });
}

/// Behaviour at scale; the comparison with `conntrack -D` is in the benchmarks.
#[test]
fn twenty_thousand_states_are_killed_exactly() {
    in_netns(|| {
        let b = backend();
        let p = Policy::new(
            nets(&["198.51.100.0/24"]),
            [],
            [PortMap {
                public: 80,
                server: 8503,
            }],
            None,
        );
        let lines: Vec<String> = (0..20_000u32)
            .map(|i| {
                let src = format!("198.51.100.{}", i % 250 + 1);
                ct_line(&src, "192.0.2.1", 20_000 + (i / 250) as u16, 80, 80)
            })
            .collect();
        // And one that must stay: another source, outside the policy.
        let mut all = lines.clone();
        all.push(ct_line("203.0.113.9", "192.0.2.1", 40_000, 80, 80));
        conntrack_insert(&all);
        assert_eq!(conntrack_list().len(), 20_001);
        let (n, took) = timed(|| b.kill_disagreeing_states(&p, &p.ports).unwrap());
        assert_eq!(n, 20_000);
        let left = conntrack_list();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].contains("203.0.113.9"), "{left:?}");
        eprintln!("20k states: kill_disagreeing_states {took:?}");
    });
}

/// A line server: answers every line with `name`, on every connection.
fn serve(addr: &str, name: &'static str) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    if line.is_err() || writeln!(w, "{name}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(s)
}

/// Sends a line on `s`, returns the answer line (an error on reset, EOF or timeout).
fn ask(s: &mut TcpStream, line: &str) -> std::io::Result<String> {
    writeln!(s, "{line}")?;
    let mut answer = String::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => return Ok(answer),
            _ => answer.push(byte[0] as char),
        }
    }
}

fn host_loose() -> String {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_loose").unwrap_or_default()
}

/// Runs a whitespace-separated command line (no quoting needed in these tests).
fn sh(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    run(words[0], &words[1..])
}

/// A server host (app on :80, maintenance server on :8503, 192.0.2.1 and 2001:db8::1) and a
/// client host (192.0.2.2, 2001:db8::2) joined by a veth pair.
fn site(loose: u8) -> (Netns, Netns) {
    let server = Netns::new("srv");
    let client = Netns::new("cli");
    let client_ns = client.name.clone();
    server.within(move || {
        sh(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_tcp_loose={loose}"
        ));
        sh("ip link add veth0 type veth peer name veth1");
        sh(&format!("ip link set veth1 netns {client_ns}"));
        sh("ip addr add 192.0.2.1/24 dev veth0");
        sh("ip -6 addr add 2001:db8::1/64 dev veth0 nodad");
        sh("ip link set veth0 up");
        // As on any real host, something already tracks connections, so the ones opened
        // before maint's table exist have conntrack entries to kill.
        nft_load(
            "table inet other {\n chain c {\n type filter hook prerouting priority 0\n \
             ct state established accept\n }\n}\n",
        );
        serve("[::]:80", "APP");
        serve("[::]:8503", "MAINT");
    });
    client.within(|| {
        sh("ip addr add 192.0.2.2/24 dev veth1");
        sh("ip -6 addr add 2001:db8::2/64 dev veth1 nodad");
        sh("ip link set veth1 up");
        // A veth pair carries packets once both ends are up, which on a loaded machine can
        // take longer than one connect timeout: wait until the server's kernel answers (a
        // refusal on a closed port, so no connection to the app is left to count).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let answers = |addr: &str| {
            matches!(connect(addr), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        };
        while !answers("192.0.2.1:9") || !answers("[2001:db8::1]:9") {
            assert!(
                std::time::Instant::now() < deadline,
                "the test link did not come up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (server, client)
}

/// The whole on/off cycle with real TCP clients, under one nf_conntrack_tcp_loose setting.
fn clients_move_both_ways(loose: u8) {
    if !have_root() {
        return;
    }
    let host_before = host_loose();
    let (server, client) = site(loose);

    let mut old = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut old, "hello").unwrap(), "APP");

    let policy = Policy::new(
        maint_backends::everything(),
        nets(&["2001:db8::2/128"]),
        [PortMap {
            public: 80,
            server: 8503,
        }],
        Some(now() + 600),
    );
    let p = policy.clone();
    let killed = server.within(move || {
        let b = backend();
        b.apply(&p).unwrap();
        b.kill_disagreeing_states(&p, &p.ports).unwrap()
    });
    assert_eq!(killed, 1, "the open keep-alive connection to the app");
    // Its next segment meets either the redirect (loose=1: picked up mid-stream, NATed to the
    // server port, reset there) or the INVALID reset rule (loose=0); never the app.
    let after = ask(&mut old, "still there?");
    assert!(
        after.is_err(),
        "loose={loose}: old connection still reaches {after:?}"
    );

    let mut m = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut m, "hello").unwrap(), "MAINT");
    let mut excepted = client.within(|| connect("[2001:db8::1]:80")).unwrap();
    assert_eq!(ask(&mut excepted, "hello").unwrap(), "APP");
    // The maintenance server's own port is closed to the network...
    assert!(client.within(|| connect("192.0.2.1:8503")).is_err());
    assert!(client.within(|| connect("[2001:db8::1]:8503")).is_err());
    // ...but open to the host itself.
    let mut local = server.within(|| connect("127.0.0.1:8503")).unwrap();
    assert_eq!(ask(&mut local, "hello").unwrap(), "MAINT");

    // `off`, first step: new connections reach the app, while the redirected one is still
    // translated both ways, so the maintenance server can still answer it.
    assert!(server.within(|| backend().stop_new_redirects().unwrap()));
    let mut fresh = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut fresh, "hello").unwrap(), "APP");
    assert_eq!(
        ask(&mut m, "answered after the redirect rules went?").unwrap(),
        "MAINT"
    );

    let p = policy.clone();
    let killed = server.within(move || {
        let b = backend();
        assert!(b.clear().unwrap());
        b.kill_disagreeing_states(&Policy::nobody(), &p.ports)
            .unwrap()
    });
    assert_eq!(
        killed, 1,
        "the client's connection to the maintenance server"
    );
    assert!(ask(&mut m, "still there?").is_err());
    let mut back = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut back, "hello").unwrap(), "APP");

    drop((server, client));
    assert_eq!(
        host_loose(),
        host_before,
        "the host's sysctl must not change"
    );
}

#[test]
fn clients_move_both_ways_with_loose_tcp_tracking() {
    clients_move_both_ways(1);
}

#[test]
fn clients_move_both_ways_with_strict_tcp_tracking() {
    clients_move_both_ways(0);
}

/// Drops CAP_NET_ADMIN from the calling thread's effective set (capabilities are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget");
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset");
}

#[test]
fn without_cap_net_admin_every_call_says_permission() {
    in_netns(|| {
        let b = backend();
        b.apply(&policy_a()).unwrap();
        drop_net_admin();
        let is_perm = |e: BackendError| matches!(e, BackendError::Permission { .. });
        assert!(is_perm(b.preflight().unwrap_err()));
        assert!(is_perm(b.apply(&policy_b()).unwrap_err()));
        assert!(is_perm(b.current().unwrap_err()));
        assert!(is_perm(b.clear().unwrap_err()));
        assert!(is_perm(
            b.kill_disagreeing_states(&policy_a(), &[]).unwrap_err()
        ));
    });
}

#[test]
fn the_kernel_ends_the_window_by_itself() {
    if !have_root() {
        return;
    }
    let (server, client) = site(1);
    let ports = [PortMap {
        public: 80,
        server: 8503,
    }];
    for (until, expect) in [
        (now() + 600, "MAINT"),
        (now() - 5, "APP"),
        (now() + 86_400 * 365, "MAINT"),
        (1, "APP"),
    ] {
        let p = Policy::new(maint_backends::everything(), [], ports, Some(until));
        server.within(move || backend().apply(&p).unwrap());
        let mut c = client.within(|| connect("192.0.2.1:80")).unwrap();
        assert_eq!(ask(&mut c, "hello").unwrap(), expect, "until={until}");
        let mut c = client.within(|| connect("[2001:db8::1]:80")).unwrap();
        assert_eq!(
            ask(&mut c, "hello").unwrap(),
            expect,
            "until={until} (IPv6)"
        );
    }
    // A window that closes while we watch.
    let p = Policy::new(maint_backends::everything(), [], ports, Some(now() + 2));
    server.within(move || backend().apply(&p).unwrap());
    let mut c = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut c, "hello").unwrap(), "MAINT");
    std::thread::sleep(Duration::from_secs(3));
    let mut c = client.within(|| connect("192.0.2.1:80")).unwrap();
    assert_eq!(ask(&mut c, "hello").unwrap(), "APP");
}
