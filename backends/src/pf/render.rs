//! The text maint loads into its pf anchor, and the names it uses there.
//!
//! This module owns the shape of the anchor: one table, `<NAME_src>`, and one `pass … rdr-to`
//! rule per address family and redirected port. The same text is what `--dry-run` shows, so it
//! is written for a human as much as for pfctl.
//!
//! Why exceptions are negated entries in the one table rather than a second table with a
//! `pass quick` rule: pf answers a table lookup with the most specific entry, and a negated
//! entry makes the lookup fail. `{ 0.0.0.0/0, !203.0.113.0/24 }` therefore matches everyone
//! but that network, and an excepted client's packets simply do not match maint's rule and go
//! on to the operator's own rules untouched. A `pass quick from <maint_exc>` rule would instead
//! decide those packets inside maint's anchor, skipping whatever the main ruleset says about
//! them (blocks, rate limits, queues, logging). It also keeps one place to look:
//! `pfctl -a maint -t maint_src -T show` lists everything maint matches, with its exceptions.
//!
//! pf has no per-rule expiry, so `until` is written as a comment for the reader and carried in
//! the rules' `tag` (`NAME-until-SECONDS`) so that `current()` can read it back from
//! `pfctl -s rules`, which drops comments. Nothing tests for that tag, so it changes no
//! packet's fate. The controller schedules `maint off` for the end of the window.

use std::fmt::Write;

use ipnet::IpNet;

use crate::Policy;

/// Where the maintenance server listens on OpenBSD. Loopback only, so it cannot be reached
/// from the network on its own ports; pf's `rdr-to` to loopback needs no sysctl on OpenBSD.
pub(crate) const SERVER_V4: &str = "127.0.0.1";
pub(crate) const SERVER_V6: &str = "::1";

/// pf's fixed-size name fields (PF_TABLE_NAME_SIZE = 32, labels and tags 64, NUL included).
const TABLE_NAME_MAX: usize = 31;
const LABEL_MAX: usize = 63;

/// The names maint uses inside its anchor, all derived from the anchor name.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub anchor: String,
    pub table: String,
    /// Label of the redirect rules; states they created are killed by it on `off`.
    pub label: String,
    /// Tag prefix carrying `until`; the tag is this followed by the Unix time.
    pub until_tag: String,
    /// The table of sources a pass lets through (`maint pass`), and the tag its `match` rule
    /// puts on their packets so the redirect rules pass them by.
    pub pass_table: String,
    pub pass_tag: String,
}

impl Names {
    pub fn new(anchor: &str) -> Names {
        // An anchor may be nested ("web/maint"); table names and labels may not hold '/'.
        let base: String = anchor
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut table_base = base.clone();
        table_base.truncate(TABLE_NAME_MAX - "_src".len());
        let mut pass_base = base.clone();
        pass_base.truncate(TABLE_NAME_MAX - "_pass".len());
        let mut label_base = base;
        label_base.truncate(LABEL_MAX - "-until-18446744073709551615".len());
        Names {
            anchor: anchor.to_owned(),
            table: format!("{table_base}_src"),
            label: format!("{label_base}-redirect"),
            until_tag: format!("{label_base}-until-"),
            pass_table: format!("{pass_base}_pass"),
            pass_tag: format!("{label_base}-pass"),
        }
    }
}

/// The table's entries, positive then negated, as pfctl accepts them.
///
/// A source lying wholly inside an exception is left out: in a table, a longer positive prefix
/// would beat the shorter negated one and the excepted clients would be redirected after all.
/// Every exception is kept, even one outside all sources (it is harmless there), so a policy
/// reads back as it was applied unless it had such a wholly excepted source.
pub(crate) fn table_entries(policy: &Policy) -> Vec<String> {
    let mut entries: Vec<String> = effective_sources(policy).map(|n| n.to_string()).collect();
    entries.extend(policy.exceptions.iter().map(|n| format!("!{n}")));
    entries
}

fn effective_sources(policy: &Policy) -> impl Iterator<Item = &IpNet> {
    policy
        .sources
        .iter()
        .filter(|s| !policy.exceptions.iter().any(|e| e.contains(*s)))
}

