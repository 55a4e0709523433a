//! Running pfctl(8) and reading what it prints.
//!
//! This module owns the child process (arguments, stdin, exit status, the mapping of pfctl's
//! complaints to [`BackendError`]) and the parsers for pfctl's output. It knows nothing of
//! policies. Every output format below was read off OpenBSD's sources, so the fake pfctl in
//! `tests/fake-pfctl` can mimic the same text:
//! - `-s info`: `print_status()` in sbin/pfctl/pfctl_parser.c prints `Status: Enabled for …`
//!   or `Status: Disabled …` on the first line.
//! - `-t T -T show`: `print_addrx()` in sbin/pfctl/pfctl_table.c prints `"%c %c%s"`, that is
//!   a feedback column, a space, `!` or a space, then the address; `/32` and `/128` are left
//!   out for hosts.
//! - `-s states`: `print_state()` in sbin/pfctl/pf_print_state.c prints
//!   `IF PROTO A (A') <- B (B')   SRCSTATE:DSTSTATE`, where the parenthesised host is the wire
//!   side and only shows when a translation (our `rdr-to`) changed it; IPv6 ports are written
//!   `addr[port]`.
//! - `-k …`: `pfctl_label_kill_states()` and `pfctl_key_kill_states()` in sbin/pfctl/pfctl.c
//!   print `killed N states` on stderr.
//! - A missing table or anchor comes back as `Table does not exist` / `Anchor does not exist`
//!   (`pf_strerror()` in pfctl.c); `-s rules` on a missing anchor warns but exits 0.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context};
use ipnet::IpNet;

use crate::{BackendError, Result};

pub(crate) struct Pfctl {
    program: PathBuf,
}

/// What one pfctl run left behind.
pub(crate) struct Output {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

impl Pfctl {
    pub fn new(program: PathBuf) -> Pfctl {
        Pfctl { program }
    }

    /// The command line as an operator would type it, for error messages.
    pub fn describe(&self, args: &[&str]) -> String {
        let mut s = String::from("pfctl");
        for a in args {
            if a.contains(' ') || a.contains('"') {
                s.push_str(&format!(" '{a}'"));
            } else {
                s.push(' ');
                s.push_str(a);
            }
        }
        s
    }

