//! nftables backend (Linux): one `inet` table owned by maint, replaced in one netlink batch.
//!
//! The table holds four interval sets (sources and exceptions, IPv4 and IPv6) and two base
//! chains: `prerouting` (nat, priority -110) redirects matched sources' public ports to the
//! maintenance server's ports on this host, expiring by itself with `meta time`; `input`
//! (filter, priority -10) keeps the server's ports closed to everything but redirected and
//! local traffic, and resets matched clients whose killed state left them INVALID. The table
//! comment is maint's stamp: ownership plus the port map and expiry (see `stamp`).
//!
//! Layout: `batch` builds what changes the kernel, `read` reads it back and `verify` checks
//! it is exactly maint's, `render` spells the same thing in nft syntax, `chains` and `rules`
//! are the one description of the chains and rules all of them share, `conntrack` kills states, `netlink`/`nla` carry the bytes, `intervals`
//! converts prefixes to set elements and back.

mod batch;
mod chains;
mod conntrack;
mod exprs;
mod intervals;
mod netlink;
mod nla;
mod read;
mod render;
mod rules;
mod snapshot;
mod stamp;
mod uapi;
mod verify;
mod watch;

use anyhow::anyhow;

use self::netlink::{NlError, Socket};
use crate::{Admission, Backend, BackendError, InForce, Policy, PortMap, Result, Watch};
use ipnet::IpNet;

const FIREWALL: &str = "nftables";

pub struct Nftables {
    /// maint's table, in family `inet`.
    table: String,
}

impl Nftables {
    pub fn new(table: String) -> Self {
        Nftables { table }
    }

    /// Test support: `apply`, but the batch ends with a message the kernel refuses (a chain in
    /// a table that does not exist), to show that a refused batch leaves the old table as is.
    #[cfg(feature = "test-hooks")]
    pub fn apply_refused_for_test(&self, policy: &Policy) -> Result<()> {
        self.apply_batch(policy, batch::Ending::Refused)
    }

    fn apply_batch(&self, policy: &Policy, ending: batch::Ending) -> Result<()> {
        let mut sock = self.open()?;
        self.check_ownership(&mut sock, "replace")?;
        let batch = batch::apply(&mut sock, &self.table, policy, ending)?;
        let pages = batch.pages();
        sock.batch(&pages, batch.begin_seq(), &batch.expected())
            .map_err(|(seq, e)| {
                nl_error(
                    format!(
                        "nf_tables refused the new {} at {}",
                        self.location(),
                        batch.describe(seq)
                    ),
                    e,
                )
            })
    }

    fn open(&self) -> Result<Socket> {
        Socket::open().map_err(|e| nl_error("opening a netfilter netlink socket", e))
    }

    /// Runs the transaction `build` makes on maint's table, if there is one and it is maint's
    /// (`action` says what for the refusal). Returns whether there was a table to change.
    fn change_own_table(
        &self,
        action: &str,
        build: fn(&mut Socket, &str) -> anyhow::Result<batch::Batch>,
    ) -> Result<bool> {
        let mut sock = self.open()?;
        if self.check_ownership(&mut sock, action)?.is_none() {
            return Ok(false);
        }
        let batch = build(&mut sock, &self.table)?;
        match sock.batch(&batch.pages(), batch.begin_seq(), &batch.expected()) {
            Ok(()) => Ok(true),
            // Gone between our look and the change: nothing left to change.
            Err((_, e)) if e.errno == libc::ENOENT => Ok(false),
            Err((seq, e)) => Err(nl_error(
                format!("nf_tables refused {}", batch.describe(seq)),
                e,
            )),
        }
    }

    /// Refuses to go on when a table of our name exists that maint did not create.
    fn check_ownership(
        &self,
        sock: &mut Socket,
        action: &str,
    ) -> Result<Option<snapshot::TableInfo>> {
        let info = read::table(sock, &self.table)
            .map_err(|e| nl_error(format!("reading {}", self.location()), e))?;
        if let Some(i) = &info {
            if !i.is_ours() {
                return Err(anyhow!(
                    "{} exists but was not created by maint (its comment is {:?}); refusing to \
                     {action} it. Pick another table name in maint.toml, or remove that table \
                     yourself if it is a leftover.",
                    self.location(),
                    i.comment.as_deref().unwrap_or("")
                )
                .into());
            }
        }
        Ok(info)
    }
}

/// Maps a kernel error to what the caller decides on; `context` says what we were doing.
fn nl_error(context: impl std::fmt::Display, e: NlError) -> BackendError {
    if e.is_permission() {
        return BackendError::Permission { firewall: FIREWALL };
    }
    match e.errno {
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => BackendError::NotReady {
            problem: format!("{context}: {e}: this kernel has no netfilter netlink"),
            hint: "use a kernel with nf_tables (CONFIG_NF_TABLES), or the pf backend elsewhere"
                .into(),
        },
        libc::EOPNOTSUPP if context.to_string().starts_with("reading") => BackendError::NotReady {
            problem: format!("{context}: {e}: nf_tables is not available"),
            hint: "load the nf_tables module (modprobe nf_tables) or use a kernel with it".into(),
        },
        _ => BackendError::Failed(anyhow!("{context}: {e}")),
    }
}

