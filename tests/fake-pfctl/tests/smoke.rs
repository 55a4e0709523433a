//! The fake speaks pfctl's output formats. Besides checking that, this test is what makes
//! `cargo test --workspace` build the fake's binary, which maint-backends' pf tests run.

use std::io::Write;
use std::process::{Command, Stdio};

fn pfctl(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-pfctl"))
        .env("FAKE_PFCTL_DIR", dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// An empty state directory for the fake, unique to this test process.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loads_an_anchor_and_prints_it_like_pfctl() {
    let dir = fresh_dir("fake-pfctl-smoke");

    // A comma at the end of a table line is what OpenBSD's grammar refuses (parse.y's
    // table_host_list); the fake refuses it because OpenBSD's own parser does, with pfctl's
    // words and exit status, and loads nothing.
    let commas = "table <t> {\n\t192.0.2.0/24,\n\t2001:db8::1/128\n}\n\
                  pass in quick inet proto tcp from <t> to any port 80 rdr-to 127.0.0.1 port 8503\n";
    let refused = pfctl(&dir, &["-a", "a", "-f", "-"], Some(commas));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "stdin:2: syntax error\npfctl: Syntax error in config file: pf rules not loaded\n"
    );
    assert!(!dir.join("anchors/a/rules").exists());

    let text = "# comment\ntable <t> {\n\t192.0.2.0/24\n\t!192.0.2.128/25\n\t2001:db8::1/128\n}\n\
                pass in quick inet proto tcp from <t> to any port 80 rdr-to 127.0.0.1 port 8503 label \"l\"\n";
    let out = pfctl(&dir, &["-a", "a", "-f", "-"], Some(text));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = pfctl(&dir, &["-a", "a", "-sr"], None);
    assert_eq!(
        String::from_utf8_lossy(&rules.stdout),
        "pass in quick inet proto tcp from <t> to any port = 80 flags S/SA label \"l\" rdr-to 127.0.0.1 port 8503\n"
    );
    let show = pfctl(&dir, &["-a", "a", "-t", "t", "-T", "show"], None);
    assert_eq!(
        String::from_utf8_lossy(&show.stdout),
        "   192.0.2.0/24\n  !192.0.2.128/25\n   2001:db8::1\n"
    );

    // A syntax error loads nothing and says so as pfctl does.
    let bad = pfctl(&dir, &["-a", "a", "-f", "-"], Some("pass in bogus\n"));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pf rules not loaded"));
    let again = pfctl(&dir, &["-a", "a", "-sr"], None);
    assert_eq!(again.stdout, rules.stdout);

    let missing = pfctl(&dir, &["-a", "a", "-t", "nope", "-T", "show"], None);
    assert_eq!(missing.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "pfctl: Table does not exist\n"
    );

    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(
        log.contains("$ pfctl -a a -f -\n< # comment\n< table '<t>' {\n")
            || log.contains("$ pfctl -a a -f -\n< # comment\n< table <t> {\n"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loads_the_shipped_pf_conf_as_the_main_ruleset() {
    let dir = fresh_dir("fake-pfctl-main");
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/pf.conf");
    let out = pfctl(&dir, &["-f", conf], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = pfctl(&dir, &["-s", "rules"], None);
    let rules = String::from_utf8_lossy(&rules.stdout);
    // As OpenBSD prints it: `set` and `table` lines are not rules.
    assert!(rules.starts_with("block return all\n"), "{rules}");
    assert!(rules.contains("\nanchor \"maint\" all\n"), "{rules}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reports_limits_and_refuses_a_table_over_table_entries() {
    let dir = fresh_dir("fake-pfctl-limit");
    let memory = pfctl(&dir, &["-s", "memory"], None);
    assert!(
        String::from_utf8_lossy(&memory.stdout).contains("table-entries hard limit   200000\n"),
        "{}",
        String::from_utf8_lossy(&memory.stdout)
    );
    std::fs::write(dir.join("limits"), "table-entries 2\n").unwrap();
    let text = "table <t> {\n\t192.0.2.1\n\t192.0.2.2\n\t192.0.2.3\n}\n\
                pass in quick inet proto tcp from <t> to any port 80 rdr-to 127.0.0.1 port 8503\n";
    let out = pfctl(&dir, &["-a", "a", "-f", "-"], Some(text));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("stdin:5: cannot define table t: Cannot allocate memory\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
