//! Building the netlink batches that change the kernel: `apply` (replace maint's table with
//! one matching a policy) and `clear` (delete it), each one nf_tables transaction.
//!
//! `apply` is `NEWTABLE; DELTABLE; NEWTABLE <full contents>` — the trick `nft -f` uses for
//! "add table; delete table; table { ... }": the first message creates the table if it is
//! missing so the delete cannot fail, and the kernel swaps old for new at commit, or keeps the
//! old one if any message is refused. Every message but the batch markers asks for an ack, so
//! exactly one answer comes back per message and an error names the message it belongs to.

use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;

use anyhow::{bail, Context};
use nftnl::nftnl_sys as sys;
use nftnl::{Chain, MsgType, NlMsg, ProtoFamily};

use super::chains::CHAINS;
use super::intervals::{self, Element, Family};
use super::netlink::Socket;
use super::rules::{self, SetName};
use super::stamp::{self, Stamp};
use super::uapi::{NFPROTO_INET, NFT_SET_ELEM_INTERVAL_END, NFT_SET_INTERVAL, NFT_SET_TIMEOUT};
use crate::{Admission, Policy};

/// nft's datatype numbers for set keys (TYPE_IPADDR, TYPE_IP6ADDR), so `nft list` prints
/// addresses, and its userdata saying the key is big-endian (NFTNL_UDATA_SET_KEYBYTEORDER).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const SET_UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
/// NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN: tells `nft list` that a start
/// element has no end because its range runs to the top of the address space.
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];
/// Elements per NEWSETELEM message: at most ~40 bytes each, well inside a message's 64 KiB.
const ELEMS_PER_MSG: usize = 1024;
/// libnftnl batch page; pages are joined into one datagram by `Socket::send`.
const PAGE: u32 = 2 << 20;

pub struct Batch {
    raw: NonNull<sys::nftnl_batch>,
    begin_seq: u32,
    /// Sequence number and description of every message that will be answered.
    sent: Vec<(u32, String)>,
    finished: bool,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from nftnl_batch_alloc and is freed once, here.
        unsafe { sys::nftnl_batch_free(self.raw.as_ptr()) };
    }
}

impl Batch {
    pub fn new(sock: &mut Socket) -> anyhow::Result<Batch> {
        // SAFETY: a plain allocation; a null result (out of memory) is checked below.
        let raw = NonNull::new(unsafe { sys::nftnl_batch_alloc(PAGE, nftnl::nft_nlmsg_maxsize()) })
            .context("out of memory allocating a netlink batch")?;
        let mut b = Batch {
            raw,
            begin_seq: sock.next_seq(),
            sent: Vec::new(),
            finished: false,
        };
        // SAFETY: the batch's current buffer has room for at least one message (PAGE bytes).
        unsafe { sys::nftnl_batch_begin(b.buffer(), b.begin_seq) };
        b.update()?;
        Ok(b)
    }

    fn buffer(&self) -> *mut c_char {
        // SAFETY: `raw` is a live batch; this only returns the write position inside it.
        unsafe { sys::nftnl_batch_buffer(self.raw.as_ptr()) as *mut c_char }
    }

    fn update(&mut self) -> anyhow::Result<()> {
        // SAFETY: `raw` is a live batch whose current buffer holds one message just written.
        if unsafe { sys::nftnl_batch_update(self.raw.as_ptr()) } < 0 {
            bail!("out of memory growing a netlink batch");
        }
        Ok(())
    }

    /// Writes one message with `write(buffer, seq)`; `what` names it in errors.
    fn add(
        &mut self,
        sock: &mut Socket,
        what: String,
        write: impl FnOnce(*mut c_char, u32),
    ) -> anyhow::Result<()> {
        let seq = sock.next_seq();
        write(self.buffer(), seq);
        self.update()?;
        self.sent.push((seq, what));
        Ok(())
    }

    fn finish(&mut self, sock: &mut Socket) -> anyhow::Result<()> {
        let seq = sock.next_seq();
        // SAFETY: as in `new`: the current buffer has room for the end marker.
        unsafe { sys::nftnl_batch_end(self.buffer(), seq) };
        self.update()?;
        self.finished = true;
        Ok(())
    }