impl Backend for Nftables {
    fn name(&self) -> &'static str {
        FIREWALL
    }

    fn location(&self) -> String {
        format!("table inet {}", self.table)
    }

    fn preflight(&self) -> Result<Vec<String>> {
        let mut sock = self.open()?;
        let mut warnings = Vec::new();
        let info = read::table(&mut sock, &self.table)
            .map_err(|e| nl_error(format!("reading {}", self.location()), e))?;
        match info {
            Some(i) if !i.is_ours() => warnings.push(format!(
                "{} exists but was not created by maint; maint will refuse to replace it",
                self.location()
            )),
            Some(_) => {
                // The stamp only: reading every prefix back would cost seconds for a large
                // policy, on every `on`.
                if let Err(e) = self.in_force() {
                    warnings.push(format!(
                        "{} carries maint's stamp but does not read back: {e}",
                        self.location()
                    ));
                }
            }
            None => {}
        }
        Ok(warnings)
    }

    fn apply(&self, policy: &Policy) -> Result<()> {
        self.apply_batch(policy, batch::Ending::Commit)
    }

    fn current(&self) -> Result<Option<Policy>> {
        let mut sock = self.open()?;
        read::current(&mut sock, &self.table).map_err(|e| match e {
            read::ReadError::Netlink(e) => nl_error(format!("reading {}", self.location()), e),
            read::ReadError::Foreign(e) => BackendError::Failed(e.context(format!(
                "{} does not look like maint's; not touching it",
                self.location()
            ))),
        })
    }

    /// The stamp in the table's comment says what is in force (one small GETTABLE, whatever
    /// the number of prefixes); a table stamped before digests existed is read in full.
    fn in_force(&self) -> Result<Option<InForce>> {
        let mut sock = self.open()?;
        let Some(info) = self.check_ownership(&mut sock, "read")? else {
            return Ok(None);
        };
        let comment = info.comment.as_deref().unwrap_or("");
        let stamp = stamp::Stamp::parse(comment).map_err(|e| {
            BackendError::Failed(e.context(format!(
                "{} carries an unreadable stamp; not touching it",
                self.location()
            )))
        })?;
        match stamp.digest {
            Some(digest) => Ok(Some(InForce {
                digest,
                ports: stamp.ports,
                until: stamp.until,
            })),
            None => Ok(self.current()?.as_ref().map(InForce::of)),
        }
    }

    fn watch(&self) -> Result<Box<dyn Watch>> {
        Ok(Box::new(watch::NftWatch::new(&self.table)?))
    }

    fn render_apply(&self, policy: &Policy) -> String {
        render::apply(&self.table, policy)
            .unwrap_or_else(|e| format!("# maint: cannot render this policy: {e:#}\n"))
    }

    fn render_clear(&self) -> String {
        render::clear(&self.table)
    }

    // nft flush chain inet maint prerouting
    fn stop_new_redirects(&self) -> Result<bool> {
        self.change_own_table("change", batch::flush_redirects)
    }

    // nft delete table inet maint
    fn clear(&self) -> Result<bool> {
        self.change_own_table("delete", batch::clear)
    }

    fn kill_disagreeing_states(&self, policy: &Policy, redirected: &[PortMap]) -> Result<usize> {
        conntrack::kill(policy, redirected).map_err(|e| {
            nl_error(
                "killing connection states that disagree with the policy over ctnetlink",
                e,
            )
        })
    }

    fn expires_by_itself(&self) -> bool {
        true
    }

    fn drains_in_rules(&self) -> bool {
        true
    }

    // nft add element inet maint pass4 { 192.0.2.7 timeout 3600s }
    fn admit(&self, admission: &Admission) -> Result<()> {
        let mut sock = self.open()?;
        if self.check_ownership(&mut sock, "change")?.is_none() {
            return Err(anyhow!(
                "{} is not loaded: a pass only works while maintenance is on",
                self.location()
            )
            .into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let batch = batch::admit(&mut sock, &self.table, admission, now)?;
        sock.batch(&batch.pages(), batch.begin_seq(), &batch.expected())
            .map_err(|(seq, e)| nl_error(format!("nf_tables refused {}", batch.describe(seq)), e))
    }

    // nft delete element inet maint pass4 { 192.0.2.7 }
    fn withdraw(&self, nets: &[IpNet]) -> Result<()> {
        let mut sock = self.open()?;
        if self.check_ownership(&mut sock, "change")?.is_none() {
            return Ok(());
        }
        for net in nets {
            let batch = batch::withdraw(&mut sock, &self.table, net)?;
            match sock.batch(&batch.pages(), batch.begin_seq(), &batch.expected()) {
                // Expired already (or the table went meanwhile).
                Err((_, e)) if e.errno == libc::ENOENT => {}
                Err((seq, e)) => {
                    return Err(nl_error(
                        format!("nf_tables refused {}", batch.describe(seq)),
                        e,
                    ))
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    fn admissions_expire_by_itself(&self) -> bool {
        true
    }

    fn kill_redirected_states_of(
        &self,
        net: IpNet,
        redirected: &[PortMap],
        spare: Option<std::net::SocketAddr>,
    ) -> Result<usize> {
        conntrack::kill_where(|e| conntrack::redirected_from(&net, redirected, spare, e))
            .map_err(|e| nl_error(format!("killing the redirected states of {net}"), e))
    }
}
