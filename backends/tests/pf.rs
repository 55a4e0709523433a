//! The pf backend: golden tests of the anchor text, and its pfctl command sequences run
//! against the fake pfctl (tests/fake-pfctl), which keeps pf's state in a directory.
//!
//! The fake is a separate workspace member, so it must be built before these tests run:
//! `cargo test --workspace` does that (the fake has an integration test of its own, which
//! makes cargo build its binary); with `-p maint-backends` alone, run
//! `cargo build -p fake-pfctl` first.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;
use maint_backends::pf::Pf;
use maint_backends::{everything, Admission, Backend, BackendError, Policy, PortMap};

use maint_testkit::pfparse;

const WEB: [PortMap; 2] = [
    PortMap {
        public: 80,
        server: 8503,
    },
    PortMap {
        public: 443,
        server: 8504,
    },
];

const MAIN_WITH_ANCHOR: &str = "block return all\n\
    pass out all flags S/SA\n\
    anchor \"maint\" all\n\
    pass in proto tcp from any to any port = 80 flags S/SA label \"www-normal\"\n\
    pass in proto tcp from any to any port = 22 flags S/SA\n";

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|s| s.parse().unwrap()).collect()
}

fn offline(name: &str) -> Pf {
    Pf::new(name, "/nonexistent/pfctl".into())
}

// ---------------------------------------------------------------------------------------------
// Golden tests of the anchor text (render touches nothing). Every text is also put to
// OpenBSD's own parser, as `pfctl -a ANCHOR -f -` would read it.

/// What the backend would load into `anchor` for `policy`, after OpenBSD's parser accepted it.
fn rendered(anchor: &str, policy: &Policy) -> String {
    let text = offline(anchor).render_apply(policy);
    pfparse::assert_accepts(anchor, &text);
    text
}

#[test]
fn render_all_sources() {
    let p = Policy::new(everything(), [], WEB, None);
    assert_eq!(
        rendered("maint", &p),
        r#"# maint: anchor "maint", loaded whole by `pfctl -a maint -f -`; maint replaces it on every change.
table <maint_src> {
	0.0.0.0/0
	::/0
}
table <maint_pass> persist
match in on ! lo0 proto tcp from <maint_pass> to any port { 80 443 } tag "maint-pass"
pass in quick on ! lo0 inet proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to 127.0.0.1 port 8503 label "maint-redirect"
pass in quick on ! lo0 inet6 proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to ::1 port 8503 label "maint-redirect"
pass in quick on ! lo0 inet proto tcp from <maint_src> to any port 443 ! tagged "maint-pass" rdr-to 127.0.0.1 port 8504 label "maint-redirect"
pass in quick on ! lo0 inet6 proto tcp from <maint_src> to any port 443 ! tagged "maint-pass" rdr-to ::1 port 8504 label "maint-redirect"
"#
    );
}

#[test]
fn render_sources_with_exceptions() {
    let p = Policy::new(
        nets(&["198.51.100.0/24", "2001:db8::/32"]),
        nets(&["198.51.100.128/25", "2001:db8:beef::/48", "203.0.113.5/32"]),
        [WEB[0]],
        None,
    );
    assert_eq!(
        rendered("maint", &p),
        r#"# maint: anchor "maint", loaded whole by `pfctl -a maint -f -`; maint replaces it on every change.
table <maint_src> {
	198.51.100.0/24
	2001:db8::/32
	!198.51.100.128/25
	!203.0.113.5/32
	!2001:db8:beef::/48
}
table <maint_pass> persist
match in on ! lo0 proto tcp from <maint_pass> to any port 80 tag "maint-pass"
pass in quick on ! lo0 inet proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to 127.0.0.1 port 8503 label "maint-redirect"
pass in quick on ! lo0 inet6 proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to ::1 port 8503 label "maint-redirect"
"#
    );
}

