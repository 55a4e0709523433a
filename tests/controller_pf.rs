//! The real `maint` controller driving the pf backend against the fake pfctl
//! (tests/fake-pfctl), checking the exact pfctl command sequences an OpenBSD host would see.
//! The fake keeps pf's state in a directory; each test runs maint in a network namespace of
//! its own (root needed), where the maintenance server `on` starts listens on loopback on the
//! privileged ports maint insists on.

mod support;

use std::path::PathBuf;
use std::process::Output;

use maint_testkit::netns::Netns;
use maint_testkit::root::have_root;
use support::{stderr, stdout};

const MAIN_RULES: &str = "pass out all flags S/SA\nanchor \"maint\" all\npass in proto tcp from any to any port = 80 flags S/SA\n";

struct Pf {
    dir: tempfile::TempDir,
    config: PathBuf,
    ns: Netns,
}

impl Pf {
    /// A pf host for this test, or `None` (the test is skipped) without root outside CI.
    fn new(main_rules: &str) -> Option<Pf> {
        let test = std::thread::current()
            .name()
            .unwrap_or("controller_pf")
            .to_owned();
        if !have_root(&test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // The fake keeps its state next to the path it was started by.
        std::os::unix::fs::symlink(maint_testkit::bins::fake_pfctl(), dir.path().join("pfctl"))
            .unwrap();
        std::fs::write(dir.path().join("main.conf"), main_rules).unwrap();
        let config = dir.path().join("maint.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1\"]\n# The keeper would poll pfctl every second, between the calls these tests count.\nkeep = false\n\n[firewall]\nbackend = \"pf\"\npfctl = \"{}\"\n\n[aliases]\noffice = [\"203.0.113.0/24\", \"2001:db8:113::/48\"]\n\n[paths]\nstate_dir = \"{state}\"\nruntime_dir = \"{state}\"\n",
                dir.path().join("pfctl").display(),
                state = dir.path().join("state").display()
            ),
        )
        .unwrap();
        let ns = Netns::new("pf");
        Some(Pf { dir, config, ns })
    }

    /// `maint --config CONFIG ARGS...` inside the test's namespace.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.ns.command(&[support::maint_bin(), "--config"]);
        cmd.arg(&self.config).args(args);
        cmd
    }

    fn maint(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.maint(&all);
        assert!(out.status.success(), "maint {args:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    /// The pfctl invocations since the last call, one line each.
    fn calls(&self) -> Vec<String> {
        let path = self.dir.path().join("log");
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, "").unwrap();
        log.lines()
            .filter_map(|l| l.strip_prefix("$ "))
            .map(str::to_string)
            .collect()
    }

    fn anchor_rules(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("anchors/maint/rules")).unwrap_or_default()
    }
}

impl Drop for Pf {
    fn drop(&mut self) {
        // Stop a server `on` may have left if a test failed half-way.
        let _ = self.maint(&["off"]);
    }
}

#[test]
fn on_again_and_off_issue_the_expected_pfctl_sequence() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    let on = pf.json(&["on", "--except", "office"]);
    assert_eq!(on["changed"], true);
    assert_eq!(on["backend"], "pf");
    assert_eq!(
        pf.calls(),
        [
            "pfctl -s info",           // preflight: pf enabled?
            "pfctl -s rules",          // preflight: `anchor "maint"` in the main ruleset?
            "pfctl -a maint -s rules", // current: nothing yet
            "pfctl -s memory",         // room for the table under pf's table-entries limit?
            "pfctl -a maint -f -",     // apply: rules and table in one transaction
            "pfctl -s states",         // kill states of matched clients still on the app
        ]
    );
    let rules = pf.anchor_rules();
    assert!(rules.contains("rdr-to 127.0.0.1 port"), "{rules}");

    let again = pf.json(&["on", "--except", "office"]);
    assert_eq!(again["changed"], false, "{again}");
    let calls = pf.calls();
    assert!(
        !calls.iter().any(|c| c.contains("-f -")),
        "no reload when nothing changed: {calls:?}"
    );

    let off = pf.json(&["off"]);
    assert_eq!(off["changed"], true);
    let calls = pf.calls();
    // The rules go first (new connections reach the app; the redirected ones keep their
    // translation while the server answers them), then whatever is left, then the states.
    // pf destroys a table without the persist flag with the last rule that used it; the
    // pass table is `persist`, so it is still there and goes with `-F Tables`.
    assert_eq!(
        calls,
        [
            "pfctl -a maint -s rules",
            "pfctl -a maint -t maint_src -T show",
            "pfctl -a maint -s rules",
            "pfctl -a maint -F rules",
            "pfctl -a maint -s rules",
            "pfctl -a maint -s Tables",
            "pfctl -a maint -F rules",
            "pfctl -a maint -F Tables",
            "pfctl -k label -k maint-redirect"
        ],
        "{calls:?}"
    );
    assert!(pf.anchor_rules().trim().is_empty());
    // Nothing outside maint's anchor was touched.
    assert_eq!(
        std::fs::read_to_string(pf.dir.path().join("main.conf")).unwrap(),
        MAIN_RULES
    );
}

