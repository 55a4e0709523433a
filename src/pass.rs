//! Pass links: a secret link that, opened on the maintenance page, lets the visitor's own
//! address through to the app for a while (`maint pass new`).
//!
//! This module is the book of passes kept in the state directory (`passes.json`), and the
//! tokens. A token is 128 random bits, shown once, when the pass is made; the book keeps only
//! its SHA-256, so reading the state directory gives no link away, and a link is looked up by
//! comparing digests in constant time. The short `id` names a pass everywhere else (`pass list`,
//! `pass revoke`, the audit trail) and says nothing about its token.
//!
//! Who changes the book: `maint pass` (new, revoke), `on` and `off` (a pass belongs to one
//! maintenance and ends with it), and the keeper (admissions, and their end on pf). All of
//! them hold the state lock.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::{self, Actor};

/// Random bytes in a token: 128 bits, as the issue and OWASP's session-ID guidance ask.
const TOKEN_BYTES: usize = 16;
/// A token as it travels: lowercase hex.
pub const TOKEN_LEN: usize = TOKEN_BYTES * 2;
/// Random bytes in an id: enough to tell a few passes apart, nothing to guess a token by.
const ID_BYTES: usize = 4;
/// The path a link starts with, on every site the server answers for.
pub const LINK_PREFIX: &str = "/.maint/pass/";
/// At most this many passes at once: the book is read on every admission.
pub const MAX_PASSES: usize = 256;
/// At most this many addresses let through by one pass; further visitors are refused.
pub const MAX_ADMITTED_PER_PASS: usize = 256;
/// Longest note kept with a pass.
pub const NOTE_MAX_BYTES: usize = 200;

