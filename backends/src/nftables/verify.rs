//! Checking that a table found under maint's name is exactly what maint would have loaded
//! for the policy its stamp and sets describe: every chain, set and rule. Anything else is an
//! error, never a guess, so a table that only looks like maint's is never reported (or later
//! replaced) as maint's.

use std::ffi::{c_void, CString};

use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use nftnl::{MsgType, NlMsg, ProtoFamily};

use super::chains::{BaseChain, INPUT, PREROUTING};
use super::intervals::{self, Family};
use super::nla::{self, Attrs};
use super::rules::{self, SetName};
use super::snapshot::{parse_exprs, ChainInfo, Expr, RuleInfo, Snapshot};
use super::stamp::Stamp;
use super::uapi::*;
use crate::Policy;

pub(super) fn policy_of(name: &str, snap: Snapshot) -> anyhow::Result<Policy> {
    let what = format!("table inet {name}");
    let comment = snap
        .info
        .comment
        .as_deref()
        .with_context(|| format!("{what} exists but has no maint stamp in its comment"))?;
    let stamp = Stamp::parse(comment).with_context(|| format!("{what} has an unreadable stamp"))?;
    if snap.info.flags != 0 {
        bail!(
            "{what} has table flags {:#x}; maint never sets any",
            snap.info.flags
        );
    }

    check_chains(&what, &snap.chains)?;

    let mut names: Vec<&str> = snap.sets.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = SetName::ALL.iter().map(|s| s.name()).collect();
    want.sort_unstable();
    if names != want {
        bail!("{what} has sets {names:?}, maint makes exactly {want:?}");
    }
    for s in &snap.sets {
        let set = SetName::ALL
            .into_iter()
            .find(|n| n.name() == s.name)
            .expect("names checked above");
        let key_len = set.ip().family().key_len() as u32;
        let flags = if set.timed() {
            NFT_SET_INTERVAL | NFT_SET_TIMEOUT
        } else {
            NFT_SET_INTERVAL
        };
        if s.flags != flags || s.key_len != key_len || s.has_data {
            bail!(
                "{what}: set {} is not an interval set of {key_len}-byte addresses with \
                 flags {flags:#x} (flags {:#x}, key length {})",
                s.name,
                s.flags,
                s.key_len
            );
        }
    }

    let mut sources: Vec<IpNet> = Vec::new();
    let mut exceptions: Vec<IpNet> = Vec::new();
    for (set, elems) in snap.elements {
        let family: Family = set.ip().family();
        let ranges = intervals::ranges_from_elements(family, elems)
            .map_err(|e| anyhow!("{what}: set {}: {e}", set.name()))?;
        let nets = ranges.into_iter().flat_map(|r| intervals::cidrs(family, r));
        match set {
            SetName::Sources(_) => sources.extend(nets),
            SetName::Exceptions(_) => exceptions.extend(nets),
            SetName::Passes(_) => {}
        }
    }
    let policy =
        Policy::new(sources, exceptions, stamp.ports.clone(), stamp.until).draining(stamp.drain);
    if policy.ports != stamp.ports {
        bail!(
            "{what}: the stamp's port map {:?} is not in canonical order",
            stamp.ports
        );
    }

    check_rules(&what, name, &policy, &snap.rules)?;
    Ok(policy)
}

fn check_chains(what: &str, chains: &[ChainInfo]) -> anyhow::Result<()> {
    let mut names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if names != [INPUT, PREROUTING] {
        bail!("{what} has chains {names:?}, maint makes exactly [\"{INPUT}\", \"{PREROUTING}\"]");
    }
    for c in chains {
        let def = BaseChain::named(&c.name).expect("names checked above");
        let (kind, hook, prio) = (def.kind(), def.hook_number(), def.priority);
        if c.kind.as_deref() != Some(kind)
            || c.hook != Some((hook, prio))
            || c.policy != Some(libc::NF_ACCEPT as u32)
        {
            bail!(
                "{what}: chain {} is {:?} hook {:?} policy {:?}, maint makes type {kind} \
                 hook {hook} priority {prio} policy accept",
                c.name,
                c.kind,
                c.hook,
                c.policy
            );
        }
    }
    Ok(())
}

