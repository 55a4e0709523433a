//! Source tokens as operators type them (`all`, `198.51.100.0/24`, `2001:db8::1`, `office`)
//! turned into prefixes, and the window flags (`--for`, `--until`) turned into a Unix time.
//!
//! Every error names the token that was wrong and what would have been accepted, because the
//! operator running `maint on` at 2 a.m. should not have to guess.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Deserialize;

/// One `[aliases]` entry: its prefixes in the config, or a file of them (one per line, `#`
/// comments), read only when the alias is used, so a list of a million costs `status`
/// nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Alias {
    List(Vec<String>),
    File { file: std::path::PathBuf },
}

/// A bad source token or window. Reported as bad input (exit 2); nothing is changed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("bad source {token:?}: {why}")]
    Source { token: String, why: String },
    #[error("bad --for {token:?}: {why}")]
    For { token: String, why: String },
    #[error("bad --until {token:?}: {why}")]
    Until { token: String, why: String },
}

const ALL: &str = "all";

pub fn is_reserved(name: &str) -> bool {
    name == ALL
}

/// Parses an address or CIDR prefix. Host bits are allowed and cleared (`192.0.2.9/24` means
/// 192.0.2.0/24), as operators copy addresses with their interface prefix.
///
/// IPv4-mapped IPv6 prefixes (`::ffff:198.51.100.10`, `::ffff:198.51.100.0/120`) are the IPv4
/// prefixes they map: IPv4 clients reach the host as IPv4, so as IPv6 they would never match.
pub fn parse_prefix(token: &str) -> Result<IpNet, String> {
    let token = token.trim();
    // The common case first, with the standard library's address parser: an alias file of a
    // million prefixes spends most of an unchanged `on` here.
    if let Some((addr, len)) = token
        .split_once('/')
        .filter(|(_, len)| !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()))
    {
        if let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            if let Ok(net) = IpNet::new(addr, len) {
                return Ok(unmap(net.trunc()));
            }
        }
    }
    if let Ok(net) = token.parse::<IpNet>() {
        return Ok(unmap(net.trunc()));
    }
    if let Ok(addr) = token.parse::<IpAddr>() {
        return Ok(unmap(IpNet::from(addr)));
    }
    if let Some((addr, len)) = token.split_once('/') {
        if addr.parse::<IpAddr>().is_err() {
            return Err(format!("{addr:?} is not an IPv4 or IPv6 address"));
        }
        return Err(format!(
            "prefix length {len:?} is out of range (0-32 for IPv4, 0-128 for IPv6)"
        ));
    }
    Err("not an IPv4/IPv6 address or CIDR prefix".into())
}

/// An IPv4-mapped IPv6 prefix (`::ffff:0:0/96` and longer) as the IPv4 prefix it maps.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("96..=128 minus 96 fits"),
            ),
            None => net,
        },
        other => other,
    }
}

/// The latest end a window may have, Unix seconds: 2262-04-11T23:47:16Z, the last second a
/// signed 64-bit count of nanoseconds reaches. nftables' `meta time` (unsigned nanoseconds)
/// and pf's tag go further; maint's record and clock arithmetic do not.
pub const LATEST_WINDOW_END: u64 = (i64::MAX / 1_000_000_000) as u64;

/// Resolved sources: the prefixes, plus what the operator should hear about them.
#[derive(Debug, Default)]
pub struct Resolved {
    pub prefixes: Vec<IpNet>,
    pub warnings: Vec<String>,
}

