//! pf backend (OpenBSD): one anchor owned by maint, driven through pfctl(8).
//!
//! This module owns the [`Backend`] contract for pf: which pfctl commands run, in which order,
//! and how their output becomes a [`Policy`] again. The anchor's text lives in [`render`], the
//! child process and output parsing in [`pfctl`]. maint only ever names its own anchor
//! (`-a NAME`) when it changes something; the main ruleset is read, never written.
//!
//! Command sequences (NAME is `options.name`, "maint" by default):
//! - apply: `pfctl -a NAME -f -`, the table and the rules in one text. pfctl wraps a load in
//!   one kernel transaction covering the anchor's ruleset *and* its tables (DIOCXBEGIN with
//!   PF_TRANS_RULESET and PF_TRANS_TABLE, then DIOCXCOMMIT, or DIOCXROLLBACK on any error; see
//!   `pfctl_ruleset_trans()` and `pfctl_rules()` in sbin/pfctl/pfctl.c). So the one failure
//!   point leaves the previous rules and table contents in place, and there is no window in
//!   which new rules meet an old table or the reverse. This is why the table is defined inline
//!   instead of being filled by a separate `-T replace`, which would need undoing by hand.
//! - current: `pfctl -a NAME -s rules`, then `pfctl -a NAME -t NAME_src -T show`.
//! - stop_new_redirects: `pfctl -a NAME -s rules`, then `pfctl -a NAME -F rules` (states of
//!   the removed rules go on translating until they end or are killed).
//! - clear: the same two reads, then `pfctl -a NAME -F rules` and `pfctl -a NAME -F Tables`.
//!   Rules go first so the redirect stops at once; a table left alone without rules does
//!   nothing, and the next `clear` removes it.
//! - kill_disagreeing_states: `pfctl -s states`, then one
//!   `pfctl -k key -k 'tcp DST:PORT <- SRC:PORT'` per state that disagrees with the policy: a
//!   matched client to a public port that was not redirected, or a redirected client the
//!   policy now lets through. See [`Pf::kill_disagreeing_by_key`] for why not a single host
//!   or label kill. For `off` (nobody redirected): `pfctl -k label -k NAME-redirect`.
//! - preflight: `pfctl -s info`, then `pfctl -s rules` (main ruleset).

mod pfctl;
mod render;

use anyhow::anyhow;

use ipnet::IpNet;

use crate::{Admission, Backend, BackendError, LocalAddresses, Policy, PortMap, Result};
use pfctl::Pfctl;
use render::Names;

pub struct Pf {
    names: Names,
    pfctl: Pfctl,
}

impl Pf {
    /// The backend for `anchor`, driving the pfctl(8) at `pfctl`.
    pub fn new(anchor: &str, pfctl: std::path::PathBuf) -> Self {
        Pf {
            names: Names::new(anchor),
            pfctl: Pfctl::new(pfctl),
        }
    }

    fn anchor(&self) -> &str {
        &self.names.anchor
    }

