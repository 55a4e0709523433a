//! CIDR prefixes <-> the elements of an nftables interval set.
//!
//! An interval set stores each range as a start element and an end element one past its last
//! address (flagged `NFT_SET_ELEM_INTERVAL_END`). A range that runs to the top of the address
//! space has no "one past", so, like nft, we omit its end element and mark the start
//! `INTERVAL_OPEN` in the element's userdata (only `nft list` looks at that). nft also puts an
//! end element at address 0 when the first range starts above 0; we do the same so a set we
//! load is element-for-element what `nft -f` would load.
//!
//! Reading back, a range decomposes uniquely into the fewest CIDR prefixes, and
//! [`crate::canonical`] of those equals the canonical list that was applied.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Address family of a set: its width in bits decides everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn key_len(self) -> usize {
        (self.bits() / 8) as usize
    }

    /// The highest address of the family.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    /// Big-endian key bytes, as the kernel stores an address.
    pub fn key(self, addr: u128) -> Vec<u8> {
        match self {
            Family::V4 => (addr as u32).to_be_bytes().to_vec(),
            Family::V6 => addr.to_be_bytes().to_vec(),
        }
    }

    pub fn parse_key(self, bytes: &[u8]) -> Option<u128> {
        match self {
            Family::V4 => Some(u32::from_be_bytes(bytes.try_into().ok()?) as u128),
            Family::V6 => Some(u128::from_be_bytes(bytes.try_into().ok()?)),
        }
    }
}

/// An inclusive address range `[first, last]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub first: u128,
    pub last: u128,
}

/// One set element as it goes to (or comes from) the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: u128,
    /// `NFT_SET_ELEM_INTERVAL_END`: this element closes the range before it.
    pub end: bool,
    /// A start whose range runs to the top of the address space (no end element follows).
    pub open: bool,
}

fn net_range(net: &IpNet) -> (Family, Range) {
    match net {
        IpNet::V4(n) => (
            Family::V4,
            Range {
                first: u32::from(n.network()) as u128,
                last: u32::from(n.broadcast()) as u128,
            },
        ),
        IpNet::V6(n) => (
            Family::V6,
            Range {
                first: u128::from(n.network()),
                last: u128::from(n.broadcast()),
            },
        ),
    }
}