    /// Runs pfctl; a non-zero exit is returned, not raised, for callers that expect some.
    /// Permission problems and a missing pfctl are raised here, whatever the caller expects.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    BackendError::NotReady {
                        problem: format!("pfctl not found at {}", self.program.display()),
                        hint: "the pf backend drives OpenBSD's pfctl(8); run maint on OpenBSD \
                               or choose another backend in maint.toml"
                            .into(),
                    }
                } else {
                    BackendError::Failed(
                        anyhow!(e).context(format!("could not start {}", self.program.display())),
                    )
                }
            })?;
        // A writer thread, because pfctl may fill its stderr pipe with warnings while we are
        // still feeding it a large table; writing inline could then deadlock.
        let writer = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_owned();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{}`", self.describe(args)))?;
        if let Some(w) = writer {
            // A broken pipe only means pfctl stopped reading early; its exit status says why.
            let _ = w.join();
        }
        let output = Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
        };
        if is_permission_error(&output.stderr) {
            return Err(BackendError::Permission { firewall: "pf" });
        }
        Ok(output)
    }

    /// Runs pfctl and turns a non-zero exit into an error carrying pfctl's own words.
    pub fn check(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let out = self.run(args, stdin)?;
        if !out.success {
            return Err(self.failure(args, &out));
        }
        Ok(out)
    }

    /// Runs a pfctl read that may name a missing anchor or table, which for maint means
    /// "empty": its standard output, or nothing when pfctl said it does not exist.
    pub fn read(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args, None)?;
        if out.success {
            Ok(out.stdout)
        } else if says_missing(&out.stderr) {
            Ok(String::new())
        } else {
            Err(self.failure(args, &out))
        }
    }

    /// The error for a pfctl run that exited non-zero, in pfctl's own words.
    pub fn failure(&self, args: &[&str], out: &Output) -> BackendError {
        BackendError::Failed(anyhow!(
            "`{}` failed: {}",
            self.describe(args),
            out.stderr.trim()
        ))
    }
}

/// pfctl opens /dev/pf first and dies with `err(1, "/dev/pf")` when it may not.
fn is_permission_error(stderr: &str) -> bool {
    stderr.contains("Permission denied") || stderr.contains("Operation not permitted")
}

/// `Some(true)` for `Status: Enabled…`, `Some(false)` for `Status: Disabled…`.
pub(crate) fn parse_status(stdout: &str) -> Option<bool> {
    stdout.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("Status:")?.trim_start();
        if rest.starts_with("Enabled") {
            Some(true)
        } else if rest.starts_with("Disabled") {
            Some(false)
        } else {
            None
        }
    })
}

/// One limit from `pfctl -s memory`, which `pfctl_show_limits()` prints as
/// `%-13s hard limit %8u` per limit, or `%-13s unlimited`; `None` when unlimited or absent.
pub(crate) fn parse_limit(stdout: &str, name: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start();
        rest.strip_prefix("hard limit")?.trim().parse().ok()
    })
}

/// Whether pfctl said the anchor or table is not there, which for maint means "empty".
fn says_missing(stderr: &str) -> bool {
    stderr.contains("does not exist")
}

/// A table's entries as `-T show` prints them: (positive, negated).
pub(crate) fn parse_table(stdout: &str) -> Result<(Vec<IpNet>, Vec<IpNet>)> {
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for line in stdout.lines() {
        let entry = line.trim();
        if entry.is_empty() {
            continue;
        }
        let (negated, addr) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let net = parse_net(addr)
            .ok_or_else(|| anyhow!("unexpected line in `pfctl -T show` output: {line:?}"))?;
        if negated {
            neg.push(net)
        } else {
            pos.push(net)
        }
    }
    Ok((pos, neg))
}

fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// Sum of the `killed N states…` lines pfctl wrote to stderr.
pub(crate) fn parse_killed(stderr: &str) -> Option<usize> {
    let mut total = None;
    for line in stderr.lines() {
        if let Some(rest) = line.trim().strip_prefix("killed ") {
            let n: usize = rest.split_whitespace().next()?.parse().ok()?;
            *total.get_or_insert(0) += n;
        }
    }
    total
}

/// One line of `pfctl -s states`, reduced to what state killing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateLine {
    pub proto: String,
    /// `true` for `<-` (the state was created by an inbound packet).
    pub inbound: bool,
    /// The host printed first (for inbound states: the destination, stack side).
    pub first: String,
    /// Its wire side, shown only when a translation changed it.
    pub first_wire: Option<String>,
    /// The host printed after the arrow (for inbound states: the client).
    pub second: String,
    pub second_wire: Option<String>,
}

impl StateLine {
    /// The `-k key` argument naming exactly this state, in the format
    /// `pfctl_key_kill_states()` parses: `protocol host1:port1 direction host2:port2`. pf
    /// matches it against the wire key, which is what the printed hosts are when nothing was
    /// translated.
    pub fn key(&self) -> String {
        let arrow = if self.inbound { "<-" } else { "->" };
        let first = self.first_wire.as_deref().unwrap_or(&self.first);
        let second = self.second_wire.as_deref().unwrap_or(&self.second);
        format!("{} {} {} {}", self.proto, first, arrow, second)
    }
}

pub(crate) fn parse_states(stdout: &str) -> Vec<StateLine> {
    let mut states = Vec::new();
    for line in stdout.lines() {
        // Verbose continuation lines are indented; every state starts at column 0.
        if line.is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        let mut toks = line.split_whitespace().peekable();
        let (Some(_ifname), Some(proto), Some(first)) = (toks.next(), toks.next(), toks.next())
        else {
            continue;
        };
        let first_wire = toks
            .next_if(|t| t.starts_with('('))
            .map(|t| t.trim_matches(|c| c == '(' || c == ')').to_owned());
        let inbound = match toks.next() {
            Some("<-") => true,
            Some("->") => false,
            _ => continue,
        };
        let Some(second) = toks.next() else { continue };
        let second_wire = toks
            .next_if(|t| t.starts_with('('))
            .map(|t| t.trim_matches(|c| c == '(' || c == ')').to_owned());
        states.push(StateLine {
            proto: proto.to_owned(),
            inbound,
            first: first.to_owned(),
            first_wire,
            second: second.to_owned(),
            second_wire,
        });
    }
    states
}

/// `192.0.2.10:80` or `2001:db8::10[80]` (pf's way of writing an IPv6 port).
pub(crate) fn parse_host_port(s: &str) -> Option<(IpAddr, u16)> {
    if let Some((addr, port)) = s.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
        return Some((addr.parse().ok()?, port.parse().ok()?));
    }
    let (addr, port) = s.rsplit_once(':')?;
    Some((addr.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_line() {
        let on = "Status: Enabled for 0 days 01:02:03              Debug: err\n\n";
        let off = "Status: Disabled                             Debug: err\n";
        assert_eq!(parse_status(on), Some(true));
        assert_eq!(parse_status(off), Some(false));
        assert_eq!(parse_status("nonsense"), None);
    }

    #[test]
    fn reads_table_with_negations() {
        let (pos, neg) =
            parse_table("   0.0.0.0/0\n   ::/0\n  !203.0.113.0/24\n   192.0.2.7\n").unwrap();
        assert_eq!(
            pos,
            vec![
                "0.0.0.0/0".parse::<IpNet>().unwrap(),
                "::/0".parse().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!(neg, vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]);
        assert!(parse_table("   not-an-address\n").is_err());
    }

    #[test]
    fn reads_states_and_builds_keys() {
        let out = "all tcp 192.0.2.10:80 <- 198.51.100.7:51234       ESTABLISHED:ESTABLISHED\n\
                   all tcp 127.0.0.1:8503 (192.0.2.10:80) <- 198.51.100.8:40000       ESTABLISHED:ESTABLISHED\n\
                   all tcp 2001:db8::10[443] <- 2001:db8:1::5[50000]       ESTABLISHED:ESTABLISHED\n\
                   \x20  [1 + 2]  [3 + 4]\n";
        let states = parse_states(out);
        assert_eq!(states.len(), 3);
        assert!(states[0].first_wire.is_none() && states[0].second_wire.is_none());
        assert_eq!(states[0].key(), "tcp 192.0.2.10:80 <- 198.51.100.7:51234");
        assert!(states[1].first_wire.is_some());
        assert_eq!(states[1].key(), "tcp 192.0.2.10:80 <- 198.51.100.8:40000");
        assert_eq!(
            parse_host_port(&states[2].first),
            Some(("2001:db8::10".parse().unwrap(), 443))
        );
    }

    #[test]
    fn reads_a_memory_limit() {
        let out = "states        hard limit   100000\n\
                   src-nodes     hard limit    10000\n\
                   tables        hard limit     1000\n\
                   table-entries hard limit   200000\n\
                   anchors       unlimited\n";
        assert_eq!(parse_limit(out, "table-entries"), Some(200_000));
        assert_eq!(parse_limit(out, "tables"), Some(1000));
        assert_eq!(parse_limit(out, "anchors"), None);
        assert_eq!(parse_limit(out, "frags"), None);
    }

    #[test]
    fn sums_killed_lines() {
        assert_eq!(parse_killed("killed 3 states\n"), Some(3));
        assert_eq!(
            parse_killed("killed 2 states from 1 sources and 0 destinations\nkilled 1 states\n"),
            Some(3)
        );
        assert_eq!(parse_killed("pfctl: something else\n"), None);
    }
}