/// The prefixes of an alias file: one per line; blank lines and `#` comments are skipped.
///
/// A million-line file is read on every `maint on`, even an unchanged one, so the common line
/// (`a.b.c.d/len`) is read in one pass by [`plain_ipv4_line`]; anything else goes through
/// [`parse_prefix`].
fn read_alias_file(
    alias: &str,
    file: &std::path::Path,
    out: &mut Vec<IpNet>,
) -> Result<(), InputError> {
    let bad = |why: String| InputError::Source {
        token: alias.into(),
        why,
    };
    let bytes = std::fs::read(file)
        .map_err(|e| bad(format!("cannot read its file {}: {e}", file.display())))?;
    // About 16 bytes a line: room for all of them at once.
    out.reserve(bytes.len() / 16);
    let mut rest = &bytes[..];
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        if let Some((net, used)) = plain_ipv4_line(rest) {
            out.push(net);
            rest = &rest[used..];
            continue;
        }
        let end = rest.iter().position(|&b| b == b'\n');
        let (line, tail) = rest.split_at(end.map_or(rest.len(), |at| at + 1));
        rest = tail;
        let entry = match line.iter().position(|&b| b == b'#') {
            Some(at) => &line[..at],
            None => line,
        }
        .trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let at = |why: String| bad(format!("{}:{line_no}: {why}", file.display()));
        let entry = std::str::from_utf8(entry)
            .map_err(|_| at("not UTF-8 text; an alias file holds one prefix per line".into()))?;
        let net = parse_prefix(entry).map_err(|why| at(format!("{entry:?}: {why}")))?;
        out.push(net);
    }
    Ok(())
}

/// A line that is exactly `a.b.c.d/len` (no leading zeros, `len` at most 32), ended by a
/// newline or the end of the text: the prefix, host bits cleared, and the bytes it used, newline
/// included. `None` for anything else, which [`parse_prefix`] then decides. Never accepts what
/// `parse_prefix` refuses, nor reads a line differently (a property test holds it to that).
fn plain_ipv4_line(text: &[u8]) -> Option<(IpNet, usize)> {
    let mut at = 0;
    // A decimal number of 1 to 3 digits without a leading zero, up to `max`, ended by `end`.
    let mut number = |max: u32, end: u8| -> Option<u32> {
        let start = at;
        let mut n = 0u32;
        while let Some(&b) = text.get(at).filter(|b| b.is_ascii_digit()) {
            n = n * 10 + u32::from(b - b'0');
            at += 1;
            if at - start > 3 {
                return None;
            }
        }
        let digits = at - start;
        if digits == 0 || (digits > 1 && text[start] == b'0') || n > max {
            return None;
        }
        match text.get(at) {
            Some(&b) if b == end => at += 1,
            None if end == b'\n' => {}
            _ => return None,
        }
        Some(n)
    };
    let mut bits = 0u32;
    for end in [b'.', b'.', b'.', b'/'] {
        bits = bits << 8 | number(255, end)?;
    }
    let len = number(32, b'\n')?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let net = ipnet::Ipv4Net::new((bits & mask).into(), len as u8).ok()?;
    Some((IpNet::V4(net), at))
}