#[test]
fn render_ipv6_only_has_no_inet_rules() {
    let p = Policy::new(nets(&["2001:db8:1::/48"]), [], WEB, None);
    assert_eq!(
        rendered("maint", &p),
        r#"# maint: anchor "maint", loaded whole by `pfctl -a maint -f -`; maint replaces it on every change.
table <maint_src> {
	2001:db8:1::/48
}
table <maint_pass> persist
match in on ! lo0 proto tcp from <maint_pass> to any port { 80 443 } tag "maint-pass"
pass in quick on ! lo0 inet6 proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to ::1 port 8503 label "maint-redirect"
pass in quick on ! lo0 inet6 proto tcp from <maint_src> to any port 443 ! tagged "maint-pass" rdr-to ::1 port 8504 label "maint-redirect"
"#
    );
}

#[test]
fn render_custom_ports_and_anchor_name() {
    let p = Policy::new(
        nets(&["192.0.2.0/24"]),
        [],
        [PortMap {
            public: 8080,
            server: 9000,
        }],
        None,
    );
    assert_eq!(
        rendered("web/maint", &p),
        r#"# maint: anchor "web/maint", loaded whole by `pfctl -a web/maint -f -`; maint replaces it on every change.
table <web_maint_src> {
	192.0.2.0/24
}
table <web_maint_pass> persist
match in on ! lo0 proto tcp from <web_maint_pass> to any port 8080 tag "web_maint-pass"
pass in quick on ! lo0 inet proto tcp from <web_maint_src> to any port 8080 ! tagged "web_maint-pass" rdr-to 127.0.0.1 port 9000 label "web_maint-redirect"
"#
    );
}

#[test]
fn render_with_until() {
    let p = Policy::new(
        nets(&["198.51.100.0/24"]),
        [],
        [WEB[0]],
        Some(1_767_225_600),
    );
    assert_eq!(
        rendered("maint", &p),
        r#"# maint: anchor "maint", loaded whole by `pfctl -a maint -f -`; maint replaces it on every change.
# until 2026-01-01 00:00:00 UTC (1767225600); pf cannot expire rules, so maint runs `maint off` then.
table <maint_src> {
	198.51.100.0/24
}
table <maint_pass> persist
match in on ! lo0 proto tcp from <maint_pass> to any port 80 tag "maint-pass"
pass in quick on ! lo0 inet proto tcp from <maint_src> to any port 80 ! tagged "maint-pass" rdr-to 127.0.0.1 port 8503 label "maint-redirect" tag "maint-until-1767225600"
"#
    );
}

#[test]
fn render_drops_a_source_wholly_inside_an_exception() {
    // A /24 positive entry would beat the /16 negation in pf's longest-prefix lookup.
    let p = Policy::new(
        nets(&["198.51.100.0/24", "192.0.2.0/24"]),
        nets(&["198.51.0.0/16"]),
        [WEB[0]],
        None,
    );
    let text = rendered("maint", &p);
    assert!(
        text.contains("\t192.0.2.0/24\n\t!198.51.0.0/16\n}"),
        "{text}"
    );
    assert!(!text.contains("\t198.51.100.0/24"), "{text}");
}

