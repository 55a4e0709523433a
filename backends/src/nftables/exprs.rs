//! The nf_tables expressions maint builds by hand, for what the nftnl crate cannot say (a
//! lookup in a set of the same batch, `meta time`, `ct direction`, the TCP flags byte,
//! `redir`), each exactly as nft 1.0.6 encodes it.

use std::ffi::CString;
use std::ptr;

use nftnl::expr::{Bitwise, Cmp, CmpOp, Conntrack, Expression};
use nftnl::nftnl_sys as sys;

/// `ct <key> <bit>`: load, mask, compare against zero (host-endian, as the kernel keeps it).
pub(super) fn ct_bit(rule: &mut nftnl::Rule<'_>, key: Conntrack, bit: u32) {
    rule.add_expr(&key);
    rule.add_expr(&Bitwise::new(
        bit.to_ne_bytes().as_slice(),
        0u32.to_ne_bytes().as_slice(),
    ));
    rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32.to_ne_bytes().as_slice()));
}

/// A new expression `name` with these u32 attributes set: every hand-built expression below
/// is only that (plus a set name for lookups).
fn expr_with(name: &std::ffi::CStr, attrs: &[(u32, u32)]) -> ptr::NonNull<sys::nftnl_expr> {
    // SAFETY: allocation only; libnftnl returns null solely when out of memory, and the
    // nftnl crate aborts then too.
    let expr = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
    let e = ptr::NonNull::new(expr).unwrap_or_else(|| std::process::abort());
    for &(attr, value) in attrs {
        // SAFETY: `e` is a live expression we own; setting a u32 attribute copies the value.
        unsafe { sys::nftnl_expr_set_u32(e.as_ptr(), attr as u16, value) };
    }
    e
}

const REG_1: u32 = libc::NFT_REG_1 as u32;

/// A lookup naming a set of this batch (by name and id), optionally inverted.
pub(super) struct LookupSet {
    name: CString,
    id: u32,
    negate: bool,
}

impl LookupSet {
    /// The set by name and batch id (`SetName::name`, `SetName::id`).
    pub(super) fn new(name: &str, id: u32, negate: bool) -> Self {
        LookupSet {
            name: CString::new(name).expect("set names have no NUL"),
            id,
            negate,
        }
    }
}

impl Expression for LookupSet {
    fn to_expr(&self, _rule: &nftnl::Rule<'_>) -> ptr::NonNull<sys::nftnl_expr> {
        let mut attrs = vec![
            (sys::NFTNL_EXPR_LOOKUP_SREG, REG_1),
            (sys::NFTNL_EXPR_LOOKUP_SET_ID, self.id),
        ];
        if self.negate {
            attrs.push((sys::NFTNL_EXPR_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32));
        }
        let e = expr_with(c"lookup", &attrs);
        // SAFETY: `e` is live; libnftnl copies the NUL-terminated name.
        unsafe {
            sys::nftnl_expr_set_str(
                e.as_ptr(),
                sys::NFTNL_EXPR_LOOKUP_SET as u16,
                self.name.as_ptr(),
            )
        };
        e
    }
}

/// An expression that is only its name and u32 attributes, for those the nftnl crate lacks.
pub(super) struct Simple {
    name: &'static std::ffi::CStr,
    attrs: &'static [(u32, u32)],
}

impl Expression for Simple {
    fn to_expr(&self, _rule: &nftnl::Rule<'_>) -> ptr::NonNull<sys::nftnl_expr> {
        expr_with(self.name, self.attrs)
    }
}

/// `meta time` (nanoseconds since the epoch) into register 1. The nftnl crate lacks the key.
pub(super) const META_TIME: Simple = Simple {
    name: c"meta",
    attrs: &[
        (sys::NFTNL_EXPR_META_KEY, NFT_META_TIME_NS),
        (sys::NFTNL_EXPR_META_DREG, REG_1),
    ],
};

/// `payload load 1b @ transport header + 13 => reg 1`: the TCP flags byte, which the nftnl
/// crate's `TcpHeaderField` cannot name.
pub(super) const TCP_FLAGS: Simple = Simple {
    name: c"payload",
    attrs: &[
        (sys::NFTNL_EXPR_PAYLOAD_DREG, REG_1),
        (
            sys::NFTNL_EXPR_PAYLOAD_BASE,
            libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
        ),
        (sys::NFTNL_EXPR_PAYLOAD_OFFSET, 13),
        (sys::NFTNL_EXPR_PAYLOAD_LEN, 1),
    ],
};

/// NFT_CT_DIRECTION from linux/netfilter/nf_tables.h (enum nft_ct_keys); the nftnl crate's
/// `Conntrack` has no direction key.
const NFT_CT_DIRECTION: u32 = 1;

/// `ct direction` into register 1.
pub(super) const CT_DIRECTION: Simple = Simple {
    name: c"ct",
    attrs: &[
        (sys::NFTNL_EXPR_CT_KEY, NFT_CT_DIRECTION),
        (sys::NFTNL_EXPR_CT_DREG, REG_1),
    ],
};

/// NFT_META_TIME_NS from linux/netfilter/nf_tables.h (kernel 5.4+).
const NFT_META_TIME_NS: u32 = 30;

/// `byteorder reg 1 = hton(reg 1, 8, 8)`.
pub(super) const HTON64: Simple = Simple {
    name: c"byteorder",
    attrs: &[
        (sys::NFTNL_EXPR_BYTEORDER_SREG, REG_1),
        (sys::NFTNL_EXPR_BYTEORDER_DREG, REG_1),
        (
            sys::NFTNL_EXPR_BYTEORDER_OP,
            libc::NFT_BYTEORDER_HTON as u32,
        ),
        (sys::NFTNL_EXPR_BYTEORDER_LEN, 8),
        (sys::NFTNL_EXPR_BYTEORDER_SIZE, 8),
    ],
};

/// `redirect to :<port in register 1>`. The nftnl crate has dnat/snat but not redir.
pub(super) const REDIRECT: Simple = Simple {
    name: c"redir",
    attrs: &[
        (sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN, REG_1),
        (sys::NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
    ],
};

/// NF_NAT_RANGE_PROTO_SPECIFIED from linux/netfilter/nf_nat.h.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