    /// The batch as byte slices (libnftnl pages), to be sent as one datagram.
    pub fn pages(&self) -> Vec<&[u8]> {
        debug_assert!(self.finished);
        // SAFETY: `raw` is a live, finished batch; the iovecs point into its own pages, which
        // live as long as `self`, and so do the slices returned (they borrow `self`).
        let n = unsafe { sys::nftnl_batch_iovec_len(self.raw.as_ptr()) } as usize;
        let mut iov = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            n
        ];
        // SAFETY: `iov` has exactly the `n` entries libnftnl asked for.
        unsafe { sys::nftnl_batch_iovec(self.raw.as_ptr(), iov.as_mut_ptr().cast(), n as u32) };
        iov.iter()
            // SAFETY: each iovec describes bytes of a page owned by the batch (see above).
            .map(|v| unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) })
            .collect()
    }

    pub fn begin_seq(&self) -> u32 {
        self.begin_seq
    }

    pub fn expected(&self) -> Vec<u32> {
        self.sent.iter().map(|(s, _)| *s).collect()
    }

    /// What the message with sequence number `seq` was, for error messages.
    pub fn describe(&self, seq: u32) -> String {
        self.sent
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| "the batch as a whole".into())
    }
}

/// NEWTABLE or DELTABLE for `inet <name>`, with the stamp as userdata when given.
fn table_msg(buf: *mut c_char, seq: u32, ty: i32, name: &CString, udata: Option<&[u8]>) {
    // SAFETY: the table object is allocated, filled from live Rust values that outlive the
    // calls, serialised into `buf` (room for one message, see `Batch::add`) and freed here.
    unsafe {
        let t = sys::nftnl_table_alloc();
        if t.is_null() {
            std::process::abort();
        }
        sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FAMILY as u16, NFPROTO_INET as u32);
        sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
        if let Some(ud) = udata {
            sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FLAGS as u16, 0);
            sys::nftnl_table_set_data(
                t,
                sys::NFTNL_TABLE_USERDATA as u16,
                ud.as_ptr() as *const c_void,
                ud.len() as u32,
            );
        }
        let flags = if ty == libc::NFT_MSG_NEWTABLE {
            libc::NLM_F_CREATE | libc::NLM_F_ACK
        } else {
            libc::NLM_F_ACK
        };
        let nlh = sys::nftnl_nlmsg_build_hdr(buf, ty as u16, NFPROTO_INET, flags as u16, seq);
        sys::nftnl_table_nlmsg_build_payload(nlh, t);
        sys::nftnl_table_free(t);
    }
}

/// An nftnl_set naming one of our sets; `full` adds what NEWSET needs beyond the name.
fn set_obj(table: &CString, set: SetName, full: bool) -> *mut sys::nftnl_set {
    let name = CString::new(set.name()).expect("set names have no NUL");
    // SAFETY: libnftnl copies every string and blob it is given; the caller frees the set.
    unsafe {
        let s = sys::nftnl_set_alloc();
        if s.is_null() {
            std::process::abort();
        }
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, NFPROTO_INET as u32);
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, set.id());
        if full {
            let family = set.ip().family();
            let key_type = match family {
                Family::V4 => TYPE_IPADDR,
                Family::V6 => TYPE_IP6ADDR,
            };
            let flags = if set.timed() {
                NFT_SET_INTERVAL | NFT_SET_TIMEOUT
            } else {
                NFT_SET_INTERVAL
            };
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, flags);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, family.key_len() as u32);
            sys::nftnl_set_set_data(
                s,
                sys::NFTNL_SET_USERDATA as u16,
                SET_UDATA_KEY_BIG_ENDIAN.as_ptr() as *const c_void,
                SET_UDATA_KEY_BIG_ENDIAN.len() as u32,
            );
        }
        s
    }
}

fn newset_msg(buf: *mut c_char, seq: u32, table: &CString, set: SetName) {
    // SAFETY: as in `table_msg`: one message into `buf`, the set freed after use.
    unsafe {
        let s = set_obj(table, set, true);
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16;
        let nlh =
            sys::nftnl_nlmsg_build_hdr(buf, libc::NFT_MSG_NEWSET as u16, NFPROTO_INET, flags, seq);
        sys::nftnl_set_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    }
}

/// What a set-element message does.
#[derive(Clone, Copy)]
enum ElemMsg {
    /// NEWSETELEM; `timeout_ms` on each start element, for the timed sets.
    Add { timeout_ms: Option<u64> },
    /// DELSETELEM.
    Delete,
}

fn newsetelem_msg(buf: *mut c_char, seq: u32, table: &CString, set: SetName, elems: &[Element]) {
    setelem_msg(
        buf,
        seq,
        table,
        set,
        elems,
        ElemMsg::Add { timeout_ms: None },
    )
}

