//! Killing connection-tracking entries over ctnetlink, so clients move at once.
//!
//! One dump of the whole table (IPv4 and IPv6), selection in userspace, then the deletes go
//! out a thousand per datagram: the kernel answers each, but we wait once per thousand instead
//! of once per entry as `conntrack -D` does. Each delete names the entry's original tuple,
//! zone and id, so an entry that was replaced in the meantime is left alone (ENOENT), and an
//! entry already gone is not an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::netlink::{NlError, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use super::nla::{Attrs, Writer};
use crate::{LocalAddresses, Policy, PortMap};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

// Attribute numbers from linux/netfilter/nfnetlink_conntrack.h.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 20;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const DELETES_PER_DATAGRAM: usize = 1000;

/// The part of a conntrack tuple maint looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// One conntrack entry from the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub id: Option<u32>,
    pub zone: Option<u16>,
}

fn tuple(a: Attrs<'_>) -> Option<Tuple> {
    let ip = a.nested(CTA_TUPLE_IP)?;
    let (src, dst) = if let (Some(s), Some(d)) = (ip.get(CTA_IP_V4_SRC), ip.get(CTA_IP_V4_DST)) {
        (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(s).ok()?)),
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(d).ok()?)),
        )
    } else {
        let (s, d) = (ip.get(CTA_IP_V6_SRC)?, ip.get(CTA_IP_V6_DST)?);
        (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(s).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?)),
        )
    };
    let proto = a.nested(CTA_TUPLE_PROTO)?;
    Some(Tuple {
        src,
        dst,
        proto: proto.u8(CTA_PROTO_NUM)?,
        sport: proto.be16(CTA_PROTO_SRC_PORT).unwrap_or(0),
        dport: proto.be16(CTA_PROTO_DST_PORT).unwrap_or(0),
    })
}

fn entry(a: Attrs<'_>) -> Option<Entry> {
    Some(Entry {
        orig: tuple(a.nested(CTA_TUPLE_ORIG)?)?,
        reply: tuple(a.nested(CTA_TUPLE_REPLY)?)?,
        id: a.be32(CTA_ID),
        zone: a.be16(CTA_ZONE),
    })
}

/// Whether `e` disagrees with `policy`: `kill_disagreeing_states(policy, redirected)` removes it.
pub fn selected(
    policy: &Policy,
    redirected: &[PortMap],
    e: &Entry,
    local: &LocalAddresses,
) -> bool {
    if e.orig.proto != libc::IPPROTO_TCP as u8 {
        return false;
    }
    // A client's connection to the app: the reply comes from the port it asked for.
    // `redirects` leaves out this host's own connections, to the app or elsewhere.
    let to_app = e.reply.sport == e.orig.dport && policy.redirects(e.orig.src, e.orig.dport, local);
    // The same kind of connection picked up mid-stream from the app's side (loose pickup
    // after an earlier kill): the state was created by the app's segment, so the client is
    // its destination.
    let picked_up_reversed = e.reply.dport == e.orig.sport
        && local.contains(e.orig.src)
        && policy.redirects(e.orig.dst, e.orig.sport, local);
    // Redirected to the maintenance server (the reply comes from its port) though the policy
    // now lets this client through to the app.
    let redirected_through = redirected
        .iter()
        .any(|m| m.server != m.public && m.public == e.orig.dport && m.server == e.reply.sport)
        && !policy.redirects(e.orig.src, e.orig.dport, local);
    to_app || picked_up_reversed || redirected_through
}

fn dump(sock: &mut Socket) -> Result<Vec<Entry>, NlError> {
    let seq = sock.next_seq();
    let mut w = Writer::new();
    // AF_UNSPEC: the kernel dumps every layer-3 family at once.
    w.begin_nf(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        libc::AF_UNSPEC as u8,
        0,
    );
    w.end();
    sock.dump_collect(&w.buf, seq, |m| entry(m.nf_attrs()))
}

