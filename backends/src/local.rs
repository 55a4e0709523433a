//! The host's own addresses: connections from them are never redirected and never cut, so
//! the operator can test the app on the real ports during maintenance.

use std::net::IpAddr;

use crate::unmap;

/// This host's own addresses, loopback included: connections from them are never redirected
/// and never cut.
#[derive(Clone, Debug, Default)]
pub struct LocalAddresses(std::collections::HashSet<IpAddr>);

impl LocalAddresses {
    /// The addresses of every interface in the current network namespace (getifaddrs(3),
    /// which Linux and OpenBSD both have).
    pub fn of_this_host() -> LocalAddresses {
        let mut out = std::collections::HashSet::new();
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs either fails and leaves `list` untouched, or fills it with a
        // linked list that stays valid until the freeifaddrs below; we only read it.
        if unsafe { libc::getifaddrs(&mut list) } != 0 {
            return LocalAddresses(out);
        }
        let mut cur = list;
        while !cur.is_null() {
            // SAFETY: `cur` is a non-null node of the list getifaddrs returned, not yet freed.
            let ifa = unsafe { &*cur };
            if let Some(ip) = sockaddr_ip(ifa.ifa_addr) {
                out.insert(ip);
            }
            cur = ifa.ifa_next;
        }
        // SAFETY: `list` came from a successful getifaddrs and is freed exactly once.
        unsafe { libc::freeifaddrs(list) };
        LocalAddresses(out)
    }

    /// A fixed set, for tests and for callers that know the addresses.
    pub fn from_addresses(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddresses {
        LocalAddresses(addrs.into_iter().map(unmap).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        ip.is_loopback() || self.0.contains(&ip)
    }
}

/// The IP address of a `sockaddr` from getifaddrs, for the families maint cares about.
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points to a sockaddr whose sa_family tells its real type;
    // it is only reinterpreted as the matching sockaddr_in or sockaddr_in6.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}
