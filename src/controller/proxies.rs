//! Whether visitors reach this host through a proxy or CDN, for `maint check`: then every
//! visitor's source address is the proxy's, and a pass link cannot let one tester through
//! without letting everyone behind that proxy through.
//!
//! maint looks at the clients connected to the public ports right now (`/proc/net/tcp` and
//! `tcp6`, established connections only) and at `[pass] proxies`, the ranges the operator
//! says their proxies use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use maint_backends::PortMap;

use crate::config::Config;
use crate::finding::Finding;

/// TCP_ESTABLISHED in `/proc/net/tcp`'s `st` column.
const ESTABLISHED: &str = "01";

pub fn findings(config: &Config, ports: &[PortMap]) -> Vec<Finding> {
    let ranges = &config.pass.proxies;
    if ranges.is_empty() {
        return Vec::new();
    }
    let public: Vec<u16> = ports.iter().map(|p| p.public).collect();
    let clients = match connected_clients(&public) {
        Ok(c) => c,
        Err(why) => {
            return vec![Finding::warn(format!(
                "[pass] proxies is set, but the clients connected now cannot be read ({why}); \
                 behind a proxy or CDN a pass lets the proxy through, not one tester"
            ))]
        }
    };
    let behind: Vec<&IpAddr> = clients
        .iter()
        .filter(|c| ranges.iter().any(|r| r.contains(*c)))
        .collect();
    if behind.is_empty() {
        return vec![Finding::ok(format!(
            "none of the {} client connection(s) to port(s) {} comes from [pass] proxies",
            clients.len(),
            list(&public)
        ))];
    }
    vec![Finding::warn(format!(
        "{} of {} client connection(s) to port(s) {} come from [pass] proxies (e.g. {}): \
         visitors arrive through a proxy or CDN, so every visitor's address is the proxy's. A \
         pass link would let the proxy through, and with it everyone behind it: pass links \
         cannot single out a tester here",
        behind.len(),
        clients.len(),
        list(&public),
        behind[0]
    ))]
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The remote addresses of established TCP connections to `ports` on this host.
fn connected_clients(ports: &[u16]) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    let mut read_any = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        read_any = true;
        out.extend(parse_clients(&text, ports));
    }
    if read_any {
        Ok(out)
    } else {
        Err("no /proc/net/tcp on this system".into())
    }
}

fn parse_clients(text: &str, ports: &[u16]) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (cols.get(1)?, cols.get(2)?, cols.get(3)?);
            if *state != ESTABLISHED {
                return None;
            }
            let (_, lport) = parse_endpoint(local)?;
            if !ports.contains(&lport) {
                return None;
            }
            Some(maint_backends::unmap(parse_endpoint(remote)?.0))
        })
        .collect()
}

/// `0100007F:0050` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit
/// word of the address in host byte order.
fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = addr
        .as_bytes()
        .chunks(8)
        .map(|c| u32::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_established_clients_of_the_public_ports() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0A0200C0:0050 076433C6:C350 01 00000000:00000000\n\
   1: 0A0200C0:0016 076433C6:C351 01 00000000:00000000\n\
   2: 00000000:0050 00000000:0000 0A 00000000:00000000\n";
        let got = parse_clients(v4, &[80, 443]);
        if cfg!(target_endian = "little") {
            assert_eq!(got, [IpAddr::from([198, 51, 100, 7])]);
        } else {
            assert_eq!(got.len(), 1);
        }
    }
}