/// Address families that get rules: those with a redirected source. With no source at all,
/// both, so the ports are still on record (the empty table matches nobody).
fn families(policy: &Policy) -> (bool, bool) {
    let (mut v4, mut v6) = (false, false);
    for n in effective_sources(policy) {
        match n {
            IpNet::V4(_) => v4 = true,
            IpNet::V6(_) => v6 = true,
        }
    }
    if !v4 && !v6 {
        (true, true)
    } else {
        (v4, v6)
    }
}

/// The whole anchor for `pfctl -a ANCHOR -f -`.
pub(crate) fn anchor_text(policy: &Policy, names: &Names) -> String {
    let mut out = String::new();
    let a = &names.anchor;
    let _ = writeln!(
        out,
        "# maint: anchor \"{a}\", loaded whole by `pfctl -a {a} -f -`; maint replaces it on every change."
    );
    if let Some(until) = policy.until {
        let _ = writeln!(
            out,
            "# until {} ({until}); pf cannot expire rules, so maint runs `maint off` then.",
            utc(until)
        );
    }
    // One entry per line and no commas. pf's grammar (parse.y) reads
    //     table_host_list : tablespec optnl | table_host_list comma tablespec optnl
    // so a newline may follow an entry, and a comma may stand between entries, but a comma
    // followed by a newline is a syntax error: OpenBSD refused every table of two or more
    // entries that maint wrote as `a,⏎ b`. A line per entry also keeps a 100,000-entry
    // table readable in `--dry-run` and a failed load's line number meaningful.
    let entries = table_entries(policy);
    if entries.is_empty() {
        let _ = writeln!(out, "table <{}> {{ }}", names.table);
    } else {
        let _ = writeln!(out, "table <{}> {{", names.table);
        for e in &entries {
            let _ = writeln!(out, "\t{e}");
        }
        let _ = writeln!(out, "}}");
    }
    // Sources a pass lets through: filled one by one by `admit` while maintenance is on
    // (`pfctl -a NAME -t NAME_pass -T add 192.0.2.7`), emptied by maint when each ends (pf
    // cannot expire table entries by time). A `match` rule tags their packets, which decides
    // nothing about them; the redirect rules pass tagged packets by, so those go on to the
    // operator's own rules exactly as an excepted source's do.
    let _ = writeln!(out, "table <{}> persist", names.pass_table);
    let ports: Vec<String> = policy.ports.iter().map(|p| p.public.to_string()).collect();
    if !ports.is_empty() {
        let list = if ports.len() == 1 {
            ports[0].clone()
        } else {
            format!("{{ {} }}", ports.join(" "))
        };
        let _ = writeln!(
            out,
            "match in on ! lo0 proto tcp from <{}> to any port {list} tag \"{}\"",
            names.pass_table, names.pass_tag
        );
    }
    let tag = policy
        .until
        .map(|u| format!(" tag \"{}{u}\"", names.until_tag))
        .unwrap_or_default();
    let (v4, v6) = families(policy);
    for port in &policy.ports {
        // `on ! lo0`: the host's own connections to its public address arrive on lo0 and
        // keep reaching the app, so the operator can test it before turning maintenance off.
        for (on, af, server) in [(v4, "inet", SERVER_V4), (v6, "inet6", SERVER_V6)] {
            if on {
                let _ = writeln!(
                    out,
                    "pass in quick on ! lo0 {af} proto tcp from <{}> to any port {} ! tagged \"{}\" rdr-to {server} port {} label \"{}\"{tag}",
                    names.table, port.public, names.pass_tag, port.server, names.label
                );
            }
        }
    }
    out
}

/// What `clear` does, for `--dry-run` of `maint off`: the commands an operator would type.
pub(crate) fn clear_text(names: &Names) -> String {
    let a = &names.anchor;
    format!(
        "# maint off: empty anchor \"{a}\" (its rules, then its tables); nothing else is touched.\n\
         pfctl -a {a} -F rules\n\
         pfctl -a {a} -F Tables\n"
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC`, without pulling a date crate into the firewall layer.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
    }

    #[test]
    fn names_fit_pf_fields() {
        let n = Names::new("web/maint");
        assert_eq!(n.table, "web_maint_src");
        assert_eq!(n.label, "web_maint-redirect");
        let long = Names::new(&"x".repeat(80));
        assert!(long.table.len() <= TABLE_NAME_MAX);
        assert!(long.until_tag.len() + 20 <= LABEL_MAX);
    }
}
