//! Numbers from the kernel's nf_tables uapi headers (linux/netfilter/nf_tables.h,
//! nfnetlink.h) that libnftnl does not export, named as the headers name them. One place, so
//! the batch, the read-back and the checks cannot disagree on one.

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// The `inet` family maint's table lives in, as netlink headers and libnftnl take it.
pub const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;

// Attribute numbers from linux/netfilter/nf_tables.h.
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_FLAGS: u16 = 2;
pub const NFTA_TABLE_USERDATA: u16 = 6;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_GEN_ID: u16 = 1;
pub const NFTA_GEN_PROC_NAME: u16 = 3;
/// The multicast group every committed ruleset change is announced to (nfnetlink.h).
pub const NFNLGRP_NFTABLES: u32 = 7;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;
pub const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
pub const NFTA_REDIR_REG_PROTO_MAX: u16 = 2;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_TIMEOUT: u32 = 0x10;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