fn setelem_msg(
    buf: *mut c_char,
    seq: u32,
    table: &CString,
    set: SetName,
    elems: &[Element],
    op: ElemMsg,
) {
    let family = set.ip().family();
    // SAFETY: as in `table_msg`; every element is added to the set, which owns and frees it.
    unsafe {
        let s = set_obj(table, set, false);
        for el in elems {
            let e = sys::nftnl_set_elem_alloc();
            if e.is_null() {
                std::process::abort();
            }
            let key = family.key(el.key);
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr() as *const c_void,
                key.len() as u32,
            );
            if el.end {
                sys::nftnl_set_elem_set_u32(
                    e,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    NFT_SET_ELEM_INTERVAL_END,
                );
            } else if let ElemMsg::Add {
                timeout_ms: Some(ms),
            } = op
            {
                sys::nftnl_set_elem_set_u64(e, sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
            }
            if el.open {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    ELEM_UDATA_INTERVAL_OPEN.as_ptr() as *const c_void,
                    ELEM_UDATA_INTERVAL_OPEN.len() as u32,
                );
            }
            sys::nftnl_set_elem_add(s, e);
        }
        let (ty, flags) = match op {
            ElemMsg::Add { .. } => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            ElemMsg::Delete => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        let nlh = sys::nftnl_nlmsg_build_hdr(buf, ty as u16, NFPROTO_INET, flags as u16, seq);
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    }
}

/// The elements each set gets for `policy`.
pub fn set_elements(policy: &Policy, set: SetName) -> Vec<Element> {
    let family = set.ip().family();
    let nets = match set {
        SetName::Sources(_) => &policy.sources,
        SetName::Exceptions(_) => &policy.exceptions,
        // Filled one admission at a time by `admit`, never by `apply`.
        SetName::Passes(_) => return Vec::new(),
    };
    intervals::elements(family, &intervals::ranges(family, nets))
}

/// The elements of one prefix in its family's pass set.
fn pass_elements(net: &ipnet::IpNet) -> (SetName, Vec<Element>) {
    let set = SetName::passes_for(net.addr());
    let family = set.ip().family();
    (
        set,
        intervals::elements(family, &intervals::ranges(family, [net])),
    )
}

/// The `admit` transaction: one prefix into its pass set, with a timeout that ends it at
/// `admission.until` (`nft add element inet maint pass4 { 192.0.2.7 timeout 3600s }`).
pub fn admit(
    sock: &mut Socket,
    name: &str,
    admission: &Admission,
    now: u64,
) -> anyhow::Result<Batch> {
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let (set, elems) = pass_elements(&admission.net);
    // An element whose end has come is not added at all (the caller checks); a timeout of
    // zero would mean "none" to the kernel.
    let timeout_ms = admission
        .until
        .map(|u| u.saturating_sub(now).max(1).saturating_mul(1000));
    let mut b = Batch::new(sock)?;
    let what = format!("adding {} to set {}", admission.net, set.name());
    b.add(sock, what, |buf, seq| {
        setelem_msg(buf, seq, &cname, set, &elems, ElemMsg::Add { timeout_ms })
    })?;
    b.finish(sock)?;
    Ok(b)
}

/// The `withdraw` transaction for one prefix (`nft delete element inet maint pass4 { … }`).
/// One batch per prefix: a batch is refused whole, and an element that expired meanwhile
/// would refuse the others with it.
pub fn withdraw(sock: &mut Socket, name: &str, net: &ipnet::IpNet) -> anyhow::Result<Batch> {
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let (set, elems) = pass_elements(net);
    let mut b = Batch::new(sock)?;
    let what = format!("removing {net} from set {}", set.name());
    b.add(sock, what, |buf, seq| {
        setelem_msg(buf, seq, &cname, set, &elems, ElemMsg::Delete)
    })?;
    b.finish(sock)?;
    Ok(b)
}

/// How an `apply` batch ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Committed: the kernel swaps the tables at once.
    Commit,
    /// With a last message the kernel must refuse, so the whole batch is rolled back: tests
    /// use it (feature `test-hooks`) to show that a refused apply changes nothing.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    Refused,
}

