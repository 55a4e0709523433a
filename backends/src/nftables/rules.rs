//! The shape of maint's ruleset, written once and spelled two ways: as nft text (for
//! `--dry-run` and `nft -f`) and as nftnl expressions (for the netlink batch).
//!
//! Keeping one description means the rendered text and the loaded rules cannot drift apart,
//! and `current()` can check a table it finds against the rules this policy would produce.
//! The expression sequences are exactly what nft 1.0.6 generates for the same text (checked
//! with `nft --debug=netlink`), including its habit of emitting a protocol dependency once per
//! rule; a table loaded from the rendered text therefore reads back as maint's own.

use anyhow::Context;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Immediate, Ipv4HeaderField, Ipv6HeaderField, Meta,
    NetworkHeaderField, Payload, Register, RejectionType, TcpHeaderField, TransportHeaderField,
    Verdict,
};

use crate::Policy;

use super::chains::{INPUT, PREROUTING};
use super::exprs::{ct_bit, LookupSet, CT_DIRECTION, HTON64, META_TIME, REDIRECT, TCP_FLAGS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4,
    V6,
}

impl Ip {
    pub const BOTH: [Ip; 2] = [Ip::V4, Ip::V6];

    fn word(self) -> &'static str {
        match self {
            Ip::V4 => "ip",
            Ip::V6 => "ip6",
        }
    }

    pub fn family(self) -> super::intervals::Family {
        match self {
            Ip::V4 => super::intervals::Family::V4,
            Ip::V6 => super::intervals::Family::V6,
        }
    }
}

/// The six sets, in the order they are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetName {
    Sources(Ip),
    Exceptions(Ip),
    /// Sources let through by a pass link (`maint pass`): interval sets whose elements carry
    /// their own timeout, added one at a time by the keeper and never part of the policy, so
    /// they are left out of the digest and of the read-back.
    Passes(Ip),
}

impl SetName {
    pub const ALL: [SetName; 6] = [
        SetName::Sources(Ip::V4),
        SetName::Sources(Ip::V6),
        SetName::Exceptions(Ip::V4),
        SetName::Exceptions(Ip::V6),
        SetName::Passes(Ip::V4),
        SetName::Passes(Ip::V6),
    ];

    /// The sets that hold the policy's prefixes (what `current()` reads back).
    pub const POLICY: [SetName; 4] = [
        SetName::Sources(Ip::V4),
        SetName::Sources(Ip::V6),
        SetName::Exceptions(Ip::V4),
        SetName::Exceptions(Ip::V6),
    ];

