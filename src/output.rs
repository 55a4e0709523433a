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
            if let Some(u) = &o.drain_until {
                match o.drain_cut {
                    Some(cut) => println!(
                        "drained until {u}: new connections saw the page at once; {} still \
                         open on the app then were cut",
                        count(cut, "connection", "connections")
                    ),
                    None => println!("draining until {u}: connections open on the app may finish"),
                }
            } else if o.states_killed > 0 {
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
    if let Some(u) = &r.drain_until {
        say!("draining:    until {u} (connections open before `on` may finish on the app)");
    }
    for p in &r.passes {
        say!("pass:        {}", pass_line(p));
        for a in &p.admitted {
            say!(
                "             lets {} through until {}",
                a.net,
                a.until.as_deref().unwrap_or("maintenance ends")
            );
        }
    }
    for d in &r.drift {
        say!("drift:       {d}");
    }
    out
}

/// "3f2a91c0 until 2026-…, 'QA team', made by alice (ssh)".
fn pass_line(p: &crate::controller::pass::PassView) -> String {
    let mut line = p.id.clone();
    match &p.until {
        Some(u) => line.push_str(&format!(" until {u}")),
        None => line.push_str(" until maintenance ends"),
    }
    if p.waiting {
        line.push_str(" (for the next maintenance)");
    }
    if let Some(n) = &p.note {
        line.push_str(&format!(", {n:?}"));
    }
    line.push_str(&format!(", made by {}", actor(&p.by)));
    line
}

pub fn pass_made(style: Style, made: &crate::controller::pass::MadePass) {
    if !style.quiet {
        warn_all(&made.warnings);
    }
    if style.json {
        return print_json(made);
    }
    println!("{}", made.url);
    if style.quiet {
        return;
    }
    eprintln!(
        "pass {}: whoever opens this link on the maintenance page reaches the app until {}",
        made.id,
        made.until.as_deref().unwrap_or("maintenance ends")
    );
    if !made.maintenance_on {
        eprintln!("maintenance is off: the link works once `maint on` starts the next one");
    }
    eprintln!("the link is shown only now; maint keeps only its SHA-256");
}

pub fn pass_list(style: Style, passes: &[crate::controller::pass::PassView]) {
    if style.json {
        return print_json(&passes);
    }
    if passes.is_empty() {
        if !style.quiet {
            println!("no passes");
        }
        return;
    }
    for p in passes {
        println!("{}", pass_line(p));
        for a in &p.admitted {
            println!(
                "  lets {} through until {} (since {})",
                a.net,
                a.until.as_deref().unwrap_or("maintenance ends"),
                a.at
            );
        }
    }
}

pub fn pass_revoked(style: Style, r: &crate::controller::pass::Revoked) {
    if !style.quiet {
        warn_all(&r.warnings);
    }
    if style.json {
        return print_json(r);
    }
    if style.quiet {
        return;
    }
    if r.ids.is_empty() {
        println!("no passes to revoke (no change)");
        return;
    }
    println!(
        "revoked pass{} {}",
        if r.ids.len() == 1 { "" } else { "es" },
        r.ids.join(", ")
    );
    if !r.withdrawn.is_empty() {
        let nets: Vec<String> = r.withdrawn.iter().map(|n| n.to_string()).collect();
        println!("{} see the maintenance page again", nets.join(", "));
    }
    if r.states_killed > 0 {
        println!(
            "moved {} to the maintenance page",
            count(r.states_killed, "open connection", "open connections")
        );
    }
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