/// The whole `apply` transaction for `policy` in table `inet <name>`.
pub fn apply(
    sock: &mut Socket,
    name: &str,
    policy: &Policy,
    ending: Ending,
) -> anyhow::Result<Batch> {
    let stamp = Stamp::of(policy).text()?;
    let udata = stamp::userdata(&stamp);
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let mut b = Batch::new(sock)?;
    let tdesc = format!("table inet {name}");

    b.add(sock, format!("creating {tdesc} if missing"), |buf, seq| {
        table_msg(buf, seq, libc::NFT_MSG_NEWTABLE, &cname, None)
    })?;
    b.add(sock, format!("deleting the old {tdesc}"), |buf, seq| {
        table_msg(buf, seq, libc::NFT_MSG_DELTABLE, &cname, None)
    })?;
    b.add(sock, format!("creating {tdesc}"), |buf, seq| {
        table_msg(buf, seq, libc::NFT_MSG_NEWTABLE, &cname, Some(&udata))
    })?;

    for set in SetName::ALL {
        b.add(sock, format!("creating set {}", set.name()), |buf, seq| {
            newset_msg(buf, seq, &cname, set)
        })?;
        let elems = set_elements(policy, set);
        let total = elems.len();
        for (i, chunk) in elems.chunks(ELEMS_PER_MSG).enumerate() {
            let from = i * ELEMS_PER_MSG;
            let what = format!(
                "adding elements {}..{} of {total} to set {}",
                from + 1,
                from + chunk.len(),
                set.name()
            );
            b.add(sock, what, |buf, seq| {
                newsetelem_msg(buf, seq, &cname, set, chunk)
            })?;
        }
    }

    let table = nftnl::Table::new(&cname, ProtoFamily::Inet);
    let chains = chains(&table);
    for chain in &chains {
        let what = format!("creating chain {}", chain.get_name().to_string_lossy());
        // SAFETY: `add` hands the closure a buffer of at least one netlink page for exactly
        // one message, which is what nftnl's `write` fills (see `Batch::add`).
        b.add(sock, what, |buf, seq| unsafe {
            chain.write(buf as *mut c_void, seq, MsgType::Add)
        })?;
    }
    for (spec, rule) in rules::built(&chains, policy)? {
        let what = format!("adding rule to {}: {}", spec.chain, spec.text());
        // SAFETY: as for the chains above: one message into a buffer sized for it.
        b.add(sock, what, |buf, seq| unsafe {
            rule.write(buf as *mut c_void, seq, MsgType::Add)
        })?;
    }
    if ending == Ending::Refused {
        let missing = CString::new(format!("{name}-missing")).context("NUL in table name")?;
        let ghost = nftnl::Table::new(&missing, ProtoFamily::Inet);
        let chain = Chain::new(c"refused", &ghost);
        let what = format!("creating a chain in missing table inet {name}-missing");
        // SAFETY: as for the chains above: one message into a buffer sized for it.
        b.add(sock, what, |buf, seq| unsafe {
            chain.write(buf as *mut c_void, seq, MsgType::Add)
        })?;
    }
    b.finish(sock)?;
    Ok(b)
}

/// maint's two base chains.
pub fn chains(table: &nftnl::Table) -> Vec<Chain<'_>> {
    CHAINS
        .iter()
        .map(|def| {
            let mut chain = Chain::new(CString::new(def.name).expect("no NUL"), table);
            chain.set_hook(def.hook, def.priority);
            chain.set_type(def.chain_type());
            chain.set_policy(nftnl::Policy::Accept);
            chain
        })
        .collect()
}

/// The `stop_new_redirects` transaction: delete every rule of the `prerouting` chain, keeping
/// the chain (`nft flush chain inet <name> prerouting`). A delete-rule message without a
/// handle flushes the chain it names.
pub fn flush_redirects(sock: &mut Socket, name: &str) -> anyhow::Result<Batch> {
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let table = nftnl::Table::new(&cname, ProtoFamily::Inet);
    let chains = chains(&table);
    let prerouting = chains
        .iter()
        .find(|c| c.get_name().to_bytes() == b"prerouting")
        .context("maint's chains have a prerouting chain")?;
    let flush = nftnl::Rule::new(prerouting);
    let mut b = Batch::new(sock)?;
    let what = format!("flushing chain inet {name} prerouting");
    // SAFETY: as in `apply`: one message into a buffer sized for it.
    b.add(sock, what, |buf, seq| unsafe {
        flush.write(buf as *mut c_void, seq, MsgType::Del)
    })?;
    b.finish(sock)?;
    Ok(b)
}

/// The `clear` transaction: delete table `inet <name>`, nothing else.
pub fn clear(sock: &mut Socket, name: &str) -> anyhow::Result<Batch> {
    let cname = CString::new(name).context("table name contains a NUL byte")?;
    let mut b = Batch::new(sock)?;
    b.add(sock, format!("deleting table inet {name}"), |buf, seq| {
        table_msg(buf, seq, libc::NFT_MSG_DELTABLE, &cname, None)
    })?;
    b.finish(sock)?;
    Ok(b)
}