fn put_tuple(w: &mut Writer, ty: u16, t: &Tuple) {
    let outer = w.nest_start(ty);
    let ip = w.nest_start(CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            w.put(CTA_IP_V4_SRC, &s.octets());
            w.put(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            w.put(CTA_IP_V6_SRC, &v6(s));
            w.put(CTA_IP_V6_DST, &v6(d));
        }
    }
    w.nest_end(ip);
    let proto = w.nest_start(CTA_TUPLE_PROTO);
    w.put_u8(CTA_PROTO_NUM, t.proto);
    w.put_be16(CTA_PROTO_SRC_PORT, t.sport);
    w.put_be16(CTA_PROTO_DST_PORT, t.dport);
    w.nest_end(proto);
    w.nest_end(outer);
}

/// Deletes the entries that disagree with `policy`; returns how many the kernel removed.
pub fn kill(policy: &Policy, redirected: &[PortMap]) -> Result<usize, NlError> {
    let local = LocalAddresses::of_this_host();
    kill_where(|e| selected(policy, redirected, e, &local))
}

/// Whether `e` is a connection from `net` redirected to the maintenance server through one of
/// `redirected`, other than the one from `spare`.
pub fn redirected_from(
    net: &ipnet::IpNet,
    redirected: &[PortMap],
    spare: Option<std::net::SocketAddr>,
    e: &Entry,
) -> bool {
    e.orig.proto == libc::IPPROTO_TCP as u8
        && net.contains(&e.orig.src)
        && redirected
            .iter()
            .any(|m| m.server != m.public && m.public == e.orig.dport && m.server == e.reply.sport)
        && spare != Some(std::net::SocketAddr::new(e.orig.src, e.orig.sport))
}