    /// The anchor's rules as `pfctl -s rules` prints them; empty when the anchor is missing.
    fn anchor_rules(&self) -> Result<Vec<String>> {
        let out = self.pfctl.read(&["-a", self.anchor(), "-s", "rules"])?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The tables defined in the anchor (`-s Tables` prints `name@anchor`).
    fn anchor_tables(&self) -> Result<Vec<String>> {
        let out = self.pfctl.read(&["-a", self.anchor(), "-s", "Tables"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('@').next())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Reads back one of maint's redirect rules: (public port, server port, until).
    fn parse_rule(&self, rule: &str) -> Result<(PortMap, Option<u64>)> {
        let toks: Vec<&str> = rule.split_whitespace().collect();
        let after = |word: &str| toks.iter().position(|t| *t == word).map(|i| i + 1);
        let unexpected = || {
            BackendError::Failed(anyhow!(
                "anchor \"{}\" holds a rule maint did not write: {rule}\n  \
                 (`maint off` removes everything in the anchor)",
                self.anchor()
            ))
        };
        // `to any port = 80`: print_fromto() writes the operator; accept the bare form too.
        let to = after("to").ok_or_else(unexpected)?;
        let mut i = to;
        while i < toks.len() && toks[i] != "port" {
            i += 1;
        }
        let mut p = i + 1;
        if toks.get(p) == Some(&"=") {
            p += 1;
        }
        let public: u16 = toks
            .get(p)
            .and_then(|t| t.parse().ok())
            .ok_or_else(unexpected)?;
        let rdr = after("rdr-to").ok_or_else(unexpected)?;
        if toks.get(rdr + 1) != Some(&"port") {
            return Err(unexpected());
        }
        let server: u16 = toks
            .get(rdr + 2)
            .and_then(|t| t.parse().ok())
            .ok_or_else(unexpected)?;
        let until = match after("tag") {
            Some(t) => {
                let tag = toks.get(t).ok_or_else(unexpected)?.trim_matches('"');
                let secs = tag
                    .strip_prefix(&self.names.until_tag)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(unexpected)?;
                Some(secs)
            }
            None => None,
        };
        Ok((PortMap { public, server }, until))
    }

    /// Refuses, before anything is loaded, a table larger than pf's `table-entries` limit.
    ///
    /// The limit (`pfctl -s memory`) is shared by every table on the host, and while a load
    /// replaces maint's table the kernel holds the old entries and the new ones at once, so a
    /// policy can still fail to fit below the limit; pfctl then reports ENOMEM, which
    /// [`Backend::apply`] turns into the same advice.
    fn check_table_room(&self, entries: usize) -> Result<()> {
        let out = self.pfctl.check(&["-s", "memory"], None)?;
        match pfctl::parse_limit(&out.stdout, "table-entries") {
            Some(limit) if entries as u64 > limit => {
                Err(table_limit_error(entries, Some(limit), ""))
            }
            _ => Ok(()),
        }
    }

    /// Kills the states that disagree with `policy`: matched clients that still go to the
    /// app, and redirected clients (by a rule of `redirected`) that `policy` lets through.
    ///
    /// States to the app were created by the operator's own rules, so there is no label of
    /// maint's to kill them by (seed 002 used its own `www-normal` label, which maint cannot
    /// assume); redirected ones carry maint's label, but a label kill cannot spare the clients
    /// that stay redirected. A host kill (`pfctl -k SRC -k DST`) cannot name a port, so it
    /// would also drop the client's SSH session, which rule 1 forbids. So maint lists the
    /// states and kills each disagreeing one by its key, which names protocol, both addresses
    /// and both ports. The cost is one pfctl run per killed state; a keep-alive web server
    /// has few per client.
    fn kill_disagreeing_by_key(&self, policy: &Policy, redirected: &[PortMap]) -> Result<usize> {
        let local = LocalAddresses::of_this_host();
        self.kill_inbound_tcp_where(|s| match s.public {
            // Untranslated: a connection to the app on the port the client asked for.
            None => policy.redirects(s.client.ip(), s.stack_port, &local),
            // Redirected by maint (rdr-to the server's port) from a public port.
            Some(public) => {
                redirected_by(redirected, public, s.stack_port)
                    && !policy.redirects(s.client.ip(), public, &local)
            }
        })
    }

    /// Lists the states (`pfctl -s states`) and kills, by key, each inbound TCP state `pick`
    /// chooses. Returns how many pf removed.
    fn kill_inbound_tcp_where(&self, pick: impl Fn(&Inbound) -> bool) -> Result<usize> {
        let out = self.pfctl.check(&["-s", "states"], None)?;
        let mut killed = 0;
        for state in pfctl::parse_states(&out.stdout) {
            if state.proto != "tcp" || !state.inbound {
                continue;
            }
            let (Some((_, stack_port)), Some((src, sport))) = (
                pfctl::parse_host_port(&state.first),
                pfctl::parse_host_port(&state.second),
            ) else {
                continue;
            };
            let public = match state.first_wire.as_deref().map(pfctl::parse_host_port) {
                None => None,
                Some(Some((_, public))) => Some(public),
                // A translation maint cannot read is not one it decides on.
                Some(None) => continue,
            };
            let inbound = Inbound {
                client: std::net::SocketAddr::new(src, sport),
                stack_port,
                public,
            };
            if !pick(&inbound) {
                continue;
            }
            let out = self.pfctl.check(&["-k", "key", "-k", &state.key()], None)?;
            killed += pfctl::parse_killed(&out.stderr).unwrap_or(0);
        }
        Ok(killed)
    }

    /// Kills the states maint's redirect rules created. pf keeps a removed rule alive while
    /// states point at it, so this works after `clear` as well as before.
    fn kill_server_states(&self) -> Result<usize> {
        let out = self
            .pfctl
            .check(&["-k", "label", "-k", &self.names.label], None)?;
        Ok(pfctl::parse_killed(&out.stderr).unwrap_or(0))
    }
}

/// An inbound TCP state, as maint judges it.
struct Inbound {
    /// The client's address and port.
    client: std::net::SocketAddr,
    /// The port on this host's stack: the app's, or the maintenance server's after rdr-to.
    stack_port: u16,
    /// The public port the client asked for, when a translation (maint's rdr-to) took it
    /// elsewhere; `None` for an untranslated state.
    public: Option<u16>,
}

/// Whether one of maint's port maps sends `public` to `stack_port`.
fn redirected_by(redirected: &[PortMap], public: u16, stack_port: u16) -> bool {
    redirected
        .iter()
        .any(|m| m.public == public && m.server == stack_port)
}

/// The error for a table pf has no room for, with the pf.conf line that makes room.
fn table_limit_error(entries: usize, limit: Option<u64>, pfctl_said: &str) -> BackendError {
    let problem = match limit {
        Some(limit) => format!(
            "the policy needs {entries} pf table entries, more than pf's limit of {limit} \
             (`pfctl -s memory`, table-entries); nothing was loaded"
        ),
        None => format!(
            "pf had no room for the policy's {entries} table entries; nothing was loaded \
             (pfctl said: {})",
            pfctl_said.trim()
        ),
    };
    // Twice the entries, as the kernel holds maint's old table and the new one during the
    // load, a tenth more for the host's other tables, and never below pf's own default.
    let entries64 = entries as u64;
    let want = (entries64 * 2 + entries64 / 10)
        .next_multiple_of(10_000)
        .max(200_000);
    BackendError::NotReady {
        problem,
        hint: format!(
            "raise the limit in /etc/pf.conf with\n      set limit table-entries {want}\n    \
             (room for this table twice, as a replace holds the old and new entries at once, \
             plus the host's other tables), reload it with `pfctl -f /etc/pf.conf`, or match \
             fewer prefixes"
        ),
    }
}

/// Where the main ruleset calls maint's anchor.
struct AnchorCall {
    /// What follows `anchor "NAME"` (pfctl prints `all` when it filters nothing).
    criteria: String,
    /// `pass … quick` rules evaluated before the anchor.
    quick_before: Vec<String>,
}

/// Finds `anchor "NAME"` in `pfctl -s rules` output of the main ruleset.
///
/// Only that exact name makes pf evaluate the anchor "NAME" itself: `anchor "NAME/*"` evaluates
/// the anchors *under* it, and an anchor nested in another one has a different path.
fn find_anchor_call(main_rules: &str, name: &str) -> Option<AnchorCall> {
    let head = format!("anchor \"{name}\"");
    let mut quick_before = Vec::new();
    for line in main_rules.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix(&head) {
            if rest.is_empty() || rest.starts_with(' ') {
                return Some(AnchorCall {
                    criteria: rest.trim().to_owned(),
                    quick_before,
                });
            }
        }
        if line.starts_with("pass") && line.split_whitespace().any(|t| t == "quick") {
            quick_before.push(line.to_owned());
        }
    }
    None
}

impl Backend for Pf {
    fn name(&self) -> &'static str {
        "pf"
    }

    fn location(&self) -> String {
        format!("anchor \"{}\"", self.anchor())
    }

    fn preflight(&self) -> Result<Vec<String>> {
        let info = self.pfctl.check(&["-s", "info"], None)?;
        match pfctl::parse_status(&info.stdout) {
            Some(true) => {}
            Some(false) => {
                return Err(BackendError::NotReady {
                    problem: "pf is disabled".into(),
                    hint: "enable it with `pfctl -e` (and keep pf=YES, the default, in \
                           /etc/rc.conf.local so it stays on after a reboot)"
                        .into(),
                })
            }
            None => {
                return Err(BackendError::Failed(anyhow!(
                    "could not find the Status line in `pfctl -s info` output"
                )))
            }
        }
        let main = self.pfctl.check(&["-s", "rules"], None)?;
        let a = self.anchor();
        let Some(call) = find_anchor_call(&main.stdout, a) else {
            return Err(BackendError::NotReady {
                problem: format!(
                    "pf's main ruleset does not call anchor \"{a}\", so maint's rules would never be evaluated"
                ),
                hint: format!(
                    "add the line\n      anchor \"{a}\"\n    to /etc/pf.conf, above your pass rules \
                     for the web ports, then reload it with `pfctl -f /etc/pf.conf`"
                ),
            });
        };
        let mut warnings = Vec::new();
        if !call.criteria.is_empty() && call.criteria != "all" {
            warnings.push(format!(
                "the anchor \"{a}\" line in pf.conf only passes on packets matching `{}`; \
                 maint's redirect sees no others",
                call.criteria
            ));
        }
        for rule in call.quick_before {
            warnings.push(format!(
                "`{rule}` comes before anchor \"{a}\" in pf.conf; packets it passes never reach \
                 maint's redirect (move the anchor line above it)"
            ));
        }
        Ok(warnings)
    }

    fn apply(&self, policy: &Policy) -> Result<()> {
        self.check_table_room(render::table_entries(policy).len())?;
        let text = render::anchor_text(policy, &self.names);
        let args = ["-a", self.anchor(), "-f", "-"];
        let out = self.pfctl.run(&args, Some(&text))?;
        if out.success {
            return Ok(());
        }
        if out.stderr.contains("Cannot allocate memory") {
            return Err(table_limit_error(
                render::table_entries(policy).len(),
                None,
                &out.stderr,
            ));
        }
        Err(self.pfctl.failure(&args, &out))
    }

    fn current(&self) -> Result<Option<Policy>> {
        let rules = self.anchor_rules()?;
        if rules.is_empty() {
            return Ok(None);
        }
        let mut ports = Vec::new();
        let mut until = None;
        // The pass table's `match` rule carries no policy (see `render`).
        let pass_rule = format!("from <{}> ", self.names.pass_table);
        for rule in rules
            .iter()
            .filter(|r| !(r.starts_with("match in ") && r.contains(&pass_rule)))
        {
            let (port, u) = self.parse_rule(rule)?;
            ports.push(port);
            until = until.or(u);
        }
        let show =
            self.pfctl
                .read(&["-a", self.anchor(), "-t", &self.names.table, "-T", "show"])?;
        let (sources, exceptions) = pfctl::parse_table(&show)?;
        Ok(Some(Policy::new(sources, exceptions, ports, until)))
    }

    fn render_apply(&self, policy: &Policy) -> String {
        render::anchor_text(policy, &self.names)
    }

    fn render_clear(&self) -> String {
        render::clear_text(&self.names)
    }

    fn stop_new_redirects(&self) -> Result<bool> {
        if self.anchor_rules()?.is_empty() {
            return Ok(false);
        }
        // The table goes with its last rule (it is not `persist`); states stay.
        self.pfctl
            .check(&["-a", self.anchor(), "-F", "rules"], None)?;
        Ok(true)
    }

    fn clear(&self) -> Result<bool> {
        let rules = self.anchor_rules()?;
        let tables = self.anchor_tables()?;
        if rules.is_empty() && tables.is_empty() {
            return Ok(false);
        }
        let a = self.anchor();
        self.pfctl.check(&["-a", a, "-F", "rules"], None)?;
        self.pfctl.check(&["-a", a, "-F", "Tables"], None)?;
        Ok(true)
    }

    fn kill_disagreeing_states(&self, policy: &Policy, redirected: &[PortMap]) -> Result<usize> {
        if policy.sources.is_empty() {
            // Nobody stays redirected: every state maint's rules created goes, by label,
            // whatever ports they used.
            return self.kill_server_states();
        }
        self.kill_disagreeing_by_key(policy, redirected)
    }

    fn expires_by_itself(&self) -> bool {
        false
    }

    // pfctl -a maint -t maint_pass -T add 192.0.2.7
    fn admit(&self, admission: &Admission) -> Result<()> {
        if self.anchor_rules()?.is_empty() {
            return Err(anyhow!(
                "{} holds no rules: a pass only works while maintenance is on",
                self.location()
            )
            .into());
        }
        let net = admission.net.to_string();
        let t = &self.names.pass_table;
        self.pfctl
            .check(&["-a", self.anchor(), "-t", t, "-T", "add", &net], None)?;
        Ok(())
    }

    // pfctl -a maint -t maint_pass -T delete 192.0.2.7
    fn withdraw(&self, nets: &[IpNet]) -> Result<()> {
        if nets.is_empty() || !self.anchor_tables()?.contains(&self.names.pass_table) {
            return Ok(());
        }
        let mut args = vec![
            "-a".to_owned(),
            self.anchor().to_owned(),
            "-t".to_owned(),
            self.names.pass_table.clone(),
            "-T".to_owned(),
            "delete".to_owned(),
        ];
        args.extend(nets.iter().map(IpNet::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.pfctl.check(&args, None)?;
        Ok(())
    }

    fn admissions_expire_by_itself(&self) -> bool {
        false
    }

    fn kill_redirected_states_of(
        &self,
        net: IpNet,
        redirected: &[PortMap],
        spare: Option<std::net::SocketAddr>,
    ) -> Result<usize> {
        self.kill_inbound_tcp_where(|s| {
            s.public
                .is_some_and(|public| redirected_by(redirected, public, s.stack_port))
                && net.contains(&s.client.ip())
                && spare != Some(s.client)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_anchor_line_and_quick_rules_before_it() {
        let main = "block return all\n\
                    pass in quick proto tcp to port = 22 flags S/SA\n\
                    anchor \"maint\" all\n\
                    pass in proto tcp to port = 80 flags S/SA\n";
        let call = find_anchor_call(main, "maint").unwrap();
        assert_eq!(call.criteria, "all");
        assert_eq!(call.quick_before.len(), 1);
        assert!(find_anchor_call(main, "mai").is_none());
        assert!(find_anchor_call("anchor \"maint/*\" all\n", "maint").is_none());
    }

    #[test]
    fn parses_its_own_rule_as_pfctl_prints_it() {
        let pf = Pf::new("maint", "/nonexistent".into());
        let rule = "pass in quick on ! lo0 inet proto tcp from <maint_src> to any port = 443 \
                    flags S/SA label \"maint-redirect\" tag maint-until-1767225600 \
                    rdr-to 127.0.0.1 port 8504";
        let (port, until) = pf.parse_rule(rule).unwrap();
        assert_eq!(
            port,
            PortMap {
                public: 443,
                server: 8504
            }
        );
        assert_eq!(until, Some(1_767_225_600));
        assert!(pf.parse_rule("pass in all flags S/SA").is_err());
    }
}
