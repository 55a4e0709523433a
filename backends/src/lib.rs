//! The firewall layer of maint.
//!
//! This crate owns two things: the [`Policy`] — a whole, declarative description of which
//! sources are sent to the maintenance server on which ports until when — and the [`Backend`]
//! contract that makes one firewall match a policy in a single atomic step. Each firewall lives
//! in its own module ([`nftables`] on Linux, [`pf`] for OpenBSD) and nothing outside this crate
//! knows how a firewall spells a rule.
//!
//! The controller in the `maint` binary decides *when* to apply, clear or kill states, and in
//! which order; a backend only knows *how* for its firewall. A backend never patches a policy
//! rule by rule: `apply` replaces everything maint owns at once (as Mullvad's talpid-core does),
//! so a failure half-way leaves the previous state in place.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

mod local;
#[cfg(target_os = "linux")]
pub mod nftables;
pub mod pf;
mod watch;

pub use local::LocalAddresses;
pub use watch::{Ears, Periodic, Seen, Watch};

/// One redirected port: TCP traffic to `public` from a matched source goes to `server` on this
/// host, where the maintenance server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMap {
    pub public: u16,
    pub server: u16,
}

impl std::fmt::Display for PortMap {
    /// `80→8503`, as `status`, `check` and logs show a redirect.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}→{}", self.public, self.server)
    }
}

impl PortMap {
    /// `80→8503, 443→8504`, or `none`.
    pub fn list(ports: &[PortMap]) -> String {
        if ports.is_empty() {
            return "none".into();
        }
        ports
            .iter()
            .map(PortMap::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The maintenance server's ports these maps redirect to, each once, ascending.
    pub fn servers(ports: &[PortMap]) -> Vec<u16> {
        let mut servers: Vec<u16> = ports.iter().map(|p| p.server).collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }
}

/// Everything a backend needs to put maintenance in place, and nothing it does not.
///
/// Build one with [`Policy::new`], which puts the prefix lists in canonical form (merged,
/// deduplicated, sorted, IPv4 before IPv6), so two policies that match the same packets compare
/// equal and a policy read back from the kernel equals the one applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Sources whose traffic is redirected (canonical; see [`canonical`]).
    pub sources: Vec<IpNet>,
    /// Sources never redirected, even when inside `sources`.
    pub exceptions: Vec<IpNet>,
    /// Redirected ports, sorted by public port, no duplicates.
    pub ports: Vec<PortMap>,
    /// Unix time (seconds) after which the redirect no longer applies. Backends whose kernel can
    /// expire rules by itself say so in [`Backend::expires_by_itself`].
    pub until: Option<u64>,
    /// A drain is under way (`maint on --drain`): connections open before it stay on the app
    /// until the controller ends it. Only backends that say [`Backend::drains_in_rules`] let
    /// it change their rules; the controller leaves it unset for the others.
    #[serde(default)]
    pub drain: bool,
}

impl Policy {
    pub fn new(
        sources: impl IntoIterator<Item = IpNet>,
        exceptions: impl IntoIterator<Item = IpNet>,
        ports: impl IntoIterator<Item = PortMap>,
        until: Option<u64>,
    ) -> Policy {
        let mut ports: Vec<PortMap> = ports.into_iter().collect();
        ports.sort();
        ports.dedup_by_key(|p| p.public);
        Policy {
            sources: canonical(sources),
            exceptions: canonical(exceptions),
            ports,
            until,
            drain: false,
        }
    }

    /// The same policy, draining or not.
    pub fn draining(mut self, drain: bool) -> Policy {
        self.drain = drain;
        self
    }

    /// The policy as the kernel applies it while these prefixes hold a pass: they are
    /// treated as exceptions, so killing the states that disagree spares their connections to
    /// the app. The prefixes themselves live in the firewall's pass set, not in the policy.
    pub fn with_passes(&self, passed: &[IpNet]) -> Policy {
        if passed.is_empty() {
            return self.clone();
        }
        Policy {
            exceptions: canonical(self.exceptions.iter().chain(passed).copied()),
            ..self.clone()
        }
    }

    /// The policy of `off`: nobody is redirected.
    pub fn nobody() -> Policy {
        Policy::new([], [], [], None)
    }