#[test]
fn render_none_describes_the_clear() {
    assert_eq!(
        offline("maint").render_clear(),
        "# maint off: empty anchor \"maint\" (its rules, then its tables); nothing else is touched.\n\
         pfctl -a maint -F rules\n\
         pfctl -a maint -F Tables\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the fake pfctl.

/// A fresh pf for one test: a directory holding the fake's state and a `pfctl` symlink to the
/// fake, which then keeps its state next to itself (no shared environment between tests).
struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(main_conf: &str) -> Fake {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "maint-pf-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(maint_testkit::bins::fake_pfctl(), dir.join("pfctl")).unwrap();
        fs::write(dir.join("main.conf"), main_conf).unwrap();
        Fake { dir }
    }

    fn pf(&self) -> Pf {
        self.pf_named("maint")
    }

    fn pf_named(&self, name: &str) -> Pf {
        Pf::new(name, self.dir.join("pfctl"))
    }

    /// The pfctl command lines run so far, in order.
    fn commands(&self) -> Vec<String> {
        self.read("log")
            .lines()
            .filter_map(|l| l.strip_prefix("$ "))
            .map(str::to_owned)
            .collect()
    }

    /// Starts a fresh command log.
    fn reset_log(&self) {
        let _ = fs::remove_file(self.dir.join("log"));
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn write(&self, file: &str, text: &str) {
        fs::write(self.dir.join(file), text).unwrap();
    }

    /// Every file of the fake's pf state, for before/after comparisons.
    fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in ["main.conf", "states", "enabled"] {
            out.push((f.to_owned(), self.read(f)));
        }
        let anchors = self.dir.join("anchors");
        let mut stack = vec![anchors.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&self.dir).unwrap().display().to_string();
                    out.push((rel, fs::read_to_string(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn office_policy() -> Policy {
    Policy::new(
        everything(),
        nets(&["203.0.113.0/24", "2001:db8:ffff::/48"]),
        WEB,
        None,
    )
}

#[test]
fn apply_is_one_load_and_current_reads_it_back() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    let p = office_policy();
    pf.apply(&p).unwrap();
    assert_eq!(fake.commands(), ["pfctl -s memory", "pfctl -a maint -f -"]);
    // The fake stores the rules the way `pfctl -a maint -s rules` prints them.
    assert_eq!(
        fake.read("anchors/maint/rules").lines().nth(2).unwrap(),
        "pass in quick on ! lo0 inet proto tcp from <maint_src> to any port = 80 flags S/SA \
         label \"maint-redirect\" ! tagged maint-pass rdr-to 127.0.0.1 port 8503"
    );
    assert_eq!(
        fake.read("anchors/maint/tables/maint_src"),
        "0.0.0.0/0\n::/0\n!203.0.113.0/24\n!2001:db8:ffff::/48\n"
    );

    fake.reset_log();
    assert_eq!(pf.current().unwrap(), Some(p));
    assert_eq!(
        fake.commands(),
        [
            "pfctl -a maint -s rules",
            "pfctl -a maint -t maint_src -T show"
        ]
    );
    assert_eq!(
        fake.read("main.conf"),
        MAIN_WITH_ANCHOR,
        "main ruleset untouched"
    );
}

#[test]
fn current_round_trips_until_ports_and_single_family() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    for p in [
        Policy::new(nets(&["198.51.100.0/24"]), [], WEB, Some(1_767_225_600)),
        Policy::new(
            nets(&["2001:db8::/32"]),
            nets(&["2001:db8:1::/48"]),
            [PortMap {
                public: 8080,
                server: 9000,
            }],
            None,
        ),
        Policy::new(nets(&["192.0.2.7/32"]), [], [WEB[1]], None),
    ] {
        pf.apply(&p).unwrap();
        assert_eq!(pf.current().unwrap(), Some(p));
    }
}

#[test]
fn wholly_excepted_source_reads_back_as_an_equivalent_policy() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    let p = Policy::new(
        nets(&["198.51.100.0/24", "192.0.2.0/24"]),
        nets(&["198.51.0.0/16"]),
        [WEB[0]],
        None,
    );
    pf.apply(&p).unwrap();
    let back = pf.current().unwrap().unwrap();
    assert_eq!(back.sources, nets(&["192.0.2.0/24"]));
    assert_eq!(back.exceptions, p.exceptions);
    for addr in ["198.51.100.1", "198.51.7.7", "192.0.2.1", "203.0.113.1"] {
        let addr = addr.parse().unwrap();
        assert_eq!(back.matches(addr), p.matches(addr), "{addr}");
    }
}

#[test]
fn apply_again_replaces_everything_at_once() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    pf.apply(&office_policy()).unwrap();
    // The backend just reloads; deciding that nothing changed is the controller's job, and
    // current() is what it decides with.
    pf.apply(&office_policy()).unwrap();
    assert_eq!(
        fake.commands(),
        [
            "pfctl -s memory",
            "pfctl -a maint -f -",
            "pfctl -s memory",
            "pfctl -a maint -f -"
        ]
    );
    assert_eq!(pf.current().unwrap(), Some(office_policy()));

    let narrower = Policy::new(nets(&["198.51.100.0/24"]), [], [WEB[0]], None);
    pf.apply(&narrower).unwrap();
    assert_eq!(pf.current().unwrap(), Some(narrower));
    assert_eq!(
        fake.read("anchors/maint/tables/maint_src"),
        "198.51.100.0/24\n"
    );
    // The pass table's `match` rule, then one redirect.
    assert_eq!(fake.read("anchors/maint/rules").lines().count(), 2);
}

#[test]
fn nothing_in_place_reads_as_none_and_clears_as_false() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    assert_eq!(pf.current().unwrap(), None);
    assert!(!pf.clear().unwrap());
    assert_eq!(
        fake.commands(),
        [
            "pfctl -a maint -s rules",
            "pfctl -a maint -s rules",
            "pfctl -a maint -s Tables"
        ],
        "nothing flushed when there was nothing"
    );
}

#[test]
fn clear_flushes_only_the_anchor() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    pf.apply(&office_policy()).unwrap();
    fake.reset_log();
    assert!(pf.clear().unwrap());
    assert_eq!(
        fake.commands(),
        [
            "pfctl -a maint -s rules",
            "pfctl -a maint -s Tables",
            "pfctl -a maint -F rules",
            "pfctl -a maint -F Tables"
        ]
    );
    assert_eq!(pf.current().unwrap(), None);
    assert_eq!(
        fake.read("main.conf"),
        MAIN_WITH_ANCHOR,
        "main ruleset untouched"
    );
    assert!(!pf.clear().unwrap(), "second clear finds nothing");
}

