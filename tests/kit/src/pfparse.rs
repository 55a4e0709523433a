//! OpenBSD's own pf grammar, through `shared/pfparse` (OpenBSD's pfctl built on Linux for
//! parse-only use; see its README). A text it accepts is a text `pfctl -f` on OpenBSD accepts.
//!
//! Located at `$PFPARSE`, else at `shared/pfparse/pfparse` beside the checkout (where CI and
//! the development machines have it). A test that needs it and cannot find it fails: it never
//! skips, because skipping is how a grammar OpenBSD refuses once passed every pf test.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where pfparse is, or why it is not there (for the fake pfctl, which reports rather than
/// panics).
pub fn locate() -> Result<PathBuf, String> {
    let path = std::env::var_os("PFPARSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pfparse/pfparse")
        });
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "OpenBSD's pf parser is not at {}: put shared/pfparse beside the checkout, or set \
             PFPARSE to its pfparse script",
            path.display()
        ))
    }
}

/// What pfparse made of a text.
#[derive(Debug)]
pub struct Verdict {
    pub accepted: bool,
    /// With `-v`: the rules (and table definitions) as `pfctl -s rules` prints them.
    pub printed: String,
    /// pfctl's own `FILE:LINE: message` lines.
    pub said: String,
}

/// Parses `text` as the anchor `anchor` (`pfctl -a ANCHOR -n -v -f -`), or as a main ruleset
/// when `anchor` is `None`.
pub fn parse(anchor: Option<&str>, text: &str) -> Verdict {
    let path = locate().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(&path);
    cmd.arg("-v");
    if let Some(a) = anchor {
        cmd.args(["-a", a]);
    }
    let mut child = cmd
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let owned = text.to_owned();
    // A thread, so a large text cannot deadlock against pfparse's own output.
    let writer = std::thread::spawn(move || stdin.write_all(owned.as_bytes()));
    let out = child.wait_with_output().expect("pfparse ran");
    let _ = writer.join();
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "pfparse did not run to a verdict (exit {code:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Verdict {
        accepted: code == Some(0),
        printed: String::from_utf8_lossy(&out.stdout).into_owned(),
        said: String::from_utf8_lossy(&out.stderr)
            .lines()
            // Printed only in parse-only mode, never by a real load.
            .filter(|l| !l.contains("skipping duplicate table checks"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Fails the test unless OpenBSD accepts `text` as the anchor `anchor`; returns the rules as
/// OpenBSD prints them back.
pub fn assert_accepts(anchor: &str, text: &str) -> String {
    let v = parse(Some(anchor), text);
    assert!(
        v.accepted,
        "OpenBSD's pfctl refuses this as anchor \"{anchor}\":\n{}\n--- text ---\n{}",
        v.said,
        excerpt(text)
    );
    v.printed
}

/// The first lines of a text, for failure messages about 100,000-line tables.
fn excerpt(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().take(40).collect();
    if text.lines().nth(40).is_some() {
        lines.push("...");
    }
    lines.join("\n")
}
