//! Reading maint's table back from the kernel: the policy it carries, after checking that
//! every chain, set and rule is exactly what maint would have loaded for that policy.
//!
//! The dumps (table, chains, sets, elements, rules) are separate requests, so they are taken
//! between two reads of the ruleset generation and retaken if anything changed in between;
//! the result is one consistent snapshot. Anything unexpected is an error, never a guess: a
//! table that only looks like maint's must not be reported (or later replaced) as maint's.

use std::ffi::{c_void, CString};

use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use nftnl::{MsgType, NlMsg, ProtoFamily};

use super::intervals::{self, Family};
use super::netlink::{NlError, Socket};
use super::nla::{self, Attrs, Writer};
use super::rules::{self, SetName, INPUT, INPUT_PRIORITY, PREROUTING, PREROUTING_PRIORITY};
use super::stamp::{self, Stamp};
use crate::Policy;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NFPROTO_INET: u8 = libc::NFPROTO_INET as u8;

// Attribute numbers from linux/netfilter/nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_REG_PROTO_MAX: u16 = 2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

fn nft_type(msg: i32) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}

/// What a GETTABLE says about a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub comment: Option<String>,
    pub flags: u32,
}

impl TableInfo {
    /// Whether maint created the table (any stamp version, so an older maint's table can still
    /// be cleared).
    pub fn is_ours(&self) -> bool {
        self.comment
            .as_deref()
            .is_some_and(|c| c.starts_with(stamp::MARK))
    }
}

