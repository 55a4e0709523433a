//! The stamp maint writes into its table's comment: proof of ownership plus what the rules
//! carry only in encoded form (the port map and the window's end).
//!
//! It lives in the table's userdata as nft's own comment TLV, so `nft list table` shows it as
//! `comment "maint:1 ports=80>8503 until=1700000000"`, `nft -f` of the rendered text loads
//! the very same bytes, and `current()` reads the policy's scalar half from one attribute
//! instead of reverse-engineering rule expressions. The rules are still checked against it.
//!
//! `id=` is the policy's digest ([`Policy::digest`]): with it, `status`, an unchanged `on`
//! and `off` learn what is in force from this one attribute, whatever the number of
//! prefixes. Tables stamped before it existed have none and are read back in full.

use anyhow::{bail, Context};

use crate::{Policy, PortMap};

/// Every stamp starts with this; a table whose comment does not is not maint's.
pub const MARK: &str = "maint:";
const VERSION: &str = "maint:1";

/// nft's userdata type for a table comment (NFTNL_UDATA_TABLE_COMMENT).
const UDATA_TABLE_COMMENT: u8 = 0;
/// nft refuses comments longer than this (NFTNL_UDATA_COMMENT_MAXLEN), and the rendered
/// ruleset must stay loadable by `nft -f`; the kernel's own cap (256 bytes) is looser.
const MAX_TEXT: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ports: Vec<PortMap>,
    pub until: Option<u64>,
    pub digest: Option<String>,
    /// `drain`: only connection-opening segments are redirected (see `rules`).
    pub drain: bool,
}

impl Stamp {
    pub fn of(policy: &Policy) -> Stamp {
        Stamp {
            ports: policy.ports.clone(),
            until: policy.until,
            digest: Some(policy.digest()),
            drain: policy.drain,
        }
    }

    pub fn text(&self) -> anyhow::Result<String> {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("{}>{}", p.public, p.server))
            .collect();
        let mut s = format!("{VERSION} ports={}", ports.join(","));
        if let Some(u) = self.until {
            s.push_str(&format!(" until={u}"));
        }
        if let Some(d) = &self.digest {
            s.push_str(&format!(" id={d}"));
        }
        if self.drain {
            s.push_str(" drain");
        }
        if s.len() > MAX_TEXT {
            bail!(
                "{} port mappings do not fit in the table's comment (at most {MAX_TEXT} bytes)",
                self.ports.len()
            );
        }
        Ok(s)
    }

    pub fn parse(text: &str) -> anyhow::Result<Stamp> {
        let mut words = text.split(' ');
        if words.next() != Some(VERSION) {
            bail!("stamp {text:?} is not a {VERSION} stamp");
        }
        let ports = words
            .next()
            .and_then(|w| w.strip_prefix("ports="))
            .with_context(|| format!("stamp {text:?} has no ports="))?;
        let ports = if ports.is_empty() {
            Vec::new()
        } else {
            ports
                .split(',')
                .map(|p| {
                    let (public, server) = p.split_once('>')?;
                    Some(PortMap {
                        public: public.parse().ok()?,
                        server: server.parse().ok()?,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("stamp {text:?} has a malformed port map"))?
        };
        let mut words = words.peekable();
        let mut until = None;
        if let Some(w) = words.next_if(|w| w.starts_with("until=")) {
            until = Some(
                w["until=".len()..]
                    .parse()
                    .ok()
                    .with_context(|| format!("stamp {text:?} has a malformed until="))?,
            );
        }
        let mut digest = None;
        if let Some(w) = words.next_if(|w| w.starts_with("id=")) {
            let d = &w["id=".len()..];
            if d.len() != 16 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("stamp {text:?} has a malformed id=");
            }
            digest = Some(d.to_owned());
        }
        let drain = words.next_if(|w| *w == "drain").is_some();
        if words.next().is_some() {
            bail!("stamp {text:?} has trailing words");
        }
        Ok(Stamp {
            ports,
            until,
            digest,
            drain,
        })
    }
}

/// The table userdata carrying `comment`, in nft's TLV layout.
pub fn userdata(comment: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(UDATA_TABLE_COMMENT);
    v.push((comment.len() + 1) as u8);
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

/// The comment inside table userdata, if there is one.
pub fn comment(udata: &[u8]) -> Option<&str> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if ty == UDATA_TABLE_COMMENT {
            return super::nla::cstr(value);
        }
        rest = &rest[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrips_through_userdata() {
        let s = Stamp {
            ports: vec![
                PortMap {
                    public: 80,
                    server: 8503,
                },
                PortMap {
                    public: 443,
                    server: 8504,
                },
            ],
            until: Some(1_700_000_000),
            digest: Some("00112233aabbccdd".into()),
            drain: true,
        };
        let text = s.text().unwrap();
        assert_eq!(
            text,
            "maint:1 ports=80>8503,443>8504 until=1700000000 id=00112233aabbccdd drain"
        );
        let ud = userdata(&text);
        assert_eq!(ud[0], 0);
        assert_eq!(ud[1] as usize, text.len() + 1);
        assert_eq!(comment(&ud), Some(text.as_str()));
        assert_eq!(Stamp::parse(comment(&ud).unwrap()).unwrap(), s);
    }

    #[test]
    fn empty_ports_and_no_until() {
        let s = Stamp {
            ports: vec![],
            until: None,
            digest: None,
            drain: false,
        };
        assert_eq!(s.text().unwrap(), "maint:1 ports=");
        assert_eq!(Stamp::parse("maint:1 ports=").unwrap(), s);
    }

    #[test]
    fn foreign_or_malformed_stamps_fail() {
        for bad in [
            "hello",
            "maint:2 ports=80>1",
            "maint:1",
            "maint:1 ports=80",
            "maint:1 ports=80>x",
            "maint:1 ports=80>8503 until=soon",
            "maint:1 ports=80>8503 until=1 extra",
            "maint:1 ports=80>8503 id=123",
            "maint:1 ports=80>8503 id=00112233aabbccdd until=1",
        ] {
            assert!(Stamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_ports_is_an_error_not_a_truncation() {
        let ports = (0..12)
            .map(|i| PortMap {
                public: 10000 + i,
                server: 20000 + i,
            })
            .collect();
        assert!(Stamp {
            drain: false,
            ports,
            until: None,
            digest: Some("00112233aabbccdd".into()),
        }
        .text()
        .is_err());
    }
}