#[test]
fn stop_new_redirects_flushes_the_rules_and_leaves_the_states() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    pf.apply(&office_policy()).unwrap();
    fake.write("states", STATES);
    let before = fake.commands().len();
    assert!(pf.stop_new_redirects().unwrap());
    assert_eq!(
        fake.commands()[before..],
        ["pfctl -a maint -s rules", "pfctl -a maint -F rules"]
    );
    assert_eq!(pf.current().unwrap(), None, "nothing redirects any more");
    assert_eq!(fake.read("states"), STATES, "the redirected states live on");
    assert!(!pf.stop_new_redirects().unwrap(), "nothing left to stop");
}

#[test]
fn clear_also_works_when_the_anchor_was_never_called() {
    // `maint off` must work even if someone removed the anchor line since `on`.
    let fake = Fake::new("block return all\n");
    let pf = fake.pf();
    pf.apply(&office_policy()).unwrap();
    assert!(pf.clear().unwrap());
    assert_eq!(pf.current().unwrap(), None);
}

const STATES: &str = "\
-\tall tcp 192.0.2.10:80 <- 198.51.100.7:51234       ESTABLISHED:ESTABLISHED
-\tall tcp 192.0.2.10:22 <- 198.51.100.7:51300       ESTABLISHED:ESTABLISHED
-\tall tcp 192.0.2.10:443 <- 203.0.113.9:40000       ESTABLISHED:ESTABLISHED
maint-redirect\tall tcp 127.0.0.1:8503 (192.0.2.10:80) <- 198.51.100.8:40001       ESTABLISHED:ESTABLISHED
maint-redirect\tall tcp ::1[8504] (2001:db8::10[443]) <- 2001:db8:1::9[40002]       ESTABLISHED:ESTABLISHED
-\tall tcp 2001:db8::10[443] <- 2001:db8:1::5[50000]       ESTABLISHED:ESTABLISHED
-\tall tcp 127.0.0.1:80 <- 127.0.0.1:50123       ESTABLISHED:ESTABLISHED
-\tall tcp 198.51.100.20:40000 -> 192.0.2.99:80       ESTABLISHED:ESTABLISHED
-\tall udp 192.0.2.10:53 <- 198.51.100.7:5353       SINGLE:MULTIPLE
";