/// The expressions maint would load for `policy`, encoded as libnftnl encodes them.
fn expected_rules(name: &str, policy: &Policy) -> anyhow::Result<Vec<RuleInfo>> {
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let table = nftnl::Table::new(&cname, ProtoFamily::Inet);
    let chains = super::batch::chains(&table);
    let mut buf = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
    let mut out = Vec::new();
    for (spec, rule) in rules::built(&chains, policy)? {
        // SAFETY: `buf` is nft_nlmsg_maxsize() bytes, the most one rule message can take.
        unsafe { rule.write(buf.as_mut_ptr() as *mut c_void, 0, MsgType::Add) };
        let msg = nla::messages(&buf)
            .next()
            .context("libnftnl built no rule message")?;
        out.push(RuleInfo {
            chain: spec.chain.to_owned(),
            exprs: msg
                .nf_attrs()
                .nested(NFTA_RULE_EXPRESSIONS)
                .map(parse_exprs)
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn check_rules(what: &str, name: &str, policy: &Policy, found: &[RuleInfo]) -> anyhow::Result<()> {
    let expected = expected_rules(name, policy)?;
    let specs = rules::rules(policy);
    for chain in [PREROUTING, INPUT] {
        let want: Vec<(&RuleInfo, String)> = expected
            .iter()
            .zip(&specs)
            .filter(|(r, _)| r.chain == chain)
            .map(|(r, s)| (r, s.text()))
            .collect();
        let got: Vec<&RuleInfo> = found.iter().filter(|r| r.chain == chain).collect();
        if want.len() != got.len() {
            bail!(
                "{what}: chain {chain} has {} rules where maint's policy (per the stamp) \
                 has {}",
                got.len(),
                want.len()
            );
        }
        for (i, ((w, text), g)) in want.iter().zip(&got).enumerate() {
            if let Some(diff) = rule_difference(&w.exprs, &g.exprs) {
                bail!(
                    "{what}: rule {} of chain {chain} is not `{text}`: {diff}",
                    i + 1
                );
            }
        }
    }
    if let Some(r) = found
        .iter()
        .find(|r| r.chain != PREROUTING && r.chain != INPUT)
    {
        bail!("{what}: a rule sits in unknown chain {}", r.chain);
    }
    Ok(())
}

/// Whether two attribute payloads are equal, looking through nested attributes: libnftnl
/// flags nested attributes NLA_F_NESTED where the kernel's dump does not.
fn same_value(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match (exact_attrs(a), exact_attrs(b)) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|((tx, vx), (ty, vy))| tx == ty && same_value(vx, vy))
        }
        _ => false,
    }
}

/// `v` as a list of attributes, if it is exactly that (every byte accounted for).
fn exact_attrs(v: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let attrs: Vec<(u16, &[u8])> = Attrs::new(v).collect();
    let used: usize = attrs.iter().map(|(_, p)| nla::align(4 + p.len())).sum();
    (!attrs.is_empty() && used == nla::align(v.len())).then_some(attrs)
}

/// Whether the kernel's dump of a rule is the rule maint sends; if not, where they differ.
/// The kernel echoes what it was given, except that it never reports a lookup's batch-local
/// set id, reports defaults (zero) for attributes left out, and reports a redirect's port range
/// end as its start.
fn rule_difference(sent: &[Expr], dumped: &[Expr]) -> Option<String> {
    if sent.len() != dumped.len() {
        return Some(format!(
            "{} expressions where maint loads {}",
            dumped.len(),
            sent.len()
        ));
    }
    for (i, ((sn, sa), (dn, da))) in sent.iter().zip(dumped).enumerate() {
        if sn != dn {
            return Some(format!("expression {} is {dn:?}, not {sn:?}", i + 1));
        }
        let find = |attrs: &[(u16, Vec<u8>)], ty: u16| {
            attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.clone())
        };
        let mut types: Vec<u16> = sa.iter().chain(da).map(|(t, _)| *t).collect();
        types.sort_unstable();
        types.dedup();
        for ty in types {
            if sn == "lookup" && ty == NFTA_LOOKUP_SET_ID {
                continue;
            }
            let (a, b) = (find(sa, ty), find(da, ty));
            let same = match (&a, &b) {
                (Some(a), Some(b)) => same_value(a, b),
                (None, Some(b)) => {
                    b.iter().all(|x| *x == 0)
                        || (sn == "redir"
                            && ty == NFTA_REDIR_REG_PROTO_MAX
                            && find(sa, NFTA_REDIR_REG_PROTO_MIN).as_ref() == Some(b))
                }
                (Some(a), None) => a.iter().all(|x| *x == 0),
                (None, None) => true,
            };
            if !same {
                return Some(format!(
                    "expression {} ({sn}) attribute {ty} is {b:02x?}, maint loads {a:02x?}",
                    i + 1
                ));
            }
        }
    }
    None
}