    pub fn name(self) -> &'static str {
        match self {
            SetName::Sources(Ip::V4) => "src4",
            SetName::Sources(Ip::V6) => "src6",
            SetName::Exceptions(Ip::V4) => "exc4",
            SetName::Exceptions(Ip::V6) => "exc6",
            SetName::Passes(Ip::V4) => "pass4",
            SetName::Passes(Ip::V6) => "pass6",
        }
    }

    pub fn ip(self) -> Ip {
        match self {
            SetName::Sources(ip) | SetName::Exceptions(ip) | SetName::Passes(ip) => ip,
        }
    }

    /// Whether its elements carry timeouts (`flags interval, timeout`).
    pub fn timed(self) -> bool {
        matches!(self, SetName::Passes(_))
    }

    /// The pass set for `addr`'s family.
    pub fn passes_for(addr: std::net::IpAddr) -> SetName {
        SetName::Passes(if addr.is_ipv4() { Ip::V4 } else { Ip::V6 })
    }

    /// The `NFTA_SET_ID` that lets rules in the same batch refer to the set.
    pub fn id(self) -> u32 {
        SetName::ALL.iter().position(|s| *s == self).unwrap_or(0) as u32 + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// `ip saddr @set` / `ip6 saddr != @set`.
    Saddr {
        set: SetName,
        negate: bool,
    },
    TcpDport(u16),
    /// `tcp flags & (fin | syn | rst | ack) == syn`: a connection-opening segment. While a
    /// drain lasts only these are redirected (see [`rules`]).
    TcpSynOnly,
    /// `meta time < until` (seconds since the epoch): the kernel's own expiry.
    TimeBefore(u64),
    CtStatusDnat,
    CtStateInvalid,
    /// `ct direction reply`: the packet travels against the direction its state was created in.
    CtReply,
    IifLo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Return,
    Accept,
    Drop,
    RejectTcpReset,
    Redirect(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub chain: &'static str,
    pub matches: Vec<Match>,
    pub action: Action,
}

/// Every rule maint loads for `policy`, chain by chain, in order.
pub fn rules(policy: &Policy) -> Vec<RuleSpec> {
    let time: Vec<Match> = policy.until.map(Match::TimeBefore).into_iter().collect();
    let mut out = Vec::new();

    // prerouting: excepted sources and those a pass let through leave first; matched sources
    // on a public port are redirected to the server port on this host (no route_localnet
    // needed, works for IPv6).
    for set in [SetName::Exceptions, SetName::Passes] {
        for ip in Ip::BOTH {
            // ip saddr @exc4 return
            // ip saddr @pass4 return
            out.push(RuleSpec {
                chain: PREROUTING,
                matches: vec![Match::Saddr {
                    set: set(ip),
                    negate: false,
                }],
                action: Action::Return,
            });
        }
    }
    for p in &policy.ports {
        for ip in Ip::BOTH {
            let mut m = vec![
                Match::Saddr {
                    set: SetName::Sources(ip),
                    negate: false,
                },
                Match::TcpDport(p.public),
            ];
            // While draining, only a connection's first segment is redirected: on a host
            // where nothing tracked connections before maint's table was loaded, a segment of
            // an open connection creates its state mid-stream (loose pickup) and would
            // otherwise be redirected to a server that never saw the connection and resets it.
            if policy.drain {
                m.push(Match::TcpSynOnly);
            }
            m.extend(&time);
            // ip saddr @src4 tcp dport 80 [tcp flags syn / fin,syn,rst,ack]
            //     [meta time < UNTIL] redirect to :8503
            out.push(RuleSpec {
                chain: PREROUTING,
                matches: m,
                action: Action::Redirect(p.server),
            });
        }
    }

    // input: the server's own ports take only redirected traffic and the host's own.
    for p in &policy.ports {
        // tcp dport 8503 ct status dnat accept
        out.push(RuleSpec {
            chain: INPUT,
            matches: vec![Match::TcpDport(p.server), Match::CtStatusDnat],
            action: Action::Accept,
        });
    }
    // iif "lo" accept
    out.push(RuleSpec {
        chain: INPUT,
        matches: vec![Match::IifLo],
        action: Action::Accept,
    });
    for p in &policy.ports {
        // tcp dport 8503 drop
        out.push(RuleSpec {
            chain: INPUT,
            matches: vec![Match::TcpDport(p.server)],
            action: Action::Drop,
        });
    }
    // A matched client whose established state we deleted must not keep talking to the app:
    // - with nf_conntrack_tcp_loose=0 its next segment is INVALID, NAT never sees it, and it
    //   would still reach the app's socket;
    // - with loose pickup (the default), the *app's* next segment may come first and create
    //   the state in the reverse direction, after which the client's segments are replies
    //   that NAT never sees either. A client's own connection to a public port always has its
    //   state in the original direction, so a reply-direction segment from it is one of these.
    // Resetting either makes the client reconnect, and the new connection meets the redirect.
    // The port and state checks come first because this chain sees every input packet.
    // While draining, open connections are meant to stay on the app (and on a host that
    // tracked nothing before, their states may be picked up in either direction), so these
    // rules come with the end of the drain, when the states are killed.
    if policy.drain {
        return out;
    }
    for state in [Match::CtStateInvalid, Match::CtReply] {
        for p in &policy.ports {
            for ip in Ip::BOTH {
                let mut m = vec![
                    Match::TcpDport(p.public),
                    state,
                    Match::Saddr {
                        set: SetName::Exceptions(ip),
                        negate: true,
                    },
                    Match::Saddr {
                        set: SetName::Passes(ip),
                        negate: true,
                    },
                    Match::Saddr {
                        set: SetName::Sources(ip),
                        negate: false,
                    },
                ];
                m.extend(&time);
                // tcp dport 80 ct state invalid ip saddr != @exc4 ip saddr != @pass4
                //     ip saddr @src4 [meta time < UNTIL] reject with tcp reset
                // (and the same with `ct direction reply` for `ct state invalid`)
                out.push(RuleSpec {
                    chain: INPUT,
                    matches: m,
                    action: Action::RejectTcpReset,
                });
            }
        }
    }
    out
}

/// `policy`'s rules, each built on its chain from `chains` (as `batch::chains` makes them):
/// what `apply` sends and what `current` expects to read back.
pub fn built<'a>(
    chains: &'a [nftnl::Chain<'a>],
    policy: &Policy,
) -> anyhow::Result<Vec<(RuleSpec, nftnl::Rule<'a>)>> {
    rules(policy)
        .into_iter()
        .map(|spec| {
            let chain = chains
                .iter()
                .find(|c| c.get_name().to_bytes() == spec.chain.as_bytes())
                .expect("every rule names one of our chains");
            let mut rule = nftnl::Rule::new(chain);
            spec.build(&mut rule)?;
            Ok((spec, rule))
        })
        .collect()
}

