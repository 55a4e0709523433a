//! What the unprivileged maintenance server may ask the privileged keeper: "let this one
//! visitor through, they opened this pass link". One line each way over the keeper's
//! `admit.sock`, so the whole request can be checked before anything happens:
//!
//! ```text
//! → admit pass4 192.0.2.7/32 <32 hex digits> 192.0.2.7:51234
//! ← ok 3f2a91c0 1767225600        (the pass id, and the admission's end or `-`)
//! ← refused prefix: 192.0.2.0/24 is wider than the /32 passes let through
//! ```
//!
//! The last field is the connection that asked: the keeper kills the visitor's other
//! redirected connections but spares that one, which still has its answer to read.
//! Framing lives here, on both sides; the rules (which set, how wide, how often) are the
//! keeper's (`controller::admit`), since the asking side is the one not trusted.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;

use crate::pass::Token;

/// The longest line either side reads; anything longer is malformed.
pub const MAX_LINE: usize = 256;
/// The keeper's socket. On Linux an abstract socket (in the network namespace, no file):
/// the server, once unprivileged, could not reach a file in a runtime directory only root may
/// search, and the keeper checks every peer's credentials anyway. Elsewhere `admit.sock` in
/// the runtime directory.
pub fn socket_name(runtime_dir: &std::path::Path) -> String {
    let dir = runtime_dir.to_string_lossy();
    if dir.len() <= 80 {
        return format!("maint-admit:{dir}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(dir.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("maint-admit:{hex}")
}

#[cfg(target_os = "linux")]
fn address(runtime_dir: &std::path::Path) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(socket_name(runtime_dir).as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn address(runtime_dir: &std::path::Path) -> std::io::Result<std::os::unix::net::SocketAddr> {
    std::os::unix::net::SocketAddr::from_pathname(runtime_dir.join("admit.sock"))
}

/// The keeper's listener.
pub fn bind(runtime_dir: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let addr = address(runtime_dir)?;
    if let Some(path) = addr.as_pathname() {
        let _ = std::fs::remove_file(path);
    }
    std::os::unix::net::UnixListener::bind_addr(&addr)
}

/// A connection to the keeper (blocking; connecting to a local socket does not wait).
pub fn connect(runtime_dir: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect_addr(&address(runtime_dir)?)
}

/// The set an admission goes into, by the family of the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassSet {
    V4,
    V6,
}

impl PassSet {
    pub fn of(net: &IpNet) -> PassSet {
        match net {
            IpNet::V4(_) => PassSet::V4,
            IpNet::V6(_) => PassSet::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PassSet::V4 => "pass4",
            PassSet::V6 => "pass6",
        }
    }

    fn named(s: &str) -> Option<PassSet> {
        match s {
            "pass4" => Some(PassSet::V4),
            "pass6" => Some(PassSet::V6),
            _ => None,
        }
    }
}

/// Why the keeper said no. The word is the reply's first word after `refused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not one well-formed `admit` line.
    Malformed,
    /// A set other than the pass set of the address's family.
    Set,
    /// Wider than the configured prefix, or not a network address.
    Prefix,
    /// More admissions this minute than `[pass] admissions_per_minute`.
    Rate,
    /// No usable pass has this token (unknown, revoked, ended, or for another maintenance).
    Token,
    /// Maintenance is not on.
    Off,
    /// The peer is neither root nor the server's user.
    Peer,
    /// The firewall refused, or the book could not be written.
    Failed,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::Set,
        Refusal::Prefix,
        Refusal::Rate,
        Refusal::Token,
        Refusal::Off,
        Refusal::Peer,
        Refusal::Failed,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Set => "set",
            Refusal::Prefix => "prefix",
            Refusal::Rate => "rate",
            Refusal::Token => "token",
            Refusal::Off => "off",
            Refusal::Peer => "peer",
            Refusal::Failed => "failed",
        }
    }
}

/// One request, as the keeper reads it. The token is only shape-checked here.
pub struct Request {
    pub set: PassSet,
    pub net: IpNet,
    pub token: Token,
    pub asking: SocketAddr,
}

impl Request {
    pub fn line(&self) -> String {
        format!(
            "admit {} {} {} {}\n",
            self.set.name(),
            self.net,
            self.token.as_str(),
            self.asking
        )
    }

