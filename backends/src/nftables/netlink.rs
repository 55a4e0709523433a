//! The NETLINK_NETFILTER socket and the three conversations maint has over it: a batch
//! (everything or nothing, one response per message), a dump, and a single request.
//!
//! The mnl crate opens and binds the socket; sending is our own `sendmsg`, because a batch
//! must reach the kernel in ONE datagram to be one transaction (mnl's `send_all` sends each
//! libnftnl page separately, and the kernel would see a batch without its end).

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use super::nla::{self, Message, NLMSG_HDRLEN};

/// Request flags (linux/netlink.h), shared by the nf_tables and ctnetlink requests.
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// The error message carries extended-ack TLVs after the echoed header.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Receive buffer: the kernel never builds a dump datagram above 32 KiB.
const RECV_BUF: usize = 128 * 1024;
/// Socket receive queue: room for every ack of a large batch or a chunk of conntrack deletes.
const RCVBUF: i32 = 4 << 20;
/// Never hang on a kernel that stays silent; a 100,000-prefix batch takes well under a second.
const RECV_TIMEOUT_SECS: i64 = 60;

/// A failure reported by the kernel (or by the socket), with the kernel's own words if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: i32,
    pub detail: Option<String>,
}

impl NlError {
    pub fn from_io(e: io::Error) -> Self {
        NlError {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            detail: if e.raw_os_error().is_some() {
                None
            } else {
                Some(e.to_string())
            },
        }
    }

    fn new(errno: i32, detail: impl Into<String>) -> Self {
        NlError {
            errno,
            detail: Some(detail.into()),
        }
    }

    pub fn is_permission(&self) -> bool {
        self.errno == libc::EPERM || self.errno == libc::EACCES
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NlError {}

/// An error message from the kernel: which request it answers, and the verdict (0 = ack).
struct ErrMsg {
    seq: u32,
    errno: i32,
    detail: Option<String>,
}

fn parse_error(msg: &Message<'_>) -> Option<ErrMsg> {
    let p = msg.payload;
    let code = i32::from_ne_bytes(p.get(..4)?.try_into().ok()?);
    // The echoed request header follows; with NETLINK_CAP_ACK, only its header.
    let orig = p.get(4..4 + NLMSG_HDRLEN)?;
    let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
    let detail = if msg.flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        // Capped echoes carry only the header; uncapped ones the whole request.
        let skip = if msg.flags & 0x100 != 0 {
            NLMSG_HDRLEN
        } else {
            nla::align(orig_len)
        };
        p.get(4 + skip..)
            .and_then(|tlvs| nla::Attrs::new(tlvs).str(NLMSGERR_ATTR_MSG))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    } else {
        None
    };
    Some(ErrMsg {
        seq,
        errno: -code,
        detail,
    })
}

/// Joins and leaves multicast groups of a [`Socket`] from another thread.
pub struct Membership(std::os::fd::OwnedFd);

impl Membership {
    pub fn set(&self, group: u32, member: bool) -> Result<(), NlError> {
        let opt = if member {
            libc::NETLINK_ADD_MEMBERSHIP
        } else {
            libc::NETLINK_DROP_MEMBERSHIP
        };
        // SAFETY: a u32 group number on our stack, of the size the option documents.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                libc::SOL_NETLINK,
                opt,
                &group as *const u32 as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NlError::from_io(io::Error::last_os_error()));
        }
        Ok(())
    }
}

