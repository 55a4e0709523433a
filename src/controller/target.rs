//! The redirect target: the ports the firewall sends visitors to must be ports no local user
//! can take over, and what listens on them must be maint's own server.
//!
//! Visitors' cookies and form posts go wherever the redirect points. If the server dies and
//! its port is one any user may bind, any local user can bind it and read them. So:
//! - the server's ports must be privileged: below 1024 on OpenBSD, below
//!   `net.ipv4.ip_unprivileged_port_start` on Linux (a per-namespace sysctl, 1024 by default,
//!   0 in some containers). This is input, checked before anything changes.
//! - before `on` redirects anyone, every listening socket on those ports must belong to the
//!   server that answers on maint's control socket (Linux: the socket inodes in
//!   `/proc/net/tcp{,6}` against the server's open files). On OpenBSD the privileged port
//!   already means only root could have bound it.

use anyhow::anyhow;
use maint_backends::PortMap;

use super::fail::{Fail, Result};

/// Linux's knob for the first port an unprivileged process may bind, in this namespace.
#[cfg(target_os = "linux")]
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The lowest port any user may bind here; ports below it need root (`CAP_NET_BIND_SERVICE`).
fn unprivileged_port_start() -> u32 {
    #[cfg(target_os = "linux")]
    if let Ok(text) = std::fs::read_to_string(UNPRIVILEGED_PORT_START) {
        if let Ok(n) = text.trim().parse() {
            return n;
        }
    }
    1024
}

/// Refuses a redirect to a port an unprivileged user could bind.
pub fn check_privileged(ports: &[PortMap]) -> Result<()> {
    let start = unprivileged_port_start();
    let open: Vec<String> = PortMap::servers(ports)
        .iter()
        .filter(|&&p| u32::from(p) >= start)
        .map(u16::to_string)
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let why = if cfg!(target_os = "linux") && start < 1024 {
        format!(
            " (net.ipv4.ip_unprivileged_port_start is {start} in this network namespace; set it \
             back to 1024 with sysctl, or choose ports below {start})"
        )
    } else {
        format!("; choose server.http_port and server.https_port below {start}, e.g. 503 and 504")
    };
    Err(Fail::Input(anyhow!(
        "the maintenance server's port{} {} can be bound by any local user, who could then \
         receive redirected visitors' cookies and passwords if the server stopped{why}",
        if open.len() > 1 { "s" } else { "" },
        open.join(", ")
    )))
}

/// Checks that every socket listening on `ports` belongs to process `pid`.
#[cfg(target_os = "linux")]
pub fn check_owner(ports: &[u16], pid: u32) -> anyhow::Result<()> {
    let own = socket_inodes(pid).map_err(|e| {
        anyhow!("cannot list the open files of the maintenance server (pid {pid}): {e}")
    })?;
    for &port in ports {
        let listeners = listeners(port)?;
        if listeners.is_empty() {
            return Err(anyhow!("nothing listens on port {port}"));
        }
        if let Some(l) = listeners.iter().find(|l| !own.contains(&l.inode)) {
            let holder = holder_of(l.inode)
                .map(|p| format!("process {p}"))
                .unwrap_or_else(|| "another process".into());
            return Err(anyhow!(
                "port {port} is held by {holder} (uid {}), not by maint's maintenance server \
                 (pid {pid}); stop it before `maint on`",
                l.uid
            ));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn check_owner(_ports: &[u16], _pid: u32) -> anyhow::Result<()> {
    // Only root can bind a privileged port here, which `check_privileged` ensured.
    Ok(())
}

#[cfg(target_os = "linux")]
struct Listener {
    inode: u64,
    uid: u32,
}

/// Listening TCP sockets on `port` in this network namespace: from the kernel's socket
/// diagnostics (one netlink dump of listeners per family), else from `/proc/net/tcp{,6}`.
///
/// `/proc/net/tcp` walks every bucket of the established-connections hash to print each
/// connection: 9 ms on an idle 24 GiB host, and more the busier the web server is. A dump that
/// asks for listeners only reads the listening hash.
#[cfg(target_os = "linux")]
fn listeners(port: u16) -> anyhow::Result<Vec<Listener>> {
    match diag::listeners(port) {
        Ok(found) => Ok(found),
        Err(e) => {
            tracing::debug!("socket diagnostics unavailable ({e}); reading /proc/net/tcp");
            proc_listeners(port)
        }
    }
}

/// The same from `/proc/net/tcp{,6}`, for kernels without `inet_diag`.
#[cfg(target_os = "linux")]
fn proc_listeners(port: u16) -> anyhow::Result<Vec<Listener>> {
    /// `st` of a socket in the LISTEN state.
    const TCP_LISTEN: &str = "0A";
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel: no IPv6 listeners.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow!("cannot read {table}: {e}")),
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&st), Some(uid), Some(inode)) =
                (f.get(1), f.get(3), f.get(7), f.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if st == TCP_LISTEN && local_port == Some(port) {
                found.push(Listener {
                    inode: inode.parse().unwrap_or(0),
                    uid: uid.parse().unwrap_or(u32::MAX),
                });
            }
        }
    }
    Ok(found)
}

