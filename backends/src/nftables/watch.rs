//! The keeper's watch on nf_tables: the kernel announces every committed change on the
//! NFNLGRP_NFTABLES multicast group (what `nft monitor` prints), so maint learns of an
//! `nft flush ruleset` or a reload at once instead of reading its whole table every second.
//!
//! Each transaction is announced as the messages it committed followed by one NEWGEN naming
//! the process that committed it. A transaction that touched maint's table is reported as
//! [`Seen::EditedByOthers`] unless maint itself committed it (`on`, `off`, a repair), which
//! the keeper need not look at. When the kernel had to drop announcements (ENOBUFS: a large
//! `on` announces every set element), what they said is unknown, and the keeper compares
//! the stamp.

use std::time::{Duration, Instant};

use super::netlink::{Membership, Socket};
use super::nla::{messages, Attrs};
use super::uapi::*;
use crate::{Ears, Result, Seen, Watch};

/// The process name (task comm) maint's own transactions carry.
const OUR_COMM: &str = "maint";

pub struct NftWatch {
    sock: Socket,
    table: String,
    /// Our table was touched by the transaction being announced.
    touched: bool,
}

impl NftWatch {
    pub fn new(table: &str) -> Result<NftWatch> {
        let sock =
            Socket::open().map_err(|e| super::nl_error("opening a netfilter netlink socket", e))?;
        sock.subscribe(NFNLGRP_NFTABLES)
            .map_err(|e| super::nl_error("listening to nf_tables announcements", e))?;
        Ok(NftWatch {
            sock,
            table: table.to_owned(),
            touched: false,
        })
    }
}

/// What one announcement means for maint's table `table`.
#[derive(Debug, PartialEq, Eq)]
enum Announcement {
    /// A change to `table` (or one of its chains, sets, elements, rules).
    OurTable,
    /// The end of a transaction, committed by the process named so.
    Committed(Option<String>),
    Other,
}

fn classify(ty: u16, attrs: Attrs<'_>, table: &str) -> Announcement {
    if ty >> 8 != NFNL_SUBSYS_NFTABLES {
        return Announcement::Other;
    }
    let msg = i32::from(ty & 0xff);
    if msg == libc::NFT_MSG_NEWGEN {
        return Announcement::Committed(attrs.str(NFTA_GEN_PROC_NAME).map(str::to_owned));
    }
    // Tables, chains, rules, sets and element lists all name their table in attribute 1.
    const TABLE_ATTR: u16 = NFTA_TABLE_NAME;
    const _: () = assert!(
        NFTA_CHAIN_TABLE == TABLE_ATTR
            && NFTA_RULE_TABLE == TABLE_ATTR
            && NFTA_SET_TABLE == TABLE_ATTR
            && NFTA_SET_ELEM_LIST_TABLE == TABLE_ATTR
    );
    if attrs.str(TABLE_ATTR) == Some(table) {
        Announcement::OurTable
    } else {
        Announcement::Other
    }
}

struct NftEars(Membership);

impl Ears for NftEars {
    fn deafen(&self) -> Result<()> {
        self.0
            .set(NFNLGRP_NFTABLES, false)
            .map_err(|e| super::nl_error("leaving the nf_tables announcements", e))
    }

    fn listen(&self) -> Result<()> {
        self.0
            .set(NFNLGRP_NFTABLES, true)
            .map_err(|e| super::nl_error("listening to nf_tables announcements", e))
    }
}

impl Watch for NftWatch {
    fn ears(&self) -> Option<Box<dyn Ears>> {
        self.sock
            .membership()
            .ok()
            .map(|m| Box::new(NftEars(m)) as Box<dyn Ears>)
    }

    fn wait(&mut self, timeout: Duration) -> Result<Seen> {
        let deadline = Instant::now() + timeout;
        let mut seen = Seen::Nothing;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Once something was seen, only drain what is already queued.
            let wait = if seen == Seen::Nothing {
                left
            } else {
                Duration::ZERO
            };
            let datagram = match self.sock.recv_announcements(wait) {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(seen),
                Err(e) if e.errno == libc::ENOBUFS => {
                    self.touched = false;
                    seen = seen.max(Seen::Changed);
                    continue;
                }
                Err(e) => return Err(super::nl_error("reading nf_tables announcements", e)),
            };
            for msg in messages(datagram) {
                match classify(msg.ty, msg.nf_attrs(), &self.table) {
                    Announcement::OurTable => self.touched = true,
                    Announcement::Committed(comm) => {
                        if std::mem::take(&mut self.touched) && comm.as_deref() != Some(OUR_COMM) {
                            seen = Seen::EditedByOthers;
                        }
                    }
                    Announcement::Other => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::nla::Writer;

    fn attrs_of(w: &Writer) -> Vec<u8> {
        w.buf[16 + 4..].to_vec()
    }

    #[test]
    fn announcements_name_our_table_or_the_committer() {
        let mut w = Writer::new();
        w.begin_nf(
            (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_DELSETELEM as u16,
            0,
            0,
            1,
            0,
        );
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, "maint");
        w.end();
        let a = attrs_of(&w);
        assert_eq!(
            classify(
                (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_DELSETELEM as u16,
                Attrs::new(&a),
                "maint"
            ),
            Announcement::OurTable
        );
        assert_eq!(
            classify(
                (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_DELSETELEM as u16,
                Attrs::new(&a),
                "other"
            ),
            Announcement::Other
        );
        let mut g = Writer::new();
        g.begin_nf(
            (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWGEN as u16,
            0,
            0,
            0,
            0,
        );
        g.put_be32(NFTA_GEN_ID, 7);
        g.put_str(NFTA_GEN_PROC_NAME, "nft");
        g.end();
        let a = attrs_of(&g);
        assert_eq!(
            classify(
                (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWGEN as u16,
                Attrs::new(&a),
                "maint"
            ),
            Announcement::Committed(Some("nft".into()))
        );
    }
}