/// A secret link's token, as the visitor's browser sends it.
pub struct Token(String);

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot read random bytes for a pass token: {e}"))?;
        Ok(Token(hex(&bytes)))
    }

    /// A token as it arrived: exactly [`TOKEN_LEN`] lowercase hex digits, or nothing.
    pub fn parse(s: &str) -> Option<Token> {
        (s.len() == TOKEN_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Token(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the book keeps: the token's SHA-256, in hex.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// The first characters, for logs that must never hold a whole token.
    pub fn redacted(&self) -> String {
        format!("{}…", &self.0[..6])
    }
}

/// A random id for a new pass.
fn new_id() -> Result<String> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for a pass id: {e}"))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One address (or prefix) let through by a pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub net: IpNet,
    /// When it was let through, and until when (Unix seconds; `None`: until maintenance ends).
    pub at: u64,
    pub until: Option<u64>,
}

impl Admitted {
    pub fn ended_at(&self, now: u64) -> bool {
        self.until.is_some_and(|u| now >= u)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pass {
    pub id: String,
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
    pub note: Option<String>,
    pub created: u64,
    /// Its own end (Unix seconds), if it was given one (`--for`).
    pub until: Option<u64>,
    /// The maintenance it belongs to, by its `since`; `None` for a pass made while
    /// maintenance was off, which belongs to the next one (bound when `on` starts it).
    pub made_for: Option<u64>,
    pub by: Actor,
    #[serde(default)]
    pub admitted: Vec<Admitted>,
}

impl Pass {
    /// Whether it lets anyone through at `now` during the maintenance that began at `since`.
    pub fn usable(&self, since: u64, now: u64) -> bool {
        self.made_for == Some(since) && self.until.is_none_or(|u| now < u)
    }

    /// Until when an admission made at `now` lasts: the pass's own end or the window's,
    /// whichever comes first.
    pub fn admission_end(&self, window_until: Option<u64>) -> Option<u64> {
        match (self.until, window_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every pass, as kept in `passes.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub passes: Vec<Pass>,
}

impl Book {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("passes.json")
    }

    /// The book in `state_dir`; an empty one when there is none yet.
    pub fn load(state_dir: &Path) -> Result<Book> {
        let path = Book::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a pass book maint wrote", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the book atomically (readable by all: it holds digests, never tokens), or
    /// removes the file when the book is empty.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Book::path(state_dir);
        if self.passes.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let json = serde_json::to_vec_pretty(self)?;
        state::write_atomically(&path, &json)
    }

    /// The pass whose token is `token`, comparing every digest in constant time so the time
    /// taken says nothing about how close a guess came.
    pub fn find(&self, token: &Token) -> Option<&Pass> {
        let digest = token.digest();
        let mut found = None;
        for p in &self.passes {
            if bool::from(p.token_sha256.as_bytes().ct_eq(digest.as_bytes())) {
                found = Some(p);
            }
        }
        found
    }

    pub fn find_mut_by_id(&mut self, id: &str) -> Option<&mut Pass> {
        self.passes.iter_mut().find(|p| p.id == id)
    }

    /// Adds a pass; returns it with the token, which nothing keeps.
    pub fn create(
        &mut self,
        note: Option<String>,
        until: Option<u64>,
        made_for: Option<u64>,
        by: Actor,
        now: u64,
    ) -> Result<(Pass, Token)> {
        if self.passes.len() >= MAX_PASSES {
            bail!(
                "there are {MAX_PASSES} passes already; revoke some first (`maint pass list`, \
                 `maint pass revoke ID` or `--all`)"
            );
        }
        let token = Token::generate()?;
        let mut id = new_id()?;
        while self.passes.iter().any(|p| p.id == id) {
            id = new_id()?;
        }
        let pass = Pass {
            id,
            token_sha256: token.digest(),
            note,
            created: now,
            until,
            made_for,
            by,
            admitted: Vec::new(),
        };
        self.passes.push(pass.clone());
        Ok((pass, token))
    }

    /// `on` started maintenance at `since`: passes made while it was off belong to it now,
    /// and those of an earlier maintenance (one whose end nobody noted) are gone.
    pub fn bind_to(&mut self, since: u64) {
        self.passes
            .retain(|p| p.made_for.is_none_or(|s| s == since));
        for p in &mut self.passes {
            p.made_for.get_or_insert(since);
        }
    }

    /// Maintenance ended: its passes end with it. Passes made while it was off stay, for the
    /// next one. Returns the ids removed.
    pub fn end_maintenance(&mut self) -> Vec<String> {
        let gone = self
            .passes
            .iter()
            .filter(|p| p.made_for.is_some())
            .map(|p| p.id.clone())
            .collect();
        self.passes.retain(|p| p.made_for.is_none());
        gone
    }

    /// Every prefix let through now (at `now`), for the kernel's pass set and for the state
    /// kills that must spare them.
    pub fn admitted_now(&self, now: u64) -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = self
            .passes
            .iter()
            .flat_map(|p| &p.admitted)
            .filter(|a| !a.ended_at(now))
            .map(|a| a.net)
            .collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// Drops the admissions and passes that have ended at `now`, and returns the prefixes no
    /// pass lets through any more (for pf, which cannot expire them by itself).
    pub fn expire(&mut self, now: u64) -> Vec<IpNet> {
        let before: Vec<IpNet> = self
            .passes
            .iter()
            .flat_map(|p| &p.admitted)
            .map(|a| a.net)
            .collect();
        for p in &mut self.passes {
            p.admitted.retain(|a| !a.ended_at(now));
        }
        self.passes.retain(|p| p.until.is_none_or(|u| now < u));
        let still = self.admitted_now(now);
        let mut gone: Vec<IpNet> = before.into_iter().filter(|n| !still.contains(n)).collect();
        gone.sort();
        gone.dedup();
        gone
    }
}

/// The prefix a pass lets through for `addr`: the address itself for IPv4 (or the configured
/// wider prefix), its /64 (by default) for IPv6, where one client's addresses change within
/// its network by design (RFC 8981 temporary addresses).
pub fn prefix_for(addr: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> IpNet {
    let addr = maint_backends::unmap(addr);
    let len = if addr.is_ipv4() {
        ipv4_prefix
    } else {
        ipv6_prefix
    };
    IpNet::new(addr, len).map_or_else(|_| IpNet::from(addr), |n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor {
            user: "alice".into(),
            origin: None,
        }
    }

    #[test]
    fn tokens_are_long_random_hex_and_only_their_digest_is_kept() {
        let mut book = Book::default();
        let (pass, token) = book.create(None, None, Some(100), actor(), 100).unwrap();
        assert_eq!(token.as_str().len(), 32);
        assert!(Token::parse(token.as_str()).is_some());
        assert_ne!(pass.token_sha256, token.as_str());
        let json = serde_json::to_string(&book).unwrap();
        assert!(!json.contains(token.as_str()));
        assert_eq!(book.find(&token).map(|p| &p.id), Some(&pass.id));
        let (_, other) = book.create(None, None, Some(100), actor(), 100).unwrap();
        assert_ne!(other.as_str(), token.as_str());
        let guess = Token::parse(&"0".repeat(32)).unwrap();
        assert!(book.find(&guess).is_none());
        assert!(!token.redacted().contains(&token.as_str()[6..]));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"0".repeat(33)] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn passes_belong_to_one_maintenance() {
        let mut book = Book::default();
        book.create(None, None, None, actor(), 10).unwrap(); // made while off
        book.create(None, None, Some(5), actor(), 6).unwrap(); // an earlier one's
        book.bind_to(20);
        assert_eq!(book.passes.len(), 1);
        assert!(book.passes[0].usable(20, 21));
        assert!(!book.passes[0].usable(30, 31));
        book.create(None, None, None, actor(), 40).unwrap(); // made while off again
        assert_eq!(book.end_maintenance().len(), 1);
        assert_eq!(book.passes.len(), 1);
        assert_eq!(book.passes[0].made_for, None);
    }

    #[test]
    fn admissions_end_with_the_pass_or_the_window() {
        let mut book = Book::default();
        let (mut p, _) = book.create(None, Some(100), Some(1), actor(), 1).unwrap();
        assert_eq!(p.admission_end(Some(50)), Some(50));
        assert_eq!(p.admission_end(None), Some(100));
        p.until = None;
        assert_eq!(p.admission_end(None), None);
        let net: IpNet = "192.0.2.7/32".parse().unwrap();
        book.passes[0].admitted.push(Admitted {
            net,
            at: 1,
            until: Some(100),
        });
        assert_eq!(book.admitted_now(99), [net]);
        assert_eq!(book.expire(99), Vec::<IpNet>::new());
        assert_eq!(book.expire(100), [net]);
        assert!(book.passes.is_empty());
    }

    #[test]
    fn prefixes_are_the_address_or_its_network() {
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(prefix_for(v6, 32, 64).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(prefix_for(mapped, 32, 64).to_string(), "192.0.2.7/32");
        assert_eq!(
            prefix_for("192.0.2.7".parse().unwrap(), 24, 64).to_string(),
            "192.0.2.0/24"
        );
    }
}