/// Deletes the entries `pick` chooses; returns how many the kernel removed.
pub fn kill_where(pick: impl Fn(&Entry) -> bool) -> Result<usize, NlError> {
    let mut sock = Socket::open()?;
    let victims: Vec<Entry> = dump(&mut sock)?.into_iter().filter(|e| pick(e)).collect();
    let mut removed = 0;
    for chunk in victims.chunks(DELETES_PER_DATAGRAM) {
        let mut w = Writer::new();
        for e in chunk {
            let family = match e.orig.src {
                IpAddr::V4(_) => libc::AF_INET,
                IpAddr::V6(_) => libc::AF_INET6,
            };
            let seq = sock.next_seq();
            w.begin_nf(
                (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                family as u8,
                0,
            );
            put_tuple(&mut w, CTA_TUPLE_ORIG, &e.orig);
            if let Some(id) = e.id {
                w.put_be32(CTA_ID, id);
            }
            if let Some(zone) = e.zone {
                w.put_be16(CTA_ZONE, zone);
            }
            w.end();
        }
        for (_, errno) in sock.many(&w.buf, chunk.len())? {
            match errno {
                0 => removed += 1,
                libc::ENOENT => {}
                errno => {
                    return Err(NlError {
                        errno,
                        detail: Some(format!(
                            "deleting a conntrack entry (after {removed} deleted)"
                        )),
                    })
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport,
            dport,
        }
    }

    fn policy() -> Policy {
        Policy::new(
            [
                "198.51.100.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ["198.51.100.9/32".parse().unwrap()],
            [
                PortMap {
                    public: 80,
                    server: 8503,
                },
                PortMap {
                    public: 443,
                    server: 8504,
                },
            ],
            None,
        )
    }

    /// The server's own addresses in these fixtures.
    fn sel(p: &Policy, e: &Entry) -> bool {
        let local = LocalAddresses::from_addresses(
            ["192.0.2.1", "2001:db8::ffff"]
                .iter()
                .map(|a| a.parse().unwrap()),
        );
        selected(p, &p.ports, e, &local)
    }

    #[test]
    fn takes_reverse_pickups_but_not_the_hosts_own_connections() {
        let p = policy();
        // Picked up from the app's side: orig is app:80 -> client.
        let reversed = Entry {
            orig: t("192.0.2.1", 80, "198.51.100.1", 40000),
            reply: t("198.51.100.1", 40000, "192.0.2.1", 80),
            id: Some(3),
            zone: None,
        };
        assert!(sel(&p, &reversed));
        // This host fetching from another server's port 80 (policy `all` covers it).
        let all = Policy::new(crate::everything(), [], p.ports.clone(), None);
        let outgoing = Entry {
            orig: t("192.0.2.1", 40000, "198.51.100.1", 80),
            reply: t("198.51.100.1", 80, "192.0.2.1", 40000),
            id: Some(4),
            zone: None,
        };
        assert!(!sel(&all, &outgoing));
        assert!(sel(&all, &app("203.0.113.1", 80)));
    }

    fn app(src: &str, dport: u16) -> Entry {
        Entry {
            orig: t(src, 40000, "192.0.2.1", dport),
            reply: t("192.0.2.1", dport, src, 40000),
            id: Some(1),
            zone: None,
        }
    }

    fn redirected(src: &str, dport: u16, server: u16) -> Entry {
        Entry {
            orig: t(src, 40000, "192.0.2.1", dport),
            reply: t("192.0.2.1", server, src, 40000),
            id: Some(2),
            zone: None,
        }
    }

    #[test]
    fn takes_matched_clients_still_on_the_app_on_public_ports() {
        let p = policy();
        assert!(sel(&p, &app("198.51.100.1", 80)));
        assert!(sel(&p, &app("198.51.100.1", 443)));
        let mut v6 = app("2001:db8::1", 80);
        v6.orig.dst = "2001:db8::ffff".parse().unwrap();
        assert!(sel(&p, &v6));
        // excepted, unmatched, other port, already redirected, not TCP
        assert!(!sel(&p, &app("198.51.100.9", 80)));
        assert!(!sel(&p, &app("203.0.113.1", 80)));
        assert!(!sel(&p, &app("198.51.100.1", 22)));
        assert!(!sel(&p, &redirected("198.51.100.1", 80, 8503)));
        let mut udp = app("198.51.100.1", 80);
        udp.orig.proto = 17;
        assert!(!sel(&p, &udp));
    }

    #[test]
    fn takes_redirected_clients_the_policy_now_lets_through() {
        let p = policy();
        // An excepted client (198.51.100.9) and an unmatched one still on the page.
        assert!(sel(&p, &redirected("198.51.100.9", 80, 8503)));
        assert!(sel(&p, &redirected("203.0.113.1", 443, 8504)));
        // A matched client stays on the page; a wrong pairing is not maint's redirect.
        assert!(!sel(&p, &redirected("198.51.100.1", 80, 8503)));
        assert!(!sel(&p, &redirected("203.0.113.1", 80, 8504)));
        // `off`: every redirected client goes back, by the previous policy's ports; nobody's
        // connection to the app is touched.
        let local = LocalAddresses::from_addresses(["192.0.2.1".parse().unwrap()]);
        let off = |e: &Entry| selected(&Policy::nobody(), &p.ports, e, &local);
        assert!(off(&redirected("198.51.100.1", 80, 8503)));
        assert!(off(&redirected("198.51.100.9", 443, 8504)));
        assert!(!off(&app("198.51.100.1", 80)));
    }

    #[test]
    fn delete_message_carries_the_tuple_back() {
        let e = redirected("198.51.100.1", 80, 8503);
        let mut w = Writer::new();
        w.begin_nf(0x0102, 5, 1, 2, 0);
        put_tuple(&mut w, CTA_TUPLE_ORIG, &e.orig);
        w.put_be32(CTA_ID, 7);
        w.end();
        let msg = super::super::nla::messages(&w.buf).next().unwrap();
        let a = msg.nf_attrs();
        assert_eq!(tuple(a.nested(CTA_TUPLE_ORIG).unwrap()), Some(e.orig));
        assert_eq!(a.be32(CTA_ID), Some(7));
    }
}