#[test]
fn kill_disagreeing_states_kills_only_matched_clients_on_public_ports() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("states", STATES);
    let pf = fake.pf();
    let p = Policy::new(everything(), nets(&["203.0.113.0/24"]), WEB, None);
    assert_eq!(pf.kill_disagreeing_states(&p, &p.ports).unwrap(), 2);
    assert_eq!(
        fake.commands(),
        [
            "pfctl -s states",
            "pfctl -k key -k 'tcp 192.0.2.10:80 <- 198.51.100.7:51234'",
            "pfctl -k key -k 'tcp 2001:db8::10[443] <- 2001:db8:1::5[50000]'"
        ]
    );
    let left = fake.read("states");
    // SSH of a matched client, the excepted client, already redirected clients, the host
    // itself, outbound and UDP states all survive.
    assert_eq!(left.lines().count(), 7, "{left}");
    assert!(left.contains("192.0.2.10:22 <- 198.51.100.7:51300"));
    assert!(left.contains("203.0.113.9:40000"));
    assert!(!left.contains("198.51.100.7:51234"));
}

#[test]
fn off_kills_redirected_states_by_maints_label() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("states", STATES);
    let pf = fake.pf();
    let n = pf
        .kill_disagreeing_states(&Policy::nobody(), &office_policy().ports)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(fake.commands(), ["pfctl -k label -k maint-redirect"]);
    assert!(!fake.read("states").contains("maint-redirect"));
}

#[test]
fn redirected_clients_the_policy_lets_through_are_killed_by_key() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("states", STATES);
    let pf = fake.pf();
    // 198.51.100.8 is excepted now; the IPv6 client (2001:db8:1::9) stays redirected.
    let p = Policy::new(
        nets(&["198.51.100.8/32", "2001:db8:1::9/128"]),
        nets(&["198.51.100.8/32"]),
        WEB,
        None,
    );
    assert_eq!(pf.kill_disagreeing_states(&p, &p.ports).unwrap(), 1);
    assert_eq!(
        fake.commands(),
        [
            "pfctl -s states",
            "pfctl -k key -k 'tcp 192.0.2.10:80 <- 198.51.100.8:40001'",
        ]
    );
    let left = fake.read("states");
    assert!(left.contains("2001:db8:1::9[40002]"), "{left}");
}

#[test]
fn preflight_passes_with_the_anchor_line() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    assert_eq!(fake.pf().preflight().unwrap(), Vec::<String>::new());
    assert_eq!(fake.commands(), ["pfctl -s info", "pfctl -s rules"]);
}

#[test]
fn preflight_warns_about_quick_pass_rules_before_the_anchor() {
    let fake = Fake::new(
        "pass in quick proto tcp from any to any port = 80 flags S/SA\nanchor \"maint\" all\n",
    );
    let warnings = fake.pf().preflight().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("port = 80"), "{warnings:?}");
}