#[test]
fn every_change_kills_exactly_the_states_that_disagree_with_it() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    // One matched client on the app, one excepted (office) client, one SSH session.
    std::fs::write(
        pf.dir.path().join("states"),
        "www-normal\tall tcp 192.0.2.1:80 <- 198.51.100.7:51000       ESTABLISHED:ESTABLISHED\n\
         www-normal\tall tcp 192.0.2.1:80 <- 203.0.113.9:52000       ESTABLISHED:ESTABLISHED\n\
         -\tall tcp 192.0.2.1:22 <- 198.51.100.7:40000       ESTABLISHED:ESTABLISHED\n",
    )
    .unwrap();
    let on = pf.json(&["on", "--except", "office"]);
    assert_eq!(on["states_killed"], 1, "{on}");
    let calls = pf.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("pfctl -k key -k") && c.contains("198.51.100.7:51000")),
        "{calls:?}"
    );
    let left = std::fs::read_to_string(pf.dir.path().join("states")).unwrap();
    assert!(
        left.contains("203.0.113.9:52000") && left.contains(":22 <- 198.51.100.7"),
        "office and SSH stay: {left}"
    );

    // Two clients now on the page; one of them is excepted next: only its state goes.
    std::fs::write(
        pf.dir.path().join("states"),
        format!(
            "{left}maint-redirect\tall tcp 127.0.0.1:503 (192.0.2.1:80) <- 198.51.100.7:51001       ESTABLISHED:ESTABLISHED\n\
             maint-redirect\tall tcp 127.0.0.1:503 (192.0.2.1:80) <- 198.51.100.8:51002       ESTABLISHED:ESTABLISHED\n"
        ),
    )
    .unwrap();
    let on = pf.json(&["on", "--except", "office,198.51.100.8"]);
    assert_eq!(on["states_killed"], 1, "{on}");
    let calls = pf.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("pfctl -k key -k")
            && c.contains("192.0.2.1:80 <- 198.51.100.8:51002")),
        "killed by its wire key: {calls:?}"
    );
    let left = std::fs::read_to_string(pf.dir.path().join("states")).unwrap();
    assert!(
        left.contains("198.51.100.7:51001") && !left.contains("198.51.100.8:51002"),
        "{left}"
    );
    // `off`: every redirected client goes back, by maint's label; nothing else is touched.
    let off = pf.json(&["off"]);
    assert_eq!(off["states_killed"], 1, "{off}");
    let left = std::fs::read_to_string(pf.dir.path().join("states")).unwrap();
    assert!(!left.contains("maint-redirect"), "{left}");
    assert!(left.contains("203.0.113.9:52000"), "{left}");
}

