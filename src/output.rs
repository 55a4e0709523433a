//! What the operator reads: one JSON object per command with `--json` (stable field names,
//! documented in the README), short sentences otherwise. Warnings go to stderr in both cases
//! so scripts parsing stdout never trip over them. `-q` keeps only errors (and the JSON object
//! a script asked for), so cron mails only when something failed.

use serde::Serialize;

use crate::controller::{Outcome, StatusReport};
use crate::finding::Finding;

/// How to print: from the global options.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub json: bool,
    pub quiet: bool,
}

fn print_json<T: Serialize>(value: &T) {
    print!("{}", json_text(value));
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("maint: warning: {w}");
    }
}

/// "1 prefix", "2 prefixes".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn outcome(style: Style, verb: &str, o: &Outcome) {
    if !style.quiet {
        warn_all(&o.warnings);
    }
    if style.json {
        return print_json(o);
    }
    if style.quiet {
        return;
    }
    if let Some(rules) = &o.ruleset {
        println!(
            "# maint {verb} --dry-run: nothing was changed; {} would load:",
            o.backend
        );
        print!("{rules}");
        if !rules.ends_with('\n') {
            println!();
        }
        return;
    }
    if let Some(pid) = o.server_started {
        println!("started the maintenance server in the background (pid {pid})");
    }
    match (verb, o.changed) {
        ("on", changed) => {
            let mut line = format!(
                "maintenance {} for {}",
                if changed {
                    "on"
                } else {
                    "already on (no change)"
                },
                o.sources.join(", ")
            );
            if !o.exceptions.is_empty() {
                line.push_str(&format!(" except {}", o.exceptions.join(", ")));
            }
            line.push_str(&format!(
                "; ports {}",
                maint_backends::PortMap::list(&o.ports)
            ));
            if let Some(u) = &o.until {
                line.push_str(&format!("; until {u}"));
            }
            println!("{line}");
            if o.states_killed > 0 {
                println!(
                    "moved {} to the maintenance page",
                    count(o.states_killed, "open connection", "open connections")
                );
            }
        }
        (_, true) => {
            println!("maintenance off: clients reach the app again");
            if o.states_killed > 0 {
                println!(
                    "moved {} back to the app",
                    count(o.states_killed, "open connection", "open connections")
                );
            }
            if let Some(pid) = o.server_stopped {
                println!("stopped the maintenance server maint had started (pid {pid})");
            }
        }
        (_, false) => println!("maintenance was not on (no change)"),
    }
}

/// `status` for a person: a few aligned lines.
pub fn status_text(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // One line of the report.
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    let state = match (r.active, r.expired, r.kernel_readable) {
        (true, _, false) => "ON, by the state record (the firewall could not be read: run as root)",
        (false, _, false) => {
            "off, by the state record (the firewall could not be read: run as root)"
        }
        (true, _, true) => "ON",
        (false, true, true) => "off (window ended; `maint off` tidies up)",
        _ => "off",
    };
    say!("maintenance: {state}");
    say!("backend:     {} ({})", r.backend, r.table);
    if !r.sources.is_empty() || r.source_count.total() > 0 {
        say!(
            "sources:     {} ({})",
            r.sources.join(", "),
            count(r.source_count.total(), "prefix", "prefixes")
        );
        if !r.exceptions.is_empty() || r.exception_count.total() > 0 {
            say!(
                "except:      {} ({})",
                r.exceptions.join(", "),
                count(r.exception_count.total(), "prefix", "prefixes")
            );
        }
        say!("ports:       {}", maint_backends::PortMap::list(&r.ports));
    }
    if let Some(s) = &r.since {
        match &r.on_by {
            Some(by) => say!("since:       {s} by {}", actor(by)),
            None => say!("since:       {s}"),
        }
    }
    if let (Some(at), Some(by)) = (&r.changed, &r.by) {
        say!("changed:     {at} by {}", actor(by));
    }
    if let Some(u) = &r.until {
        say!("until:       {u}");
    }
    if let Some(reason) = &r.reason {
        say!("reason:      {reason}");
    }
    match &r.server {
        Some(s) => {
            say!(
                "server:      pid {}, {}, port {}; {} served, {}",
                s.status.pid,
                if s.healthy {
                    "healthy"
                } else {
                    "NOT answering HTTP"
                },
                s.status.http_port,
                count(s.status.requests as usize, "request", "requests"),
                count(
                    s.status.connections as usize,
                    "open connection",
                    "open connections"
                )
            );
            let (direct, per_source) = (s.status.refused_direct, s.status.refused_per_source);
            if direct > 0 || per_source > 0 {
                say!(
                    "refused:     {direct} that reached the server port directly, {per_source} \
                     over the per-source connection limit"
                );
            }
        }
        None => say!("server:      not running"),
    }
    for d in &r.drift {
        say!("drift:       {d}");
    }
    out
}

/// "alice (ssh)".
fn actor(by: &crate::state::Actor) -> String {
    match &by.origin {
        Some(o) => format!("{} ({o})", by.user),
        None => by.user.clone(),
    }
}

/// Any report as the JSON object `--json` prints.
pub fn json_text<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("plain data serialises");
    text.push('\n');
    text
}

/// Writes `text` to `path` atomically (mode 0644), or to stdout without one.
pub fn to_file_or_stdout(path: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => crate::state::write_atomically(p, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub fn findings(style: Style, findings: &[Finding]) {
    if style.json {
        return print_json(&findings);
    }
    for f in findings.iter().filter(|f| !style.quiet || f.failed()) {
        println!("{:<4}  {}", f.level, f.message);
    }
}