    /// Whether a packet from `addr` is redirected by this policy (ignoring ports and expiry).
    ///
    /// Called once per connection state when killing states, so it must not scan: with
    /// 100,000 prefixes a linear scan made 20,000 states take seconds. Canonical lists are
    /// sorted and disjoint, so a binary search finds the only prefix that can hold `addr`.
    pub fn matches(&self, addr: IpAddr) -> bool {
        let addr = unmap(addr);
        covered(&self.sources, addr) && !covered(&self.exceptions, addr)
    }

    /// Whether a TCP connection from `client` to `public_port` on this host is one this policy
    /// sends to the maintenance server: a redirected port, a matched source, and not the host
    /// itself (its own connections always reach the app, so the operator can test it).
    ///
    /// Both backends decide which app connections to cut with this, so "this host" means the
    /// same everywhere: every address of [`LocalAddresses`], loopback included.
    pub fn redirects(&self, client: IpAddr, public_port: u16, local: &LocalAddresses) -> bool {
        self.ports.iter().any(|p| p.public == public_port)
            && !local.contains(client)
            && self.matches(client)
    }

    /// Whether the window has closed at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        window_ended(self.until, now)
    }

    /// A short fingerprint of the whole policy: the first 64 bits of SHA-256 over its
    /// canonical form, in hex. Two policies that match the same packets until the same time
    /// have the same digest, so the kernel's copy and the state record can be compared by
    /// digest alone, at a cost that does not grow with the number of prefixes.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for list in [&self.sources, &self.exceptions] {
            h.update((list.len() as u64).to_be_bytes());
            for net in list {
                match net {
                    IpNet::V4(n) => {
                        h.update([4, n.prefix_len()]);
                        h.update(n.network().octets());
                    }
                    IpNet::V6(n) => {
                        h.update([6, n.prefix_len()]);
                        h.update(n.network().octets());
                    }
                }
            }
        }
        h.update((self.ports.len() as u64).to_be_bytes());
        for p in &self.ports {
            h.update(p.public.to_be_bytes());
            h.update(p.server.to_be_bytes());
        }
        h.update(self.until.map_or([0xff; 8], u64::to_be_bytes));
        // Only when set, so the digest of every policy stamped before drains existed stands.
        if self.drain {
            h.update(b"drain");
        }
        let out = h.finalize();
        out[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether a window ending at `until` (Unix seconds; `None`: no end) has closed at `now`.
pub fn window_ended(until: Option<u64>, now: SystemTime) -> bool {
    until.is_some_and(|u| now >= UNIX_EPOCH + Duration::from_secs(u))
}

/// What maint's rules in the kernel say about themselves, read at a cost that does not grow
/// with the number of prefixes: which policy (by [`Policy::digest`]), on which ports, until
/// when. `status`, an unchanged `on` and `off` need no more than this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    pub digest: String,
    pub ports: Vec<PortMap>,
    pub until: Option<u64>,
}

impl InForce {
    pub fn of(policy: &Policy) -> InForce {
        InForce {
            digest: policy.digest(),
            ports: policy.ports.clone(),
            until: policy.until,
        }
    }

    pub fn expired_at(&self, now: SystemTime) -> bool {
        window_ended(self.until, now)
    }
}