#[test]
fn missing_anchor_line_is_refused_with_the_line_to_add() {
    let Some(pf) = Pf::new(
        "pass out all flags S/SA\npass in proto tcp from any to any port = 80 flags S/SA\n",
    ) else {
        return;
    };
    let out = pf.maint(&["on"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("anchor \"maint\"") && err.contains("/etc/pf.conf"),
        "{err}"
    );
    assert!(
        !pf.calls().iter().any(|c| c.contains("-f -")),
        "nothing loaded"
    );

    let check = pf.maint(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stdout(&check).contains("anchor \"maint\""),
        "{}",
        stdout(&check)
    );
}

#[test]
fn disabled_pf_is_a_clear_error() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    std::fs::write(pf.dir.path().join("enabled"), "0").unwrap();
    let out = pf.maint(&["on"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pfctl -e"), "{}", stderr(&out));
}

#[test]
fn pfctl_failure_half_way_leaves_the_previous_state() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    pf.json(&["on", "198.51.100.0/24"]);
    let before = pf.anchor_rules();
    let table_before =
        std::fs::read_to_string(pf.dir.path().join("anchors/maint/tables/maint_src")).unwrap();
    pf.calls();
    // The load of the new anchor fails inside pfctl.
    std::fs::write(pf.dir.path().join("fail"), "-a maint -f -").unwrap();
    let out = pf.maint(&["on", "--except", "office"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pfctl"), "{}", stderr(&out));
    assert_eq!(pf.anchor_rules(), before, "rules unchanged");
    assert_eq!(
        std::fs::read_to_string(pf.dir.path().join("anchors/maint/tables/maint_src")).unwrap(),
        table_before,
        "table unchanged"
    );
    let status = pf.json(&["status"]);
    assert_eq!(status["active"], true);
    assert_eq!(
        status["drift"],
        serde_json::json!([]),
        "record still matches the kernel: {status}"
    );
    assert_eq!(status["sources"], serde_json::json!(["198.51.100.0/24"]));
}

#[test]
fn windows_on_pf_are_closed_by_a_scheduled_off() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    let on = pf.json(&["on", "--for", "2s"]);
    assert!(on["until"].is_string());
    assert!(!pf.anchor_rules().trim().is_empty());
    // pf cannot expire rules; the `maint off --scheduled` that `on` left behind must.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pf.anchor_rules().trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "window not closed: {}",
            pf.anchor_rules()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(pf.json(&["status"])["active"], false);
}

#[test]
fn dry_run_prints_the_anchor_and_runs_no_pfctl_write() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    let out = pf.maint(&["on", "--except", "office", "--dry-run"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("table <maint_src>") && text.contains("!203.0.113.0/24"),
        "{text}"
    );
    assert!(pf
        .calls()
        .iter()
        .all(|c| !c.contains("-f") && !c.contains("-k") && !c.contains("-F")));
}

#[test]
fn the_shipped_pf_conf_and_the_issues_dry_run_are_accepted_by_openbsd() {
    let Some(pf) = Pf::new("") else {
        return;
    };
    // The main ruleset is conf/pf.conf, loaded as `pfctl -f /etc/pf.conf` loads it: through
    // OpenBSD's own parser, kept as OpenBSD prints it back.
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/pf.conf");
    let load = std::process::Command::new(pf.dir.path().join("pfctl"))
        .args(["-f", conf])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", stderr(&load));

    let args = [
        "on",
        "198.51.100.0/24",
        "2001:db8:5::/48",
        "--except",
        "198.51.100.7",
    ];
    let dry = pf.maint(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    maint_testkit::pfparse::assert_accepts("maint", &stdout(&dry));

    let on = pf.json(&args);
    assert_eq!(on["changed"], true, "{on}");
    let status = pf.json(&["status"]);
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");
    assert_eq!(
        status["sources"],
        serde_json::json!(["198.51.100.0/24", "2001:db8:5::/48"])
    );
}

#[test]
fn a_policy_over_pfs_table_limit_is_refused_with_the_pf_conf_line() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    std::fs::write(pf.dir.path().join("limits"), "table-entries 1\n").unwrap();
    let out = pf.maint(&["on", "198.51.100.0/24", "203.0.113.0/24"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set limit table-entries"),
        "{}",
        stderr(&out)
    );
    assert!(
        !pf.calls().iter().any(|c| c.contains("-f -")),
        "nothing loaded"
    );
}

// ---------------------------------------------------------------------------------------------
// A failed command changes nothing; a server maint started is never orphaned.

impl Pf {
    fn server_window(&self) -> serde_json::Value {
        support::control(
            &self.dir.path().join("state/control.sock"),
            r#"{"op":"status"}"#,
        )["status"]["window"]
            .clone()
    }

    fn server_answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.dir.path().join("state/control.sock")).is_ok()
    }
}

#[test]
fn a_failed_on_leaves_the_page_as_it_was() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    pf.json(&["on", "--reason", "OLD"]);
    assert_eq!(pf.server_window()["reason"], "OLD");
    // A window beyond what maint can hold is bad input: exit 2, and the page keeps its reason.
    let out = pf.maint(&["on", "--for", "600y", "--reason", "NEW"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = pf.maint(&["on", "--for", "292271023045y", "--reason", "NEW"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A firewall that refuses the load: exit 1, and the page still says what is in force.
    std::fs::write(pf.dir.path().join("fail"), "-a maint -f -").unwrap();
    let out = pf.maint(&["on", "--for", "1h", "--reason", "NEW"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let window = pf.server_window();
    assert_eq!(window["reason"], "OLD", "{window}");
    assert_eq!(window["until"], serde_json::Value::Null, "{window}");
}

#[test]
fn a_server_started_by_a_failed_on_is_stopped_again() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    std::fs::write(pf.dir.path().join("fail"), "-a maint -f -").unwrap();
    let out = pf.maint(&["on"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !pf.server_answers(),
        "the server `on` started is left running"
    );
    // The next `on` starts a server of its own on the same port and succeeds.
    std::fs::remove_file(pf.dir.path().join("fail")).unwrap();
    let on = pf.json(&["on"]);
    assert!(on["server_started"].is_number(), "{on}");
}

#[test]
fn off_stops_a_background_server_even_without_a_record() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    pf.json(&["on"]);
    assert!(pf.server_answers());
    // The record is lost (an `on` killed before writing it, or removed by hand).
    std::fs::remove_file(pf.dir.path().join("state/maintenance.json")).unwrap();
    let off = pf.json(&["off"]);
    assert!(off["server_stopped"].is_number(), "{off}");
    assert!(!pf.server_answers());
}

#[test]
fn an_anchor_renamed_in_the_config_is_removed_by_the_next_on() {
    let Some(pf) = Pf::new("pass out all flags S/SA\nanchor \"maint\" all\nanchor \"site\" all\n")
    else {
        return;
    };
    pf.json(&["on"]);
    assert!(!pf.anchor_rules().is_empty());
    let config = std::fs::read_to_string(&pf.config).unwrap();
    std::fs::write(
        &pf.config,
        config.replace("[firewall]\n", "[firewall]\ntable = \"site\"\n"),
    )
    .unwrap();
    let on = pf.json(&["on"]);
    assert_eq!(on["changed"], true);
    assert_eq!(
        pf.anchor_rules(),
        "",
        "the old anchor \"maint\" was emptied"
    );
    let site =
        std::fs::read_to_string(pf.dir.path().join("anchors/site/rules")).unwrap_or_default();
    assert!(site.contains("rdr-to"), "{site}");
    pf.json(&["off"]);
}

#[test]
fn an_unwritable_record_is_refused_before_the_firewall_changes() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    std::fs::create_dir_all(pf.dir.path().join("state/maintenance.json")).unwrap();
    let out = pf.maint(&["on"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("maintenance.json"),
        "{}",
        stderr(&out)
    );
    assert!(
        !pf.calls().iter().any(|c| c.contains("-f -")),
        "nothing loaded"
    );
    assert!(!pf.server_answers(), "no server left behind");
}

#[test]
fn status_waits_for_an_on_under_way_instead_of_reporting_drift() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    // The load takes a second, as a large table does.
    std::fs::write(pf.dir.path().join("delay"), "-a maint -f - 1").unwrap();
    let on = pf
        .command(&["on"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until `on` is inside the load, then ask.
    support::wait_until(std::time::Duration::from_secs(10), "on loading", || {
        std::fs::read_to_string(pf.dir.path().join("log"))
            .unwrap_or_default()
            .contains("-a maint -f -")
    });
    let status = pf.json(&["status"]);
    assert_eq!(status["active"], true, "{status}");
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");
    let out = on.wait_with_output().unwrap();
    assert!(out.status.success());
}

// ---------------------------------------------------------------------------------------------
// What scripts (cron, Ansible) rely on: quiet output, honest `changed`, a before and an after.

#[test]
fn quiet_prints_nothing_unless_something_fails() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    // `on` starts a server and warns (no certificate for 443): all of it silenced.
    for args in [
        &["-q", "on", "--for", "1h"][..],
        &["-q", "on"],
        &["-q", "off"],
    ] {
        let out = pf.maint(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(
            (stdout(&out).as_str(), stderr(&out).as_str()),
            ("", ""),
            "{args:?}"
        );
    }
    // An error still speaks.
    let out = pf.maint(&["-q", "on", "198.51.100.300"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("198.51.100.300"), "{}", stderr(&out));
    // -q --json: the object a script asked for, and no warnings.
    let out = pf.maint(&["-q", "--json", "on"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["changed"], true);
    pf.json(&["off"]);
}

#[test]
fn a_dry_run_reports_before_and_after_and_changes_nothing() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    let dry = pf.json(&[
        "on",
        "--except",
        "office",
        "--reason",
        "Upgrade",
        "--dry-run",
    ]);
    assert_eq!(dry["changed"], false, "{dry}");
    assert_eq!(dry["before"]["active"], false, "{dry}");
    assert_eq!(
        dry["after"],
        serde_json::json!({"active": true, "sources": ["all"], "exceptions": ["office"],
                           "until": null, "reason": "Upgrade"}),
        "{dry}"
    );
    assert!(pf.anchor_rules().is_empty(), "nothing loaded");
    pf.json(&["on", "--except", "office", "--reason", "Upgrade"]);
    let dry = pf.json(&["on", "198.51.100.0/24", "--dry-run"]);
    assert_eq!(dry["before"]["active"], true, "{dry}");
    assert_eq!(dry["before"]["exceptions"], serde_json::json!(["office"]));
    assert_eq!(
        dry["after"]["sources"],
        serde_json::json!(["198.51.100.0/24"])
    );
    let dry_off = pf.json(&["off", "--dry-run"]);
    assert_eq!(dry_off["before"]["reason"], "Upgrade", "{dry_off}");
    assert_eq!(dry_off["after"]["active"], false, "{dry_off}");
    let off = pf.json(&["off"]);
    assert_eq!(off["before"]["active"], true, "{off}");
    assert_eq!(off["after"]["active"], false, "{off}");
}

#[test]
fn a_background_server_that_dies_is_started_again_and_on_repairs_what_nothing_restarted() {
    let Some(pf) = Pf::new(MAIN_RULES) else {
        return;
    };
    let on = pf.json(&["on"]);
    let pid = on["server_started"].as_u64().unwrap() as i32;
    let server_pid = || {
        std::panic::catch_unwind(|| {
            support::control(
                &pf.dir.path().join("state/control.sock"),
                r#"{"op":"status"}"#,
            )["status"]["pid"]
                .as_i64()
        })
        .ok()
        .flatten()
    };

    // Killed outright: its keeper starts it again, so visitors are refused only meanwhile.
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    support::wait_until(std::time::Duration::from_secs(10), "a new server", || {
        server_pid().is_some_and(|p| p != i64::from(pid))
    });
    println!(
        "background server killed with SIGKILL: answering again after {:?}",
        killed.elapsed()
    );
    let status = pf.maint(&["--json", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    let again = pf.json(&["on"]);
    assert_eq!(again["changed"], false, "{again}");

    // The server and its keeper killed together (the whole process group): nothing starts
    // it again, `status` says so with its drift code, and the next `on` repairs it.
    let pid = server_pid().unwrap() as i32;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    support::wait_until(std::time::Duration::from_secs(5), "server gone", || {
        !pf.server_answers()
    });
    let status = pf.maint(&["--json", "status"]);
    assert_eq!(status.status.code(), Some(4), "{}", stdout(&status));
    assert!(
        stdout(&status).contains("not running"),
        "{}",
        stdout(&status)
    );
    let again = pf.json(&["on"]);
    assert_eq!(again["changed"], true, "{again}");
    assert!(again["server_started"].is_number(), "{again}");
    let third = pf.json(&["on"]);
    assert_eq!(third["changed"], false, "{third}");
    pf.json(&["off"]);
}
