//! Reading maint's table back from the kernel: the policy it carries, after checking that
//! every chain, set and rule is exactly what maint would have loaded for that policy.
//!
//! The dumps (table, chains, sets, elements, rules) are separate requests, so they are taken
//! between two reads of the ruleset generation and retaken if anything changed in between;
//! the result is one consistent snapshot. Anything unexpected is an error, never a guess: a
//! table that only looks like maint's must not be reported (or later replaced) as maint's.

use anyhow::anyhow;

use super::netlink::{NlError, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use super::nla::{Attrs, Writer};
use super::rules::SetName;
use super::snapshot::{parse_exprs, ChainInfo, RuleInfo, SetInfo, Snapshot, TableInfo};
use super::stamp;
use super::uapi::*;
use super::verify;
use crate::Policy;

fn nft_type(msg: i32) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}

/// The table `inet <name>`, or None when it does not exist.
pub fn table(sock: &mut Socket, name: &str) -> Result<Option<TableInfo>, NlError> {
    let seq = sock.next_seq();
    let mut w = Writer::new();
    w.begin_nf(
        nft_type(libc::NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET as u8,
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
        NFPROTO_INET as u8,
        0,
    );
    for (ty, v) in attrs {
        w.put_str(*ty, v);
    }
    w.end();
    sock.dump_collect(&w.buf, seq, |m| each(m.nf_attrs()))
}

/// A dump of `msg` objects in table `name` (the kernel filters by the table attribute, and
/// so do we, in case an old kernel ignores the filter), each read by `read`.
fn dump_ours<T>(
    sock: &mut Socket,
    msg: i32,
    table_attr: u16,
    name: &str,
    mut read: impl FnMut(&Attrs<'_>) -> T,
) -> Result<Vec<T>, NlError> {
    dump(sock, msg, &[(table_attr, name)], |a| {
        (a.str(table_attr) == Some(name)).then(|| read(&a))
    })
}

fn snapshot(sock: &mut Socket, name: &str) -> Result<Option<Snapshot>, NlError> {
    let Some(info) = table(sock, name)? else {
        return Ok(None);
    };
    let chains = dump_ours(sock, libc::NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, name, |a| {
        ChainInfo {
            name: a.str(NFTA_CHAIN_NAME).unwrap_or("").to_owned(),
            kind: a.str(NFTA_CHAIN_TYPE).map(str::to_owned),
            hook: a.nested(NFTA_CHAIN_HOOK).and_then(|h| {
                Some((
                    h.be32(NFTA_HOOK_HOOKNUM)?,
                    h.be32(NFTA_HOOK_PRIORITY)? as i32,
                ))
            }),
            policy: a.be32(NFTA_CHAIN_POLICY),
        }
    })?;
    let sets = dump_ours(sock, libc::NFT_MSG_GETSET, NFTA_SET_TABLE, name, |a| {
        SetInfo {
            name: a.str(NFTA_SET_NAME).unwrap_or("").to_owned(),
            flags: a.be32(NFTA_SET_FLAGS).unwrap_or(0),
            key_len: a.be32(NFTA_SET_KEY_LEN).unwrap_or(0),
            has_data: a.get(NFTA_SET_DATA_TYPE).is_some(),
        }
    })?;
    let mut elements = Vec::new();
    // The pass sets hold admissions, which are not the policy.
    for set in SetName::POLICY {
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
    let rules = dump_ours(sock, libc::NFT_MSG_GETRULE, NFTA_RULE_TABLE, name, |a| {
        RuleInfo {
            chain: a.str(NFTA_RULE_CHAIN).unwrap_or("").to_owned(),
            exprs: a
                .nested(NFTA_RULE_EXPRESSIONS)
                .map(parse_exprs)
                .unwrap_or_default(),
        }
    })?;
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
        return verify::policy_of(name, snap)
            .map(Some)
            .map_err(ReadError::Foreign);
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