#[test]
fn preflight_without_anchor_line_names_the_line_to_add() {
    let fake = Fake::new("block return all\nanchor \"maint/*\" all\npass out all flags S/SA\n");
    match fake.pf().preflight() {
        Err(BackendError::NotReady { problem, hint }) => {
            assert!(problem.contains("anchor \"maint\""), "{problem}");
            assert!(
                hint.contains("\n      anchor \"maint\"\n"),
                "hint has the exact line: {hint}"
            );
            assert!(hint.contains("pfctl -f /etc/pf.conf"), "{hint}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    // A differently named anchor is looked for under its own name.
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    match fake.pf_named("maint2").preflight() {
        Err(BackendError::NotReady { hint, .. }) => assert!(hint.contains("anchor \"maint2\"")),
        other => panic!("expected NotReady, got {other:?}"),
    }
}

#[test]
fn preflight_with_pf_disabled_hints_pfctl_e() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("enabled", "0\n");
    match fake.pf().preflight() {
        Err(BackendError::NotReady { problem, hint }) => {
            assert!(problem.contains("disabled"), "{problem}");
            assert!(hint.contains("pfctl -e"), "{hint}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert_eq!(fake.commands(), ["pfctl -s info"]);
}

#[test]
fn permission_denied_is_a_permission_error() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("eperm", "");
    let pf = fake.pf();
    assert!(matches!(
        pf.preflight(),
        Err(BackendError::Permission { firewall: "pf" })
    ));
    assert!(matches!(
        pf.apply(&office_policy()),
        Err(BackendError::Permission { .. })
    ));
    assert!(matches!(pf.current(), Err(BackendError::Permission { .. })));
    assert!(matches!(pf.clear(), Err(BackendError::Permission { .. })));
}

#[test]
fn failed_load_leaves_the_previous_policy_in_place() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    let before = office_policy();
    pf.apply(&before).unwrap();
    let files = fake.snapshot();

    fake.write("fail", "-f -");
    let err = pf
        .apply(&Policy::new(
            nets(&["198.51.100.0/24"]),
            [],
            [WEB[0]],
            Some(1),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("pfctl -a maint -f -"),
        "error names the command: {err}"
    );
    assert_eq!(fake.snapshot(), files, "no file of pf's state changed");
    assert_eq!(pf.current().unwrap(), Some(before));
}

#[test]
fn failed_load_with_nothing_in_place_leaves_nothing() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    fake.write("fail", "-f -");
    assert!(pf.apply(&office_policy()).is_err());
    assert_eq!(pf.current().unwrap(), None);
    assert!(!pf.clear().unwrap());
}

#[test]
fn clear_failing_half_way_already_stopped_the_redirect() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    pf.apply(&office_policy()).unwrap();
    fake.write("fail", "-F Tables");
    assert!(pf.clear().is_err());
    // Rules went first, so nothing redirects; the left-over table does nothing on its own
    // (the fake drops it with its rules, as the kernel drops an unreferenced table).
    assert_eq!(pf.current().unwrap(), None);
    assert_eq!(fake.read("anchors/maint/rules"), "");
    // The next `maint off` finishes the job or finds nothing left.
    assert!(pf.clear().is_ok());
    assert_eq!(pf.current().unwrap(), None);
}

#[test]
fn a_rule_maint_did_not_write_is_reported_not_misread() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fs::create_dir_all(fake.dir.join("anchors/maint")).unwrap();
    fake.write(
        "anchors/maint/rules",
        "pass in quick inet proto tcp from any to any port = 25 flags S/SA\n",
    );
    let err = fake.pf().current().unwrap_err();
    assert!(err.to_string().contains("did not write"), "{err}");
}

#[test]
fn missing_pfctl_is_not_ready() {
    match offline("maint").preflight() {
        Err(BackendError::NotReady { problem, .. }) => {
            assert!(problem.contains("pfctl not found"), "{problem}")
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenBSD's grammar over many policies, and tables as large as operators load.

/// `n` /24 networks from 10.0.0.0 upwards, every other one, so that canonical form cannot merge
/// them and each is one table entry.
fn many_v4(n: usize) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + (i << 9)).into(), 24).unwrap())
        })
        .collect()
}

/// `n` /48 networks under 2001:db8::/32, every other one (at most 32,768).
fn many_v6(n: usize) -> Vec<IpNet> {
    (0..n as u128)
        .map(|i| {
            let base: u128 = 0x2001_0db8 << 96;
            IpNet::V6(ipnet::Ipv6Net::new((base + (i << 81)).into(), 48).unwrap())
        })
        .collect()
}