/// Resolves tokens (each may also be a comma-separated list) against the config's aliases.
pub fn resolve(
    tokens: &[String],
    aliases: &BTreeMap<String, Alias>,
) -> Result<Resolved, InputError> {
    let mut out = Resolved::default();
    for token in tokens.iter().flat_map(|t| t.split(',')).map(str::trim) {
        if token.is_empty() {
            continue;
        }
        if token.eq_ignore_ascii_case(ALL) {
            out.prefixes.extend(maint_backends::everything());
        } else if let Some(alias) = aliases.get(token) {
            match alias {
                Alias::List(entries) => {
                    for entry in entries {
                        // Config validation already checked alias entries; this cannot fail
                        // for a loaded config, but a clear error beats a panic if it ever does.
                        let net = parse_prefix(entry).map_err(|why| InputError::Source {
                            token: token.into(),
                            why: format!("alias entry {entry:?}: {why}"),
                        })?;
                        out.prefixes.push(net);
                    }
                }
                Alias::File { file } => read_alias_file(token, file, &mut out.prefixes)?,
            }
        } else {
            let net = parse_prefix(token).map_err(|why| {
                let looks_like_name = token
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-".contains(c));
                let why = if looks_like_name {
                    let known = if aliases.is_empty() {
                        "no aliases are defined in the config".to_string()
                    } else {
                        format!(
                            "known aliases: {}",
                            aliases.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    format!("not an address, a CIDR prefix, \"all\", or an alias ({known})")
                } else {
                    why
                };
                InputError::Source {
                    token: token.into(),
                    why,
                }
            })?;
            if matches!(net, IpNet::V4(_)) && token.contains(':') {
                out.warnings.push(format!(
                    "{token} is an IPv4-mapped IPv6 prefix: maint matches it as the IPv4 prefix {net}"
                ));
            }
            if net.prefix_len() == 0 && matches!(net, IpNet::V4(_)) {
                out.warnings.push(
                    "0.0.0.0/0 covers IPv4 only; IPv6 clients are not redirected (use `all` for both)"
                        .into(),
                );
            } else if net.prefix_len() == 0 {
                out.warnings.push(
                    "::/0 covers IPv6 only; IPv4 clients are not redirected (use `all` for both)"
                        .into(),
                );
            }
            out.prefixes.push(net);
        }
    }
    Ok(out)
}

/// Turns `--for` / `--until` into the window's end as Unix seconds.
pub fn window_end(
    for_: Option<&str>,
    until: Option<&str>,
    now: SystemTime,
) -> Result<Option<u64>, InputError> {
    let end = match (for_, until) {
        (Some(text), _) => {
            let bad = |why: String| InputError::For {
                token: text.into(),
                why,
            };
            if text.trim_start().starts_with('-') {
                return Err(bad(
                    "a window cannot end in the past; give a positive duration like 30m".into(),
                ));
            }
            let d = humantime::parse_duration(text.trim())
                .map_err(|e| bad(format!("{e}; write a duration like 30m, 2h or 1h30m")))?;
            if d < Duration::from_secs(1) {
                return Err(bad("a window must last at least one second".into()));
            }
            now.checked_add(d)
                .filter(|end| before_latest(*end))
                .ok_or_else(|| bad(too_late()))?
        }
        (None, Some(text)) => {
            let bad = |why: String| InputError::Until {
                token: text.into(),
                why,
            };
            let at = parse_time(text.trim()).map_err(|e| {
                bad(format!(
                    "{e}; write a time like 2026-12-01T02:00 (local) or 2026-12-01T02:00:00Z"
                ))
            })?;
            if at <= now {
                return Err(bad("that time is already past".into()));
            }
            if !before_latest(at) {
                return Err(bad(too_late()));
            }
            at
        }
        (None, None) => return Ok(None),
    };
    // Round up: `--for 2s` must last at least two seconds, not end at the next whole second.
    let since_epoch = end.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Some(
        since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0),
    ))
}

fn before_latest(end: SystemTime) -> bool {
    end < UNIX_EPOCH + Duration::from_secs(LATEST_WINDOW_END)
}

fn too_late() -> String {
    format!(
        "a window can end {} at the latest",
        crate::time::rfc3339(LATEST_WINDOW_END)
    )
}

