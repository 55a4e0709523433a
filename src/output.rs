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
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data serialises")
    );
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

pub fn status(json: bool, r: &StatusReport) {
    if json {
        return print_json(r);
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
    println!("maintenance: {state}");
    println!("backend:     {} ({})", r.backend, r.table);
    if !r.sources.is_empty() || r.source_count.total() > 0 {
        println!(
            "sources:     {} ({})",
            r.sources.join(", "),
            count(r.source_count.total(), "prefix", "prefixes")
        );
        if !r.exceptions.is_empty() || r.exception_count.total() > 0 {
            println!(
                "except:      {} ({})",
                r.exceptions.join(", "),
                count(r.exception_count.total(), "prefix", "prefixes")
            );
        }
        println!("ports:       {}", maint_backends::PortMap::list(&r.ports));
    }
    if let Some(s) = &r.since {
        println!("since:       {s}");
    }
    if let (Some(at), Some(by)) = (&r.changed, &r.by) {
        let origin = by
            .origin
            .as_deref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        println!("changed:     {at} by {}{origin}", by.user);
    }
    if let Some(u) = &r.until {
        println!("until:       {u}");
    }
    if let Some(reason) = &r.reason {
        println!("reason:      {reason}");
    }
    match &r.server {
        Some(s) => {
            println!(
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
                println!(
                    "refused:     {direct} that reached the server port directly, {per_source} \
                     over the per-source connection limit"
                );
            }
        }
        None => println!("server:      not running"),
    }
    for d in &r.drift {
        println!("drift:       {d}");
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