/// Whether `addr` lies in a canonical (sorted, disjoint, IPv4-first) prefix list.
fn covered(list: &[IpNet], addr: IpAddr) -> bool {
    let v4_end = list.partition_point(|n| matches!(n, IpNet::V4(_)));
    let family = if addr.is_ipv4() {
        &list[..v4_end]
    } else {
        &list[v4_end..]
    };
    // The last prefix starting at or before `addr` is the only candidate.
    let after = family.partition_point(|n| n.network() <= addr);
    after > 0 && family[after - 1].contains(&addr)
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are IPv4 clients on a dual-stack socket.
pub fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Canonical form of a prefix list: host bits cleared, overlapping and adjacent prefixes merged
/// into the fewest prefixes that cover exactly the same addresses, IPv4 first, each family
/// sorted. This is the form every backend stores and reads back.
pub fn canonical(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let nets: Vec<IpNet> = nets.into_iter().collect();
    // A list already in this form (a sorted alias file, a policy read back) is kept as it
    // is: checking takes one pass, where merging a million prefixes takes a sort.
    if is_canonical(&nets) {
        return nets;
    }
    let nets: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
    // `aggregate` splits by family itself and returns IPv4 then IPv6, each sorted.
    IpNet::aggregate(&nets)
}

/// Whether `nets` is what [`canonical`] would make of it: host bits cleared, IPv4 first,
/// each family sorted and disjoint, and no two neighbours that are the two halves of one
/// larger prefix (any set of prefixes that merges holds such a pair).
fn is_canonical(nets: &[IpNet]) -> bool {
    nets.iter().all(|n| n.addr() == n.network())
        && nets.windows(2).all(|w| {
            let (a, b) = (w[0], w[1]);
            match (a, b) {
                (IpNet::V4(a), IpNet::V4(b)) => {
                    a.broadcast() < b.network()
                        && !(a.prefix_len() == b.prefix_len() && a.supernet() == b.supernet())
                }
                (IpNet::V6(a), IpNet::V6(b)) => {
                    a.broadcast() < b.network()
                        && !(a.prefix_len() == b.prefix_len() && a.supernet() == b.supernet())
                }
                (IpNet::V4(_), IpNet::V6(_)) => true,
                (IpNet::V6(_), IpNet::V4(_)) => false,
            }
        })
}

/// The whole IPv4 and IPv6 address space: the `all` source.
pub fn everything() -> Vec<IpNet> {
    vec![
        IpNet::V4(Ipv4Net::new(0.into(), 0).expect("/0 is a valid prefix")),
        IpNet::V6(Ipv6Net::new(0u128.into(), 0).expect("/0 is a valid prefix")),
    ]
}

/// Errors a caller decides on. Everything else is [`BackendError::Failed`] with context.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The firewall is not set up to let maint work (pf disabled, no `anchor "maint"` line, no
    /// nf_tables in the kernel). `hint` tells the operator what to do.
    #[error("{problem}\n  hint: {hint}")]
    NotReady { problem: String, hint: String },
    /// maint lacks the privilege to talk to the firewall.
    #[error("permission denied talking to {firewall}: run maint as root (or with CAP_NET_ADMIN)")]
    Permission { firewall: &'static str },
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The contract every firewall backend fulfils.
///
/// Every method is safe to call when maint has nothing in place. No method may touch a table,
/// chain, anchor or rule that maint did not create, and none flushes the ruleset.
pub trait Backend: Send + Sync {
    /// Short name for logs and `status` ("nftables", "pf").
    fn name(&self) -> &'static str;

    /// Where maint's rules live, as the firewall's own tools name it: `table inet maint`,
    /// `anchor "maint"`. Used in every message about maint's state in the kernel.
    fn location(&self) -> String;

    /// Checks the firewall can carry a policy at all; returns warnings worth showing.
    fn preflight(&self) -> Result<Vec<String>>;

    /// Makes the kernel match `policy` in one atomic step, replacing whatever maint had in
    /// place. On error nothing has changed.
    fn apply(&self, policy: &Policy) -> Result<()>;

    /// The policy currently in the kernel, or `None` when maint has nothing in place. Reads
    /// every prefix back: its cost grows with the policy.
    fn current(&self) -> Result<Option<Policy>>;
    /// What is in force, without reading the prefixes back where the firewall can say it
    /// more cheaply (nftables: the stamp in the table's comment). `None` when maint has
    /// nothing in place.
    fn in_force(&self) -> Result<Option<InForce>> {
        Ok(self.current()?.as_ref().map(InForce::of))
    }
    /// A watch on the firewall for the keeper, which puts maint's rules back when someone
    /// else removes or changes them. By default it polls.
    fn watch(&self) -> Result<Box<dyn Watch>> {
        Ok(Box::new(Periodic))
    }

    /// What `apply(policy)` would load, in the firewall's own syntax, for `--dry-run`: a text
    /// an operator could load by hand (`nft -f`, `pfctl -a maint -f`). Touches nothing.
    fn render_apply(&self, policy: &Policy) -> String;

    /// What `clear` would do, for `maint off --dry-run`: the commands an operator would type,
    /// one per line, after a `#` comment saying what they remove. Touches nothing.
    fn render_clear(&self) -> String;

    /// Stops redirecting new connections, while the connections already redirected keep
    /// being translated, so the maintenance server can still answer them (the held requests
    /// that send visitors back): nftables keeps the nat chain and flushes its rules; pf keeps
    /// the states of removed rules by itself. `clear` removes the rest. Returns whether there
    /// was a redirect to remove.
    fn stop_new_redirects(&self) -> Result<bool>;

    /// Removes everything maint created. Returns whether there was anything to remove.
    fn clear(&self) -> Result<bool>;

    /// Removes every connection state that disagrees with `policy`, so each client's next
    /// packet meets the policy now in force, in whichever direction it changed: states of
    /// clients `policy` redirects that still reach the app, and states redirected to the
    /// maintenance server (through any of `redirected`: the port maps of this policy and the
    /// previous one) of clients `policy` no longer redirects. `off` passes
    /// [`Policy::nobody`]. Returns how many were removed.
    fn kill_disagreeing_states(&self, policy: &Policy, redirected: &[PortMap]) -> Result<usize>;

    /// Whether the kernel stops redirecting by itself at `policy.until`. When it cannot (pf),
    /// the controller schedules a `maint off` for the window's end.
    fn expires_by_itself(&self) -> bool;

    /// Whether [`Policy::drain`] changes this firewall's rules. nftables: yes, only
    /// connection-opening segments are redirected while draining, because a host that
    /// tracked no connections before the table was loaded picks up open ones mid-stream. pf:
    /// no, pf keeps state for every connection it passes, and a new rule never applies to an
    /// existing state.
    fn drains_in_rules(&self) -> bool {
        false
    }

    /// Lets `admission.net` through to the app (as if excepted) until `admission.until`,
    /// in maint's pass set, without touching anything else. Adding a prefix already there
    /// sets its end anew. Fails when maint has nothing in place.
    fn admit(&self, admission: &Admission) -> Result<()>;

    /// Takes these prefixes out of the pass set; one already gone (expired) is not an error.
    fn withdraw(&self, nets: &[IpNet]) -> Result<()>;

    /// Whether the kernel removes an admission by itself at its end (nftables' element
    /// timeouts). When it cannot (pf), the keeper withdraws it.
    fn admissions_expire_by_itself(&self) -> bool;

    /// Removes the states that send connections from `net` to the maintenance server
    /// (through a port map of `redirected`), except the connection from `spare`: the one that
    /// asked for the pass, which still has its answer to read. Returns how many went.
    fn kill_redirected_states_of(
        &self,
        net: IpNet,
        redirected: &[PortMap],
        spare: Option<std::net::SocketAddr>,
    ) -> Result<usize>;
}

/// A prefix let through by a pass, until a time (Unix seconds; `None`: until maintenance
/// ends, when maint's table or anchor goes and the pass set with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub net: IpNet,
    pub until: Option<u64>,
}

/// Which firewall to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Nftables,
    Pf,
}