/// Accepts RFC 3339 with an offset, or a civil date-time (seconds optional) in local time.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(SystemTime::from(ts));
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|e: jiff::Error| e.to_string())?;
    let zoned = civil
        .to_zoned(jiff::tz::TimeZone::system())
        .map_err(|e| e.to_string())?;
    Ok(SystemTime::from(zoned.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> BTreeMap<String, Alias> {
        BTreeMap::from([(
            "office".to_string(),
            Alias::List(vec![
                "203.0.113.0/24".to_string(),
                "2001:db8:1::/48".to_string(),
            ]),
        )])
    }

    #[test]
    fn an_alias_file_is_read_when_used_and_its_bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("partners.txt");
        std::fs::write(
            &file,
            "# partners\n198.51.100.0/24\n\n2001:db8:5::/48  # lab\n",
        )
        .unwrap();
        let mut aliases = aliases();
        aliases.insert("partners".into(), Alias::File { file: file.clone() });
        let r = resolve(&toks(&["partners"]), &aliases).unwrap();
        assert_eq!(
            r.prefixes,
            vec![
                "198.51.100.0/24".parse::<IpNet>().unwrap(),
                "2001:db8:5::/48".parse().unwrap()
            ]
        );
        std::fs::write(&file, "198.51.100.0/24\n198.51.100.0/33\n").unwrap();
        let e = resolve(&toks(&["partners"]), &aliases)
            .unwrap_err()
            .to_string();
        assert!(e.contains("partners.txt:2") && e.contains("/33"), "{e}");
        // Windows line ends are read; a byte that is not text is named by its line.
        std::fs::write(&file, b"198.51.100.0/24\r\n\n198.51.\xff.0/24\n").unwrap();
        let e = resolve(&toks(&["partners"]), &aliases)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partners.txt:3") && e.contains("not UTF-8"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        let e = resolve(&toks(&["partners"]), &aliases)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read its file"), "{e}");
    }

    fn toks(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn all_alias_cidr_and_bare_address() {
        let r = resolve(
            &toks(&["office", "198.51.100.7", "192.0.2.9/24"]),
            &aliases(),
        )
        .unwrap();
        let want: Vec<IpNet> = [
            "203.0.113.0/24",
            "2001:db8:1::/48",
            "198.51.100.7/32",
            "192.0.2.0/24",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(r.prefixes, want);
        let all = resolve(&toks(&["all"]), &aliases()).unwrap();
        assert_eq!(all.prefixes, maint_backends::everything());
        assert!(all.warnings.is_empty());
    }

    #[test]
    fn the_fast_ipv4_path_takes_the_plain_form_only() {
        let fast = |s: &str| plain_ipv4_line(s.as_bytes()).map(|(n, used)| (n.to_string(), used));
        assert_eq!(fast("10.0.0.9/30\n1"), Some(("10.0.0.8/30".into(), 12)));
        assert_eq!(fast("0.0.0.0/0"), Some(("0.0.0.0/0".into(), 9)));
        assert_eq!(
            fast("255.255.255.255/32"),
            Some(("255.255.255.255/32".into(), 18))
        );
        for other in [
            "10.0.0.1",
            "010.0.0.0/8",
            "10.0.0.0/033",
            "10.0.0.0/",
            "1.2.3.4.5/32",
            "10.0.0.0/8 # lab",
            "10.0.0.0/8\r\n",
            " 10.0.0.0/8",
        ] {
            assert_eq!(fast(other), None, "{other}");
        }
        for refused in ["256.0.0.0/8", "10.0.0.0/33", "10.0.0/8"] {
            assert_eq!(fast(refused), None, "{refused}");
            assert!(parse_prefix(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn ipv4_default_route_warns() {
        let r = resolve(&toks(&["0.0.0.0/0"]), &aliases()).unwrap();
        assert!(r.warnings[0].contains("IPv4 only"));
    }

    #[test]
    fn bad_tokens_are_named() {
        let e = resolve(&toks(&["198.51.100.0/33"]), &aliases())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("198.51.100.0/33") && e.contains("out of range"),
            "{e}"
        );
        let e = resolve(&toks(&["offce"]), &aliases())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("offce") && e.contains("known aliases: office"),
            "{e}"
        );
        let e = resolve(&toks(&["198.51.100.300"]), &aliases())
            .unwrap_err()
            .to_string();
        assert!(e.contains("198.51.100.300"), "{e}");
    }

    #[test]
    fn windows() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(window_end(Some("30m"), None, now).unwrap(), Some(1_001_800));
        let mid_second = now + Duration::from_millis(300);
        assert_eq!(
            window_end(Some("2s"), None, mid_second).unwrap(),
            Some(1_000_003),
            "at least 2 s"
        );
        assert!(window_end(Some("-5m"), None, now)
            .unwrap_err()
            .to_string()
            .contains("-5m"));
        assert!(window_end(Some("soon"), None, now).is_err());
        assert_eq!(
            window_end(None, Some("2026-12-01T02:00:00Z"), now).unwrap(),
            Some(1_796_090_400)
        );
        assert!(window_end(None, Some("1970-01-01T00:00:00Z"), now).is_err());
        assert_eq!(window_end(None, None, now).unwrap(), None);
    }

    #[test]
    fn windows_past_what_maint_can_hold_are_bad_input_not_a_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for huge in ["600y", "292271023045y", "18446744073709551615s"] {
            let err = window_end(Some(huge), None, now).unwrap_err().to_string();
            assert!(err.contains(huge), "{err}");
        }
        assert!(window_end(None, Some("2300-01-01T00:00:00Z"), now).is_err());
        assert!(window_end(Some("200y"), None, now).unwrap().unwrap() < LATEST_WINDOW_END);
    }

    #[test]
    fn ipv4_mapped_prefixes_are_their_ipv4_prefixes() {
        assert_eq!(
            parse_prefix("::ffff:198.51.100.10").unwrap(),
            "198.51.100.10/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_prefix("::ffff:198.51.100.0/120").unwrap(),
            "198.51.100.0/24".parse::<IpNet>().unwrap()
        );
        // Shorter than /96 is not a mapped IPv4 prefix; it stays IPv6.
        assert_eq!(
            parse_prefix("::ffff:0:0/95").unwrap(),
            "::fffe:0:0/95".parse::<IpNet>().unwrap()
        );
        let r = resolve(&toks(&["::ffff:198.51.100.10"]), &aliases()).unwrap();
        assert_eq!(r.prefixes, ["198.51.100.10/32".parse::<IpNet>().unwrap()]);
        assert!(r.warnings[0].contains("IPv4-mapped"), "{:?}", r.warnings);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The alias file's fast path reads a line as `parse_prefix` does, or leaves it to it.
        #[test]
        fn the_fast_ipv4_path_agrees_with_parse_prefix(
            line in "[0-9./]{1,20}|([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,3}",
        ) {
            if let Some((net, used)) = plain_ipv4_line(line.as_bytes()) {
                prop_assert_eq!(used, line.len());
                prop_assert_eq!(Ok(net), parse_prefix(&line));
            }
        }

        /// No token panics the parser; what it accepts is a prefix with no host bits set.
        #[test]
        fn any_token_parses_or_is_refused(token in "\\PC{0,48}") {
            if let Ok(net) = parse_prefix(&token) {
                prop_assert_eq!(net, net.trunc());
            }
            let _ = resolve(&[token], &aliases());
        }

        /// Every address and prefix, as text, parses back to itself (IPv4-mapped ones to IPv4).
        #[test]
        fn prefixes_round_trip(bits in any::<u128>(), len in 0u8..=128, v4 in any::<bool>()) {
            let net: IpNet = if v4 {
                ipnet::Ipv4Net::new((bits as u32).into(), len % 33).unwrap().into()
            } else {
                ipnet::Ipv6Net::new(bits.into(), len).unwrap().into()
            };
            let back = parse_prefix(&net.to_string()).unwrap();
            prop_assert_eq!(back, unmap(net.trunc()));
        }

        /// No --for or --until panics; an accepted window ends after now and before the latest
        /// end maint can hold.
        #[test]
        fn any_window_is_accepted_in_range_or_refused(
            text in "\\PC{0,24}|[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|months)",
            until in any::<bool>(),
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let got = if until {
                window_end(None, Some(&text), now)
            } else {
                window_end(Some(&text), None, now)
            };
            if let Ok(Some(end)) = got {
                prop_assert!(end > 1_800_000_000 && end <= LATEST_WINDOW_END, "{}", end);
            }
        }
    }
}