    /// Reads one line (without its newline). Every field must be exactly as [`Request::line`]
    /// writes it; what the set and prefix may be is checked by the keeper, against the config.
    pub fn parse(line: &str) -> Result<Request, (Refusal, String)> {
        let malformed = |why: &str| (Refusal::Malformed, why.to_owned());
        let words: Vec<&str> = line.split(' ').collect();
        let [verb, set, net, token, asking] = words[..] else {
            return Err(malformed("want `admit SET PREFIX TOKEN ADDRESS:PORT`"));
        };
        if verb != "admit" {
            return Err(malformed("the only request is `admit`"));
        }
        let set = PassSet::named(set)
            .ok_or_else(|| (Refusal::Set, format!("{set:?} is not a pass set")))?;
        let net: IpNet = net
            .parse()
            .map_err(|_| malformed("the prefix is not a CIDR prefix"))?;
        let token =
            Token::parse(token).ok_or_else(|| malformed("the token is not 32 hex digits"))?;
        let asking: SocketAddr = asking
            .parse()
            .map_err(|_| malformed("the asking connection is not ADDRESS:PORT"))?;
        Ok(Request {
            set,
            net,
            token,
            asking,
        })
    }
}

/// The keeper's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Admitted { id: String, until: Option<u64> },
    Refused { why: Refusal, detail: String },
}

impl Reply {
    pub fn refused(why: Refusal, detail: impl Into<String>) -> Reply {
        Reply::Refused {
            why,
            detail: detail.into(),
        }
    }

    /// The reply line, cut to [`MAX_LINE`] with its newline.
    pub fn line(&self) -> String {
        let mut s = self.to_string();
        // A detail is ASCII in practice; cut at a character boundary whatever it holds.
        while s.len() > MAX_LINE - 1 {
            s.pop();
        }
        s.push('\n');
        s
    }

    pub fn parse(line: &str) -> Option<Reply> {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match head {
            "ok" => {
                let (id, until) = rest.split_once(' ')?;
                let until = match until {
                    "-" => None,
                    u => Some(u.parse().ok()?),
                };
                Some(Reply::Admitted {
                    id: id.to_owned(),
                    until,
                })
            }
            "refused" => {
                let (word, detail) = rest.split_once(": ").unwrap_or((rest, ""));
                let why = Refusal::ALL.into_iter().find(|r| r.word() == word)?;
                Some(Reply::refused(why, detail))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Admitted { id, until } => match until {
                Some(u) => write!(f, "ok {id} {u}"),
                None => write!(f, "ok {id} -"),
            },
            Reply::Refused { why, detail } => write!(f, "refused {}: {detail}", why.word()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_roundtrip() {
        let token = Token::parse(&"ab".repeat(16)).unwrap();
        let req = Request {
            set: PassSet::V6,
            net: "2001:db8:1::/64".parse().unwrap(),
            token,
            asking: "[2001:db8:1::5]:40000".parse().unwrap(),
        };
        let line = req.line();
        let back = Request::parse(line.trim_end()).unwrap();
        assert_eq!(back.line(), line);
        for r in [
            Reply::Admitted {
                id: "3f2a91c0".into(),
                until: Some(17),
            },
            Reply::Admitted {
                id: "3f2a91c0".into(),
                until: None,
            },
            Reply::refused(Refusal::Rate, "30 a minute"),
        ] {
            assert_eq!(Reply::parse(r.line().trim_end()), Some(r));
        }
    }

    #[test]
    fn anything_else_is_malformed_or_names_its_fault() {
        let t = "ab".repeat(16);
        for (line, why) in [
            ("", Refusal::Malformed),
            ("admit", Refusal::Malformed),
            (
                &format!("add pass4 192.0.2.7/32 {t} 192.0.2.7:1") as &str,
                Refusal::Malformed,
            ),
            (
                &format!("admit src4 192.0.2.7/32 {t} 192.0.2.7:1"),
                Refusal::Set,
            ),
            (
                &format!("admit pass4 192.0.2.7 {t} 192.0.2.7:1"),
                Refusal::Malformed,
            ),
            (
                &format!("admit pass4 192.0.2.7/32 {t}x 192.0.2.7:1"),
                Refusal::Malformed,
            ),
            (
                &format!("admit pass4 192.0.2.7/32 {t} 192.0.2.7"),
                Refusal::Malformed,
            ),
            (
                &format!("admit pass4  192.0.2.7/32 {t} 192.0.2.7:1"),
                Refusal::Malformed,
            ),
        ] {
            assert_eq!(Request::parse(line).err().map(|e| e.0), Some(why), "{line}");
        }
    }

    #[test]
    fn a_long_detail_is_cut_to_the_line_limit() {
        let r = Reply::refused(Refusal::Failed, "x".repeat(1000));
        assert_eq!(r.line().len(), MAX_LINE);
    }
}