/// Every combination the backend can be handed, round-tripped through the fake pfctl, whose
/// loads go through OpenBSD's own parser and whose `-s rules` is OpenBSD's printing: the text
/// is accepted, and what the backend reads back is the policy it applied.
#[test]
fn every_generated_policy_is_accepted_by_openbsd_and_reads_back() {
    let sources: Vec<(&str, Vec<IpNet>)> = vec![
        ("none", vec![]),
        ("one v4", nets(&["198.51.100.0/24"])),
        ("one v6", nets(&["2001:db8:5::/48"])),
        ("all", everything()),
        ("two v4", nets(&["198.51.100.0/24", "203.0.113.0/24"])),
        ("v4 and v6", nets(&["198.51.100.0/24", "2001:db8:5::/48"])),
        ("3000 v4", many_v4(3000)),
        ("2000 v4 + 2000 v6", [many_v4(2000), many_v6(2000)].concat()),
    ];
    // Exceptions lie inside sources (a wholly excepted source reads back differently; that
    // has its own test), or outside every source, which pf keeps as a harmless entry.
    let exceptions: Vec<(&str, Vec<IpNet>)> = vec![
        ("no exceptions", vec![]),
        (
            "exceptions",
            nets(&["198.51.100.7/32", "10.0.0.128/25", "2001:db8:5::1/128"]),
        ),
        ("outside", nets(&["192.0.2.0/24", "2001:db8:ffff::/48"])),
    ];
    let port_sets: [&[PortMap]; 3] = [
        &WEB[..1],
        &WEB,
        &[
            WEB[0],
            WEB[1],
            PortMap {
                public: 8080,
                server: 8505,
            },
            PortMap {
                public: 8443,
                server: 8506,
            },
        ],
    ];
    let anchors = ["maint", "web/maint", "a/b/maint-2", &"m".repeat(40)];
    let mut checked = 0;
    for (s_name, src) in &sources {
        for (e_name, exc) in &exceptions {
            let i = checked;
            let ports = port_sets[i % port_sets.len()];
            let until = (i % 2 == 1).then_some(1_767_225_600 + i as u64);
            let anchor = anchors[i % anchors.len()];
            let p = Policy::new(src.clone(), exc.clone(), ports.iter().copied(), until);
            let what = format!(
                "{s_name}, {e_name}, {} ports, until {until:?}, anchor {anchor}",
                ports.len()
            );

            let fake = Fake::new(&format!("anchor \"{anchor}\" all\n"));
            let pf = fake.pf_named(anchor);
            if let Err(e) = pf.apply(&p) {
                panic!("{what}: OpenBSD refused the anchor: {e}");
            }
            assert_eq!(pf.current().unwrap().as_ref(), Some(&p), "{what}");
            checked += 1;
        }
    }
    assert_eq!(checked, sources.len() * exceptions.len());
}

#[test]
fn the_dry_run_of_the_issue_is_accepted_by_openbsd() {
    // `maint on --dry-run 198.51.100.0/24 2001:db8:5::/48 --except 198.51.100.7`, which
    // OpenBSD once refused with `stdin:2: syntax error`.
    let p = Policy::new(
        nets(&["198.51.100.0/24", "2001:db8:5::/48"]),
        nets(&["198.51.100.7/32"]),
        WEB,
        None,
    );
    let printed = rendered("maint", &p);
    assert!(
        printed.contains(
            "table <maint_src> {\n\t198.51.100.0/24\n\t2001:db8:5::/48\n\t!198.51.100.7/32\n}"
        ),
        "{printed}"
    );
}

#[test]
fn a_100k_source_policy_is_one_anchor_openbsd_accepts() {
    let p = Policy::new(many_v4(100_000), nets(&["10.0.0.7/32"]), WEB, None);
    let text = offline("maint").render_apply(&p);
    let started = std::time::Instant::now();
    let verdict = pfparse::parse(Some("maint"), &text);
    let took = started.elapsed();
    assert!(verdict.accepted, "{}", verdict.said);
    let table = verdict
        .printed
        .lines()
        .find(|l| l.starts_with("table <maint_src>"))
        .expect("OpenBSD printed the table");
    // 100,000 sources and one exception, each read by OpenBSD as one entry.
    assert_eq!(table.split_whitespace().count() - 4, 100_001);
    println!(
        "OpenBSD's parser read the 100,000-source anchor ({} KB) in {:.2} s",
        text.len() / 1024,
        took.as_secs_f64()
    );

    // Through the fake pfctl, under pf's default limit of 200,000 entries in all tables: the
    // first load fits, and so does a replace (old and new held at once: 200,002 > 200,000
    // would not, so the replace takes one entry less).
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    pf.apply(&p).unwrap();
    let smaller = Policy::new(many_v4(99_998), [], WEB, None);
    pf.apply(&smaller).unwrap();
    assert_eq!(pf.current().unwrap().map(|c| c.sources.len()), Some(99_998));
}

