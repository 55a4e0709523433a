//! The command line as a user meets it: help with examples, manual pages for every command,
//! and a closed pipe ending a command quietly. No root and no kernel needed.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};

use support::{maint_bin, stderr, stdout};

fn maint(args: &[&str]) -> std::process::Output {
    Command::new(maint_bin()).args(args).output().unwrap()
}

#[test]
fn on_and_off_help_teach_with_examples_and_keep_global_options_apart() {
    for (cmd, example) in [
        ("on", "maint on --except office"),
        ("off", "maint off --dry-run"),
        ("status", "maint --json status"),
    ] {
        let out = maint(&[cmd, "--help"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        assert!(help.contains(example), "{cmd}: {help}");
        let global = help
            .find("Global options:")
            .expect("a global options heading");
        assert!(help[global..].contains("--config"), "{cmd}: {help}");
        // The command's own options come first, apart from the global ones.
        if cmd != "status" {
            assert!(help.find("--dry-run").unwrap() < global, "{cmd}: {help}");
        }
    }
}

#[test]
fn man_writes_a_page_per_command_with_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = maint(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "maint-check.1",
            "maint-completions.1",
            "maint-man.1",
            "maint-off.1",
            "maint-on.1",
            "maint-pass-list.1",
            "maint-pass-new.1",
            "maint-pass-revoke.1",
            "maint-pass.1",
            "maint-serve.1",
            "maint-status.1",
            "maint.1"
        ]
    );
    let on = std::fs::read_to_string(dir.path().join("maint-on.1")).unwrap();
    for option in ["except", "for", "until", "reason", "dry\\-run", "force"] {
        assert!(on.contains(&format!("\\-\\-{option}")), "{option}: {on}");
    }
    assert!(
        on.contains("maint on \\-\\-except office"),
        "examples: {on}"
    );
    let pass_new = std::fs::read_to_string(dir.path().join("maint-pass-new.1")).unwrap();
    for option in ["for", "note"] {
        assert!(
            pass_new.contains(&format!("\\-\\-{option}")),
            "{option}: {pass_new}"
        );
    }
    assert!(on.contains("\\-\\-drain"), "{on}");
    // The top page names the command pages that now exist.
    let top = std::fs::read_to_string(dir.path().join("maint.1")).unwrap();
    assert!(top.contains("maint\\-on(1)"), "{top}");
    // `maint man on` prints the same page as the file.
    assert_eq!(stdout(&maint(&["man", "on"])), on);
    let bad = maint(&["man", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("pages exist for: on, off"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn man_and_completions_do_not_offer_options_they_ignore() {
    let man_help = stdout(&maint(&["man", "--help"]));
    assert!(!man_help.contains("--config"), "{man_help}");
    assert!(!man_help.contains("--json"), "{man_help}");
    let page = stdout(&maint(&["man", "man"]));
    assert!(!page.contains("\\-\\-json"), "{page}");
    // The bash completions complete --config for `on`, but not for `completions` itself.
    let bash = stdout(&maint(&["completions", "bash"]));
    let section = bash
        .split("maint__subcmd__completions)")
        .nth(1)
        .expect("a case for `maint completions`");
    let section = &section[..section.find(";;").unwrap()];
    assert!(!section.contains("--config"), "{section}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let mut child = Command::new(maint_bin())
        .args(["man"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe as `| head -c1` does.
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(!out.status.success() || out.status.code() == Some(0));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.code() == Some(0) || out.status.signal() == Some(13),
        "ended by SIGPIPE or after writing everything, not by an error: {:?}",
        out.status
    );
}

#[test]
fn under_json_every_usage_error_is_one_json_object_on_stdout() {
    for args in [
        &["--json", "on", "--for", "1h", "--until", "2030-01-01T00:00"][..],
        &["on", "--json", "--no-such-option"],
        &["--json", "nonsense"],
        &["--json", "off", "--scheduled"],
    ] {
        let out = maint(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON object ({e}): {out:?}"));
        assert_eq!(v["changed"], false, "{args:?}: {v}");
        assert_eq!(v["exit"], 2, "{args:?}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(!error.is_empty() && !error.starts_with("error:"), "{v}");
        // The human message still goes to stderr.
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let conflict = stdout(&maint(&[
        "--json",
        "on",
        "--for",
        "1h",
        "--until",
        "2030-01-01",
    ]));
    assert!(
        conflict.contains("--for") && conflict.contains("--until"),
        "names both options: {conflict}"
    );
    // Help and version are not errors: no JSON, exit 0.
    let help = maint(&["--json", "on", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Usage:"));
    // After `--`, `--json` is a source, not the option.
    let out = maint(&["on", "--no-such-option", "--", "--json"]);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}