impl Kind {
    /// The firewall this operating system ships.
    pub fn native() -> Option<Kind> {
        if cfg!(target_os = "linux") {
            Some(Kind::Nftables)
        } else if cfg!(target_os = "openbsd") {
            Some(Kind::Pf)
        } else {
            None
        }
    }
}

/// Which firewall to drive, with the settings only it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settings {
    /// nftables: maint's table, in family `inet`.
    Nftables { table: String },
    /// pf: maint's anchor, and the pfctl(8) program (tests put a fake one here).
    Pf {
        anchor: String,
        pfctl: std::path::PathBuf,
    },
}

impl Settings {
    pub fn kind(&self) -> Kind {
        match self {
            Settings::Nftables { .. } => Kind::Nftables,
            Settings::Pf { .. } => Kind::Pf,
        }
    }

    /// The name of maint's table or anchor.
    pub fn name(&self) -> &str {
        match self {
            Settings::Nftables { table } => table,
            Settings::Pf { anchor, .. } => anchor,
        }
    }
}

/// Builds the backend for `firewall`.
pub fn open(firewall: Settings) -> Result<Box<dyn Backend>> {
    match firewall {
        #[cfg(target_os = "linux")]
        Settings::Nftables { table } => Ok(Box::new(nftables::Nftables::new(table))),
        #[cfg(not(target_os = "linux"))]
        Settings::Nftables { .. } => Err(BackendError::NotReady {
            problem: "the nftables backend only exists on Linux".into(),
            hint: "set `backend = \"pf\"` under [firewall] in maint.toml".into(),
        }),
        Settings::Pf { anchor, pfctl } => Ok(Box::new(pf::Pf::new(&anchor, pfctl))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The shortcut never keeps a list that merging would change.
        #[test]
        fn a_list_taken_as_canonical_is_what_aggregate_makes_of_it(
            raw in proptest::collection::vec((0u32..64, 24u8..=32), 0..12)
        ) {
            let mut nets: Vec<IpNet> = raw
                .iter()
                .map(|&(i, len)| IpNet::V4(Ipv4Net::new((0xC000_0200 + i * 4).into(), len).unwrap().trunc()))
                .collect();
            nets.sort();
            if is_canonical(&nets) {
                proptest::prop_assert_eq!(IpNet::aggregate(&nets), nets.clone());
            }
            proptest::prop_assert_eq!(canonical(nets.clone()), IpNet::aggregate(&nets));
        }
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_canonical_shortcut_knows_siblings_overlaps_and_order() {
        assert!(is_canonical(&nets(&[
            "192.0.2.0/25",
            "198.51.100.0/24",
            "2001:db8::/32"
        ])));
        // Two halves of 192.0.2.0/24, an overlap, IPv6 before IPv4: not canonical.
        assert!(!is_canonical(&nets(&["192.0.2.0/25", "192.0.2.128/25"])));
        assert!(!is_canonical(&nets(&["192.0.2.0/24", "192.0.2.7/32"])));
        assert!(!is_canonical(&nets(&["2001:db8::/32", "192.0.2.0/24"])));
        assert_eq!(
            canonical(nets(&["192.0.2.0/25", "192.0.2.128/25"])),
            nets(&["192.0.2.0/24"])
        );
    }

    #[test]
    fn canonical_merges_overlaps_and_duplicates() {
        let got = canonical(nets(&[
            "198.51.100.0/25",
            "198.51.100.128/25",
            "198.51.100.7/32",
            "2001:db8::1/128",
            "2001:db8::/32",
            "192.0.2.9/24",
        ]));
        assert_eq!(
            got,
            nets(&["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"])
        );
    }

    #[test]
    fn matches_respects_exceptions_and_mapped_addresses() {
        let p = Policy::new(
            everything(),
            nets(&["203.0.113.0/24"]),
            [PortMap {
                public: 80,
                server: 8503,
            }],
            None,
        );
        assert!(p.matches("198.51.100.1".parse().unwrap()));
        assert!(!p.matches("203.0.113.5".parse().unwrap()));
        assert!(!p.matches("::ffff:203.0.113.5".parse().unwrap()));
        assert!(p.matches("2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn matches_agrees_with_a_plain_scan() {
        let p = Policy::new(
            nets(&[
                "10.0.0.0/8",
                "198.51.100.0/24",
                "192.0.2.128/25",
                "2001:db8::/32",
                "::/0",
            ]),
            nets(&["10.1.0.0/16", "198.51.100.7/32", "2001:db8:5::/48"]),
            [],
            None,
        );
        for a in [
            "10.0.0.1",
            "10.1.2.3",
            "9.255.255.255",
            "11.0.0.0",
            "198.51.100.7",
            "198.51.100.8",
            "192.0.2.127",
            "192.0.2.128",
            "192.0.2.255",
            "2001:db8:5::1",
            "2001:db8:6::1",
            "fe80::1",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            let scan = p.sources.iter().any(|n| n.contains(&ip))
                && !p.exceptions.iter().any(|n| n.contains(&ip));
            assert_eq!(p.matches(ip), scan, "{a}");
        }
    }

    #[test]
    fn ports_are_sorted_and_deduplicated() {
        let p = Policy::new(
            [],
            [],
            [
                PortMap {
                    public: 443,
                    server: 8504,
                },
                PortMap {
                    public: 80,
                    server: 8503,
                },
                PortMap {
                    public: 443,
                    server: 8504,
                },
            ],
            None,
        );
        assert_eq!(
            p.ports.iter().map(|p| p.public).collect::<Vec<_>>(),
            [80, 443]
        );
    }
}