/// The table `inet <name>`, or None when it does not exist.
pub fn table(sock: &mut Socket, name: &str) -> Result<Option<TableInfo>, NlError> {
    let seq = sock.next_seq();
    let mut w = Writer::new();
    w.begin_nf(
        nft_type(libc::NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
    );
    w.put_str(NFTA_TABLE_NAME, name);
    w.end();
    let mut info = None;
    let r = sock.request(&w.buf, seq, |msg| {
        let a = msg.nf_attrs();
        if a.str(NFTA_TABLE_NAME) == Some(name) {
            info = Some(TableInfo {
                comment: a
                    .get(NFTA_TABLE_USERDATA)
                    .and_then(stamp::comment)
                    .map(str::to_owned),
                flags: a.be32(NFTA_TABLE_FLAGS).unwrap_or(0),
            });
        }
    });
    match r {
        Ok(()) => Ok(info),
        Err(e) if e.errno == libc::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

fn generation(sock: &mut Socket) -> Result<u32, NlError> {
    let seq = sock.next_seq();
    let mut w = Writer::new();
    w.begin_nf(
        nft_type(libc::NFT_MSG_GETGEN),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        0,
    );
    w.end();
    let mut gen = None;
    sock.request(&w.buf, seq, |msg| gen = msg.nf_attrs().be32(NFTA_GEN_ID))?;
    gen.ok_or(NlError {
        errno: libc::EPROTO,
        detail: Some("no generation id in NEWGEN".into()),
    })
}

/// Runs a dump of `msg` type restricted to our table, collecting whatever `each` returns.
fn dump<T>(
    sock: &mut Socket,
    msg: i32,
    attrs: &[(u16, &str)],
    mut each: impl FnMut(Attrs<'_>) -> Option<T>,
) -> Result<Vec<T>, NlError> {
    let seq = sock.next_seq();
    let mut w = Writer::new();
    w.begin_nf(
        nft_type(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    for (ty, v) in attrs {
        w.put_str(*ty, v);
    }
    w.end();
    let mut out = Vec::new();
    sock.dump(&w.buf, seq, |m| {
        out.extend(each(m.nf_attrs()));
        Ok(())
    })?;
    Ok(out)
}

#[derive(Debug)]
struct ChainInfo {
    name: String,
    kind: Option<String>,
    hook: Option<(u32, i32)>,
    policy: Option<u32>,
}

#[derive(Debug)]
struct SetInfo {
    name: String,
    flags: u32,
    key_len: u32,
    has_data: bool,
}

/// One expression: its name and attributes (type, payload) as the kernel encodes them.
type Expr = (String, Vec<(u16, Vec<u8>)>);

#[derive(Debug)]
struct RuleInfo {
    chain: String,
    exprs: Vec<Expr>,
}

fn parse_exprs(list: Attrs<'_>) -> Vec<Expr> {
    list.filter(|(ty, _)| *ty == 1) // NFTA_LIST_ELEM
        .map(|(_, e)| {
            let e = Attrs::new(e);
            let name = e.str(NFTA_EXPR_NAME).unwrap_or("").to_owned();
            let data = e
                .get(NFTA_EXPR_DATA)
                .map(|d| Attrs::new(d).map(|(t, v)| (t, v.to_vec())).collect())
                .unwrap_or_default();
            (name, data)
        })
        .collect()
}

/// Everything the kernel holds under our table, taken as one snapshot.
struct Snapshot {
    info: TableInfo,
    chains: Vec<ChainInfo>,
    sets: Vec<SetInfo>,
    elements: Vec<(SetName, Vec<(u128, bool)>)>,
    rules: Vec<RuleInfo>,
}

fn snapshot(sock: &mut Socket, name: &str) -> Result<Option<Snapshot>, NlError> {
    let Some(info) = table(sock, name)? else {
        return Ok(None);
    };
    let chains = dump(
        sock,
        libc::NFT_MSG_GETCHAIN,
        &[(NFTA_CHAIN_TABLE, name)],
        |a| {
            (a.str(NFTA_CHAIN_TABLE) == Some(name)).then(|| ChainInfo {
                name: a.str(NFTA_CHAIN_NAME).unwrap_or("").to_owned(),
                kind: a.str(NFTA_CHAIN_TYPE).map(str::to_owned),
                hook: a.nested(NFTA_CHAIN_HOOK).and_then(|h| {
                    Some((
                        h.be32(NFTA_HOOK_HOOKNUM)?,
                        h.be32(NFTA_HOOK_PRIORITY)? as i32,
                    ))
                }),
                policy: a.be32(NFTA_CHAIN_POLICY),
            })
        },
    )?;
    let sets = dump(sock, libc::NFT_MSG_GETSET, &[(NFTA_SET_TABLE, name)], |a| {
        (a.str(NFTA_SET_TABLE) == Some(name)).then(|| SetInfo {
            name: a.str(NFTA_SET_NAME).unwrap_or("").to_owned(),
            flags: a.be32(NFTA_SET_FLAGS).unwrap_or(0),
            key_len: a.be32(NFTA_SET_KEY_LEN).unwrap_or(0),
            has_data: a.get(NFTA_SET_DATA_TYPE).is_some(),
        })
    })?;
    let mut elements = Vec::new();
    for set in SetName::ALL {
        if !sets.iter().any(|s| s.name == set.name()) {
            continue;
        }
        let family = set.ip().family();
        let mut bad = None;
        let chunks = dump(
            sock,
            libc::NFT_MSG_GETSETELEM,
            &[
                (NFTA_SET_ELEM_LIST_TABLE, name),
                (NFTA_SET_ELEM_LIST_SET, set.name()),
            ],
            |a| {
                let list = a.nested(NFTA_SET_ELEM_LIST_ELEMENTS)?;
                let mut v = Vec::new();
                for (_, el) in list {
                    let el = Attrs::new(el);
                    let key = el
                        .nested(NFTA_SET_ELEM_KEY)
                        .and_then(|k| k.get(NFTA_DATA_VALUE))
                        .and_then(|k| family.parse_key(k));
                    match key {
                        Some(k) => {
                            let flags = el.be32(NFTA_SET_ELEM_FLAGS).unwrap_or(0);
                            v.push((k, flags & NFT_SET_ELEM_INTERVAL_END != 0));
                        }
                        None => bad = Some(set),
                    }
                }
                Some(v)
            },
        )?;
        if let Some(set) = bad {
            return Err(NlError {
                errno: libc::EPROTO,
                detail: Some(format!("set {} holds a key of the wrong size", set.name())),
            });
        }
        elements.push((set, chunks.into_iter().flatten().collect()));
    }
    let rules = dump(
        sock,
        libc::NFT_MSG_GETRULE,
        &[(NFTA_RULE_TABLE, name)],
        |a| {
            (a.str(NFTA_RULE_TABLE) == Some(name)).then(|| RuleInfo {
                chain: a.str(NFTA_RULE_CHAIN).unwrap_or("").to_owned(),
                exprs: a
                    .nested(NFTA_RULE_EXPRESSIONS)
                    .map(parse_exprs)
                    .unwrap_or_default(),
            })
        },
    )?;
    Ok(Some(Snapshot {
        info,
        chains,
        sets,
        elements,
        rules,
    }))
}

/// Reads the policy in table `inet <name>`; `Ok(None)` if the table does not exist.
pub fn current(sock: &mut Socket, name: &str) -> Result<Option<Policy>, ReadError> {
    for _ in 0..10 {
        let before = generation(sock)?;
        let snap = match snapshot(sock, name) {
            Ok(s) => s,
            Err(e) if e.errno == libc::EINTR => continue,
            Err(e) => return Err(e.into()),
        };
        if generation(sock)? != before {
            continue;
        }
        let Some(snap) = snap else { return Ok(None) };
        return policy_of(name, snap).map(Some).map_err(ReadError::Foreign);
    }
    Err(ReadError::Foreign(anyhow!(
        "the ruleset kept changing while reading table inet {name}; try again"
    )))
}

/// Why reading failed: the kernel refused, or the table is not what maint would have made.
#[derive(Debug)]
pub enum ReadError {
    Netlink(NlError),
    Foreign(anyhow::Error),
}

impl From<NlError> for ReadError {
    fn from(e: NlError) -> Self {
        ReadError::Netlink(e)
    }
}

fn policy_of(name: &str, snap: Snapshot) -> anyhow::Result<Policy> {
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
        if s.flags != NFT_SET_INTERVAL || s.key_len != key_len || s.has_data {
            bail!(
                "{what}: set {} is not an interval set of {key_len}-byte addresses \
                 (flags {:#x}, key length {})",
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
        }
    }
    let policy = Policy::new(sources, exceptions, stamp.ports.clone(), stamp.until);
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
        let (kind, hook, prio) = if c.name == PREROUTING {
            ("nat", libc::NF_INET_PRE_ROUTING as u32, PREROUTING_PRIORITY)
        } else {
            ("filter", libc::NF_INET_LOCAL_IN as u32, INPUT_PRIORITY)
        };
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