/// The merged, sorted ranges covered by the prefixes of `family` in `nets`.
///
/// Adjacent ranges merge too: the kernel's interval tree wants one range where nft would make
/// one (10.0.0.0/8 and 11.0.0.0/8 are a single range 10.0.0.0-11.255.255.255).
pub fn ranges<'a>(family: Family, nets: impl IntoIterator<Item = &'a IpNet>) -> Vec<Range> {
    let mut rs: Vec<Range> = nets
        .into_iter()
        .map(net_range)
        .filter(|(f, _)| *f == family)
        .map(|(_, r)| r)
        .collect();
    rs.sort();
    let mut out: Vec<Range> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(prev) if prev.last == u128::MAX || r.first <= prev.last + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// The set elements for merged, sorted `ranges` (see the module docs for the encoding).
pub fn elements(family: Family, ranges: &[Range]) -> Vec<Element> {
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges.first().is_some_and(|r| r.first != 0) {
        out.push(Element {
            key: 0,
            end: true,
            open: false,
        });
    }
    for r in ranges {
        let open = r.last == family.max();
        out.push(Element {
            key: r.first,
            end: false,
            open,
        });
        if !open {
            out.push(Element {
                key: r.last + 1,
                end: true,
                open: false,
            });
        }
    }
    out
}

/// Rebuilds the ranges from set elements in any order (the kernel dumps them in its own).
pub fn ranges_from_elements(
    family: Family,
    mut elems: Vec<(u128, bool)>,
) -> Result<Vec<Range>, String> {
    // At one key, an end sorts before a start: it closes the range that came before.
    elems.sort_by_key(|&(key, end)| (key, !end));
    let mut out = Vec::with_capacity(elems.len() / 2);
    let mut open: Option<u128> = None;
    for (key, end) in elems {
        match (end, open) {
            (true, Some(first)) => {
                if key == 0 || key - 1 < first {
                    return Err(format!("empty interval ending at {key:#x}"));
                }
                out.push(Range {
                    first,
                    last: key - 1,
                });
                open = None;
            }
            // nft's marker for "nothing below the first range".
            (true, None) if key == 0 => {}
            (true, None) => return Err(format!("interval end {key:#x} without a start")),
            (false, None) => open = Some(key),
            (false, Some(first)) => {
                return Err(format!(
                    "interval starting at {first:#x} has no end before the next start {key:#x}"
                ))
            }
        }
    }
    if let Some(first) = open {
        out.push(Range {
            first,
            last: family.max(),
        });
    }
    Ok(out)
}

/// The fewest CIDR prefixes that cover exactly `range`.
pub fn cidrs(family: Family, range: Range) -> Vec<IpNet> {
    let bits = family.bits();
    let mut out = Vec::new();
    let mut first = range.first;
    loop {
        // The largest aligned block starting at `first` that does not pass `last`.
        let mut size_log = if first == 0 {
            bits
        } else {
            first.trailing_zeros().min(bits)
        };
        while size_log > 0 && block_last(first, size_log) > range.last {
            size_log -= 1;
        }
        out.push(net(family, first, (bits - size_log) as u8));
        let last = block_last(first, size_log);
        if last >= range.last {
            return out;
        }
        first = last + 1;
    }
}

fn block_last(first: u128, size_log: u32) -> u128 {
    if size_log >= 128 {
        u128::MAX
    } else {
        first.saturating_add((1u128 << size_log) - 1)
    }
}

fn net(family: Family, addr: u128, len: u8) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(addr as u32), len).expect("prefix length within 32"),
        ),
        Family::V6 => {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("prefix length within 128"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn roundtrip(family: Family, input: &[&str]) -> Vec<IpNet> {
        let canon = crate::canonical(nets(input));
        let rs = ranges(family, &canon);
        let elems = elements(family, &rs);
        let back =
            ranges_from_elements(family, elems.iter().map(|e| (e.key, e.end)).collect()).unwrap();
        assert_eq!(back, rs);
        crate::canonical(back.into_iter().flat_map(|r| cidrs(family, r)))
    }

    #[test]
    fn prefix_becomes_start_and_end_with_zero_marker() {
        let rs = ranges(Family::V4, &nets(&["192.0.2.0/24"]));
        let e = elements(Family::V4, &rs);
        assert_eq!(
            e,
            vec![
                Element {
                    key: 0,
                    end: true,
                    open: false
                },
                Element {
                    key: 0xc0000200,
                    end: false,
                    open: false
                },
                Element {
                    key: 0xc0000300,
                    end: true,
                    open: false
                },
            ]
        );
    }

    #[test]
    fn whole_space_has_no_end_element() {
        let e = elements(Family::V4, &ranges(Family::V4, &nets(&["0.0.0.0/0"])));
        assert_eq!(
            e,
            vec![Element {
                key: 0,
                end: false,
                open: true
            }]
        );
        let e = elements(Family::V6, &ranges(Family::V6, &nets(&["::/0"])));
        assert_eq!(
            e,
            vec![Element {
                key: 0,
                end: false,
                open: true
            }]
        );
        assert_eq!(roundtrip(Family::V4, &["0.0.0.0/0"]), nets(&["0.0.0.0/0"]));
        assert_eq!(roundtrip(Family::V6, &["::/0"]), nets(&["::/0"]));
    }

    #[test]
    fn top_of_space_prefix_is_open() {
        let e = elements(
            Family::V4,
            &ranges(Family::V4, &nets(&["255.255.255.0/24"])),
        );
        assert_eq!(e.len(), 2);
        assert!(e[1].open && !e[1].end);
        let v6 = ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"];
        assert_eq!(roundtrip(Family::V6, &v6), nets(&v6));
    }

    #[test]
    fn adjacent_prefixes_merge_into_one_range_and_split_back() {
        let input = ["10.0.0.0/8", "11.0.0.0/8", "198.51.100.0/24"];
        let rs = ranges(Family::V4, &nets(&input));
        assert_eq!(rs.len(), 2);
        assert_eq!(
            rs[0],
            Range {
                first: 0x0a000000,
                last: 0x0bffffff
            }
        );
        assert_eq!(
            roundtrip(Family::V4, &input),
            crate::canonical(nets(&input))
        );
    }

    #[test]
    fn odd_ranges_decompose_minimally() {
        // 192.0.2.1 - 192.0.2.6: .1/32 .2/31 .4/31 .6/32
        let got = cidrs(
            Family::V4,
            Range {
                first: 0xc0000201,
                last: 0xc0000206,
            },
        );
        assert_eq!(
            got,
            nets(&[
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ])
        );
        let got = cidrs(
            Family::V6,
            Range {
                first: 1,
                last: u128::MAX,
            },
        );
        assert_eq!(got.len(), 128);
        assert_eq!(got[0], "::1/128".parse::<IpNet>().unwrap());
        assert_eq!(got[127], "8000::/1".parse::<IpNet>().unwrap());
    }

    #[test]
    fn many_mixed_prefixes_roundtrip() {
        let input = [
            "192.0.2.0/25",
            "192.0.2.128/26",
            "198.51.100.7/32",
            "203.0.113.0/24",
            "255.255.255.255/32",
            "0.0.0.0/32",
        ];
        assert_eq!(
            roundtrip(Family::V4, &input),
            crate::canonical(nets(&input))
        );
        let input6 = [
            "2001:db8::/33",
            "2001:db8:8000::/34",
            "2001:db8:ffff::1/128",
            "::/128",
        ];
        assert_eq!(
            roundtrip(Family::V6, &input6),
            crate::canonical(nets(&input6))
        );
    }

    #[test]
    fn malformed_elements_are_rejected() {
        assert!(ranges_from_elements(Family::V4, vec![(5, false), (9, false)]).is_err());
        assert!(ranges_from_elements(Family::V4, vec![(5, true)]).is_err());
        assert!(ranges_from_elements(Family::V4, vec![(5, false), (5, true)]).is_err());
        // Order does not matter; the zero marker is accepted.
        let r = ranges_from_elements(Family::V4, vec![(9, true), (0, true), (5, false)]).unwrap();
        assert_eq!(r, vec![Range { first: 5, last: 8 }]);
    }
}