/// The inodes of the sockets process `pid` has open (`socket:[N]` links in its fd directory).
#[cfg(target_os = "linux")]
fn socket_inodes(pid: u32) -> std::io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue; // closed since the listing
        };
        if let Some(n) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.push(n);
        }
    }
    Ok(inodes)
}

/// Which process holds socket `inode`, for the error message; best effort.
#[cfg(target_os = "linux")]
fn holder_of(inode: u64) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            socket_inodes(pid)
                .map(|s| s.contains(&inode))
                .unwrap_or(false)
        })
}

/// Listening TCP sockets from `NETLINK_SOCK_DIAG` (`linux/inet_diag.h`).
#[cfg(target_os = "linux")]
mod diag {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    };

    use super::Listener;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    /// `struct nlmsghdr`.
    const HEADER: usize = 16;
    /// `struct inet_diag_msg`: family, state, timer, retrans, then `inet_diag_sockid` (48
    /// bytes, the local port first, big-endian), expires, rqueue, wqueue, uid, inode.
    const MSG: usize = 72;
    const SPORT: usize = 4;
    const UID: usize = 64;
    const INODE: usize = 68;

    pub(super) fn listeners(port: u16) -> std::io::Result<Vec<Listener>> {
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        let mut found = Vec::new();
        for family in [nix::libc::AF_INET as u8, nix::libc::AF_INET6 as u8] {
            // nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, and a
            // zeroed inet_diag_sockid (no filter: the listeners are few).
            let mut req = Vec::with_capacity(HEADER + 56);
            req.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
            req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            req.extend_from_slice(&[0; 8]); // sequence number and port id
            req.extend_from_slice(&[family, nix::libc::IPPROTO_TCP as u8, 0, 0]);
            req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
            req.resize(HEADER + 56, 0);
            send(sock.as_raw_fd(), &req, MsgFlags::empty())?;
            read_dump(sock.as_raw_fd(), port, &mut found)?;
        }
        Ok(found)
    }

    /// Reads one dump's answers up to `NLMSG_DONE`; each datagram is bounded by the buffer.
    fn read_dump(fd: i32, port: u16, found: &mut Vec<Listener>) -> std::io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(fd, &mut buf, MsgFlags::empty())?;
            let mut msgs = &buf[..n];
            while msgs.len() >= HEADER {
                let field = |at: usize| u32::from_ne_bytes(msgs[at..at + 4].try_into().unwrap());
                let len = field(0) as usize;
                let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
                if len < HEADER || len > msgs.len() {
                    return Err(std::io::Error::other("malformed sock_diag answer"));
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = msgs
                            .get(HEADER..HEADER + 4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY if len >= HEADER + MSG => {
                        let msg = &msgs[HEADER..HEADER + MSG];
                        let at = |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().unwrap());
                        if u16::from_be_bytes([msg[SPORT], msg[SPORT + 1]]) == port {
                            found.push(Listener {
                                inode: u64::from(at(INODE)),
                                uid: at(UID),
                            });
                        }
                    }
                    _ => {}
                }
                // Messages are aligned to 4 bytes.
                msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_its_own_and_not_another_pids() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        check_owner(&[port], std::process::id()).unwrap();
        // A child of ours (same user, so its fds are readable) holds no socket on that port.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let err = check_owner(&[port], other.id()).unwrap_err().to_string();
        let _ = other.kill();
        let _ = other.wait();
        assert!(
            err.contains(&format!(
                "port {port} is held by process {}",
                std::process::id()
            )),
            "{err}"
        );
        drop(l);
        let err = check_owner(&[port], std::process::id())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing listens"), "{err}");
    }

    #[test]
    fn socket_diagnostics_and_proc_net_tcp_see_the_same_listeners() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        // A second listener on the same port, IPv6 (none where the kernel has no IPv6).
        let v6 = std::net::TcpListener::bind(("::1", port)).ok();
        let key = |l: &Listener| (l.inode, l.uid);
        let mut diag: Vec<_> = diag::listeners(port).unwrap().iter().map(key).collect();
        let mut proc: Vec<_> = proc_listeners(port).unwrap().iter().map(key).collect();
        diag.sort();
        proc.sort();
        assert_eq!(diag.len(), 1 + usize::from(v6.is_some()), "{diag:?}");
        assert_eq!(diag, proc);
    }

    #[test]
    fn ports_at_or_above_the_unprivileged_start_are_refused() {
        let start = unprivileged_port_start();
        let map = |server| PortMap { public: 80, server };
        if start > 503 {
            assert!(check_privileged(&[map(503)]).is_ok());
        }
        if let Ok(high) = u16::try_from(start) {
            let Err(Fail::Input(e)) = check_privileged(&[map(503), map(high)]) else {
                panic!("port {high} accepted");
            };
            assert!(e.to_string().contains(&high.to_string()), "{e}");
        }
    }
}