pub struct Socket {
    sock: mnl::Socket,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket, NlError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NlError::from_io)?;
        let s = Socket {
            sock,
            // Distinct from anything a previous process might have left in flight on the port.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        };
        // Errors echo only the failing request's header, not a 64 KiB element message; and
        // the kernel says in words what it rejected. Both are best effort on old kernels.
        let _ = s.setsockopt(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let _ = s.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        if s.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF)
            .is_err()
        {
            let _ = s.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        s.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv)
            .map_err(NlError::from_io)?;
        Ok(s)
    }

    /// setsockopt(2) with a plain value (an int, a timeval).
    fn setsockopt<T: Copy>(&self, level: i32, name: i32, val: T) -> io::Result<()> {
        // SAFETY: the kernel reads exactly size_of::<T>() bytes from a live, initialised `T`
        // on our stack; the option number decides how it reads them, and every caller passes
        // the type its option documents.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                level,
                name,
                &val as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Joins a netlink multicast group, such as NFNLGRP_NFTABLES (every committed change).
    pub fn subscribe(&self, group: u32) -> Result<(), NlError> {
        self.setsockopt(libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)
            .map_err(NlError::from_io)
    }

    /// A second descriptor for this socket, on which another thread may join or leave
    /// multicast groups (membership belongs to the socket, not the descriptor).
    pub fn membership(&self) -> Result<Membership, NlError> {
        // SAFETY: dup(2) of a descriptor we own; the result is owned by the OwnedFd below.
        let fd = unsafe { libc::dup(self.sock.as_raw_fd()) };
        if fd < 0 {
            return Err(NlError::from_io(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Membership(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Waits up to `timeout` for one datagram of announcements. `Ok(None)` when none came;
    /// `Err` with ENOBUFS when the kernel dropped some because we read too slowly.
    pub fn recv_announcements(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Option<&[u8]>, NlError> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd on our stack, for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(NlError::from_io(e));
        }
        if rc == 0 {
            return Ok(None);
        }
        let n = self.recv()?;
        Ok(Some(&self.buf[..n]))
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `parts` as one datagram (one skb in the kernel, hence one batch transaction).
    pub fn send(&mut self, parts: &[&[u8]]) -> Result<(), NlError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        // netlink refuses a datagram larger than the send buffer; nft raises it the same way.
        if total + 4096 > self.sndbuf {
            let want = i32::try_from(total + 64 * 1024).unwrap_or(i32::MAX);
            if self
                .setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
                .is_err()
            {
                let _ = self.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, want);
            }
            self.sndbuf = total + 4096;
        }
        let mut iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: sockaddr_nl and msghdr are plain C structs for which all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: as above.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        mh.msg_iov = iov.as_mut_ptr();
        mh.msg_iovlen = iov.len();
        // SAFETY: `mh` points at `addr` and `iov`, and `iov` at the pages, all alive for the
        // call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &mh, 0) };
        if n < 0 {
            return Err(NlError::from_io(io::Error::last_os_error()));
        }
        if n as usize != total {
            return Err(NlError::new(libc::EIO, "short send of a netlink datagram"));
        }
        Ok(())
    }

    /// Receives one datagram into the internal buffer; returns its length.
    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into our own buffer.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(NlError::new(libc::ETIMEDOUT, "the kernel did not answer"));
                }
                return Err(NlError::from_io(e));
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NlError::new(libc::EMSGSIZE, "netlink datagram truncated"));
            }
            return Ok(n);
        }
    }

    /// Sends a batch (one datagram) and reads one response per message in `expected`
    /// (sequence numbers of messages flagged NLM_F_ACK). On failure, returns the first error
    /// and the sequence number it answers (`begin_seq` for batch-wide errors).
    pub fn batch(
        &mut self,
        parts: &[&[u8]],
        begin_seq: u32,
        expected: &[u32],
    ) -> Result<(), (u32, NlError)> {
        self.send(parts).map_err(|e| (begin_seq, e))?;
        let mut pending: std::collections::HashSet<u32> = expected.iter().copied().collect();
        let mut first_err: Option<(u32, NlError)> = None;
        while !pending.is_empty() {
            let n = self.recv().map_err(|e| (begin_seq, e))?;
            let mut batch_wide = false;
            for msg in nla::messages(&self.buf[..n]) {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(e) = parse_error(&msg) else { continue };
                if !pending.remove(&e.seq) && e.errno != 0 {
                    // Aimed at the batch header (EPERM, a malformed batch, out of memory):
                    // nothing else will come.
                    batch_wide = true;
                }
                if e.errno != 0 && first_err.is_none() {
                    let err = NlError {
                        errno: e.errno,
                        detail: e.detail,
                    };
                    first_err = Some((e.seq, err));
                }
            }
            if batch_wide {
                break;
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends a dump request and hands every answer message to `each`. A dump that raced with
    /// a ruleset change reports EINTR so the caller can start over.
    /// [`Socket::dump`], keeping what `read` makes of each message (`None`: skip it).
    pub fn dump_collect<T>(
        &mut self,
        request: &[u8],
        seq: u32,
        mut read: impl FnMut(&Message<'_>) -> Option<T>,
    ) -> Result<Vec<T>, NlError> {
        let mut out = Vec::new();
        self.dump(request, seq, |m| {
            out.extend(read(m));
            Ok(())
        })?;
        Ok(out)
    }

    pub fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&Message<'_>) -> Result<(), NlError>,
    ) -> Result<(), NlError> {
        self.send(&[request])?;
        let mut interrupted = false;
        let mut result = Ok(());
        loop {
            let n = self.recv()?;
            for msg in nla::messages(&self.buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                if msg.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.ty {
                    NLMSG_DONE => {
                        if interrupted {
                            return Err(NlError::new(libc::EINTR, "the ruleset changed mid-dump"));
                        }
                        return result;
                    }
                    NLMSG_ERROR => {
                        let e = parse_error(&msg)
                            .ok_or_else(|| NlError::new(libc::EPROTO, "malformed netlink error"))?;
                        if e.errno != 0 {
                            return Err(NlError {
                                errno: e.errno,
                                detail: e.detail,
                            });
                        }
                    }
                    _ => {
                        if result.is_ok() {
                            result = each(&msg);
                        }
                    }
                }
            }
        }
    }

    /// Sends one request flagged NLM_F_ACK and hands any reply before the ack to `each`.
    pub fn request(
        &mut self,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&Message<'_>),
    ) -> Result<(), NlError> {
        self.send(&[request])?;
        loop {
            let n = self.recv()?;
            for msg in nla::messages(&self.buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                if msg.ty == NLMSG_ERROR {
                    let e = parse_error(&msg)
                        .ok_or_else(|| NlError::new(libc::EPROTO, "malformed netlink error"))?;
                    return if e.errno == 0 {
                        Ok(())
                    } else {
                        Err(NlError {
                            errno: e.errno,
                            detail: e.detail,
                        })
                    };
                }
                each(&msg);
            }
        }
    }

    /// Sends many requests (each flagged NLM_F_ACK) in one datagram and returns each one's
    /// verdict by sequence number; used to delete conntrack entries without a round trip each.
    pub fn many(&mut self, datagram: &[u8], count: usize) -> Result<Vec<(u32, i32)>, NlError> {
        self.send(&[datagram])?;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let n = self.recv()?;
            for msg in nla::messages(&self.buf[..n]) {
                if msg.ty == NLMSG_ERROR {
                    if let Some(e) = parse_error(&msg) {
                        out.push((e.seq, e.errno));
                    }
                }
            }
        }
        Ok(out)
    }
}