impl RuleSpec {
    /// The rule in nft syntax (one line, no indentation).
    pub fn text(&self) -> String {
        let mut words: Vec<String> = self
            .matches
            .iter()
            .map(|m| match *m {
                Match::Saddr { set, negate } => format!(
                    "{} saddr {}@{}",
                    set.ip().word(),
                    if negate { "!= " } else { "" },
                    set.name()
                ),
                Match::TcpDport(p) => format!("tcp dport {p}"),
                Match::TcpSynOnly => "tcp flags syn / fin,syn,rst,ack".into(),
                Match::TimeBefore(t) => format!("meta time < {t}"),
                Match::CtStatusDnat => "ct status dnat".into(),
                Match::CtStateInvalid => "ct state invalid".into(),
                Match::CtReply => "ct direction reply".into(),
                Match::IifLo => "iif \"lo\"".into(),
            })
            .collect();
        words.push(match self.action {
            Action::Return => "return".into(),
            Action::Accept => "accept".into(),
            Action::Drop => "drop".into(),
            Action::RejectTcpReset => "reject with tcp reset".into(),
            Action::Redirect(p) => format!("redirect to :{p}"),
        });
        words.join(" ")
    }

    /// Appends this rule's expressions to `rule`.
    pub fn build(&self, rule: &mut nftnl::Rule<'_>) -> anyhow::Result<()> {
        // nft loads a protocol dependency once per rule; so do we (see the module docs).
        let mut have_nfproto = None;
        let mut have_l4proto = false;
        for m in &self.matches {
            match *m {
                Match::Saddr { set, negate } => {
                    if have_nfproto != Some(set.ip()) {
                        rule.add_expr(&Meta::NfProto);
                        let proto = match set.ip() {
                            Ip::V4 => libc::NFPROTO_IPV4 as u8,
                            Ip::V6 => libc::NFPROTO_IPV6 as u8,
                        };
                        rule.add_expr(&Cmp::new(CmpOp::Eq, [proto].as_slice()));
                        have_nfproto = Some(set.ip());
                    }
                    rule.add_expr(&Payload::Network(match set.ip() {
                        Ip::V4 => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
                        Ip::V6 => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
                    }));
                    rule.add_expr(&LookupSet::new(set.name(), set.id(), negate));
                }
                Match::TcpDport(port) => {
                    if !have_l4proto {
                        rule.add_expr(&Meta::L4Proto);
                        rule.add_expr(&Cmp::new(CmpOp::Eq, [libc::IPPROTO_TCP as u8].as_slice()));
                        have_l4proto = true;
                    }
                    rule.add_expr(&Payload::Transport(TransportHeaderField::Tcp(
                        TcpHeaderField::Dport,
                    )));
                    rule.add_expr(&Cmp::new(CmpOp::Eq, port.to_be_bytes().as_slice()));
                }
                Match::TcpSynOnly => {
                    // Always after a `tcp dport`, which loaded the l4proto dependency.
                    rule.add_expr(&TCP_FLAGS);
                    // FIN|SYN|RST|ACK = 0x17; equal to SYN (0x02) alone.
                    rule.add_expr(&Bitwise::new([0x17u8].as_slice(), [0u8].as_slice()));
                    rule.add_expr(&Cmp::new(CmpOp::Eq, [0x02u8].as_slice()));
                }
                Match::TimeBefore(secs) => {
                    let ns = secs
                        .checked_mul(1_000_000_000)
                        .with_context(|| format!("until={secs} is too far in the future"))?;
                    rule.add_expr(&META_TIME);
                    // `meta time` is host-endian and cmp compares bytes: nft turns it
                    // big-endian first so `<` orders numerically; the constant is big-endian.
                    rule.add_expr(&HTON64);
                    rule.add_expr(&Cmp::new(CmpOp::Lt, ns.to_be_bytes().as_slice()));
                }
                Match::CtStatusDnat => ct_bit(rule, Conntrack::Status, 0x20),
                Match::CtStateInvalid => ct_bit(rule, Conntrack::State, 0x01),
                Match::CtReply => {
                    rule.add_expr(&CT_DIRECTION);
                    // enum ip_conntrack_dir: IP_CT_DIR_REPLY = 1, a one-byte key.
                    rule.add_expr(&Cmp::new(CmpOp::Eq, [1u8].as_slice()));
                }
                Match::IifLo => {
                    rule.add_expr(&Meta::Iif);
                    // The loopback device is ifindex 1 in every network namespace.
                    rule.add_expr(&Cmp::new(CmpOp::Eq, 1u32.to_ne_bytes().as_slice()));
                }
            }
        }
        match self.action {
            Action::Return => rule.add_expr(&Verdict::Return),
            Action::Accept => rule.add_expr(&Verdict::Accept),
            Action::Drop => rule.add_expr(&Verdict::Drop),
            Action::RejectTcpReset => rule.add_expr(&Verdict::Reject(RejectionType::TcpRst)),
            Action::Redirect(port) => {
                rule.add_expr(&Immediate::new(port.to_be(), Register::Reg1));
                rule.add_expr(&REDIRECT);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortMap;

    #[test]
    fn rule_text_for_a_timed_policy() {
        let p = Policy::new(
            crate::everything(),
            [],
            [PortMap {
                public: 80,
                server: 8503,
            }],
            Some(1_700_000_000),
        );
        let text: Vec<String> = rules(&p)
            .iter()
            .map(|r| format!("{}: {}", r.chain, r.text()))
            .collect();
        assert_eq!(
            text,
            [
                "prerouting: ip saddr @exc4 return",
                "prerouting: ip6 saddr @exc6 return",
                "prerouting: ip saddr @pass4 return",
                "prerouting: ip6 saddr @pass6 return",
                "prerouting: ip saddr @src4 tcp dport 80 meta time < 1700000000 redirect to :8503",
                "prerouting: ip6 saddr @src6 tcp dport 80 meta time < 1700000000 redirect to :8503",
                "input: tcp dport 8503 ct status dnat accept",
                "input: iif \"lo\" accept",
                "input: tcp dport 8503 drop",
                "input: tcp dport 80 ct state invalid ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 meta time < 1700000000 reject with tcp reset",
                "input: tcp dport 80 ct state invalid ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 meta time < 1700000000 reject with tcp reset",
                "input: tcp dport 80 ct direction reply ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 meta time < 1700000000 reject with tcp reset",
                "input: tcp dport 80 ct direction reply ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 meta time < 1700000000 reject with tcp reset",
            ]
        );
    }

    #[test]
    fn a_draining_policy_redirects_only_syns_and_resets_nothing() {
        let p = Policy::new(
            crate::everything(),
            [],
            [PortMap {
                public: 80,
                server: 8503,
            }],
            None,
        )
        .draining(true);
        let text: Vec<String> = rules(&p)
            .iter()
            .map(|r| format!("{}: {}", r.chain, r.text()))
            .collect();
        assert_eq!(
            text,
            [
                "prerouting: ip saddr @exc4 return",
                "prerouting: ip6 saddr @exc6 return",
                "prerouting: ip saddr @pass4 return",
                "prerouting: ip6 saddr @pass6 return",
                "prerouting: ip saddr @src4 tcp dport 80 tcp flags syn / fin,syn,rst,ack redirect to :8503",
                "prerouting: ip6 saddr @src6 tcp dport 80 tcp flags syn / fin,syn,rst,ack redirect to :8503",
                "input: tcp dport 8503 ct status dnat accept",
                "input: iif \"lo\" accept",
                "input: tcp dport 8503 drop",
            ]
        );
        assert_ne!(p.digest(), p.clone().draining(false).digest());
    }

    #[test]
    fn set_ids_are_distinct_and_nonzero() {
        let ids: Vec<u32> = SetName::ALL.iter().map(|s| s.id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    }
}