#[test]
fn a_table_over_pfs_limit_is_refused_before_loading_with_the_line_to_add() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    fake.write("limits", "table-entries 1000\n");
    let pf = fake.pf();
    let err = pf
        .apply(&Policy::new(many_v4(1500), [], WEB, None))
        .unwrap_err();
    let BackendError::NotReady { problem, hint } = &err else {
        panic!("not a NotReady error: {err}");
    };
    assert!(
        problem.contains("1500 pf table entries") && problem.contains("1000"),
        "{problem}"
    );
    assert!(hint.contains("set limit table-entries 200000"), "{hint}");
    assert_eq!(fake.commands(), ["pfctl -s memory"], "nothing was loaded");

    // A policy under the limit that does not fit beside the old one during the replace:
    // pfctl's ENOMEM comes back as the same advice, and the old policy stays.
    let old = Policy::new(many_v4(600), [], WEB, None);
    pf.apply(&old).unwrap();
    let err = pf
        .apply(&Policy::new(many_v4(700), [], WEB, None))
        .unwrap_err();
    let BackendError::NotReady { problem, hint } = &err else {
        panic!("not a NotReady error: {err}");
    };
    assert!(problem.contains("Cannot allocate memory"), "{problem}");
    assert!(hint.contains("set limit table-entries"), "{hint}");
    assert_eq!(pf.current().unwrap(), Some(old));
}

#[test]
fn admissions_go_into_the_pass_table_and_out_again() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let pf = fake.pf();
    let admission = Admission {
        net: "198.51.100.8/32".parse().unwrap(),
        until: Some(4_000_000_000),
    };
    // Nothing in place: an admission has nowhere to go.
    assert!(pf.admit(&admission).is_err());
    pf.apply(&office_policy()).unwrap();
    fake.reset_log();
    pf.admit(&admission).unwrap();
    pf.admit(&Admission {
        net: "2001:db8:1::/64".parse().unwrap(),
        until: None,
    })
    .unwrap();
    assert_eq!(
        fake.commands(),
        [
            "pfctl -a maint -s rules",
            "pfctl -a maint -t maint_pass -T add 198.51.100.8/32",
            "pfctl -a maint -s rules",
            "pfctl -a maint -t maint_pass -T add 2001:db8:1::/64",
        ]
    );
    assert_eq!(
        fake.read("anchors/maint/tables/maint_pass"),
        "# persist\n198.51.100.8\n2001:db8:1::/64\n"
    );
    // The policy reads back without them, the `match` rule skipped.
    assert_eq!(pf.current().unwrap(), Some(office_policy()));
    assert!(!pf.admissions_expire_by_itself());

    pf.withdraw(&[admission.net, "2001:db8:1::/64".parse().unwrap()])
        .unwrap();
    assert_eq!(fake.read("anchors/maint/tables/maint_pass"), "# persist\n");
    // A reload of the anchor (a changed policy) empties the table: the keeper admits again.
    pf.admit(&admission).unwrap();
    pf.apply(&office_policy()).unwrap();
    assert_eq!(fake.read("anchors/maint/tables/maint_pass"), "# persist\n");
}

#[test]
fn the_redirected_states_of_a_passed_client_go_but_the_asking_one_stays() {
    let fake = Fake::new(MAIN_WITH_ANCHOR);
    let extra = format!(
        "{STATES}maint-redirect\tall tcp 127.0.0.1:8503 (192.0.2.10:80) <- 198.51.100.8:40009       ESTABLISHED:ESTABLISHED\n"
    );
    fake.write("states", &extra);
    let pf = fake.pf();
    let spare = "198.51.100.8:40009".parse().unwrap();
    let killed = pf
        .kill_redirected_states_of("198.51.100.8/32".parse().unwrap(), &WEB, Some(spare))
        .unwrap();
    assert_eq!(killed, 1);
    assert_eq!(
        fake.commands(),
        [
            "pfctl -s states",
            "pfctl -k key -k 'tcp 192.0.2.10:80 <- 198.51.100.8:40001'",
        ]
    );
    let left = fake.read("states");
    assert!(left.contains("198.51.100.8:40009"), "{left}");
    // Its connection to SSH and other clients' states are not its redirected states.
    assert!(left.contains("198.51.100.7:51300"), "{left}");
    assert!(left.contains("2001:db8:1::9[40002]"), "{left}");
}
