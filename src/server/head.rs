//! Reading one HTTP/1.x request head, strictly, as pingora's parser does: what it asks for,
//! whether the connection may carry another request, and what must be refused.

/// What the answer depends on, read from one request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The path the request is for, without query or fragment; `/` for `*` and for targets
    /// that are not paths.
    pub path: &'a str,
    pub accept: Option<&'a str>,
    /// The name the client asked for: the `Host` header, or an absolute-form target's
    /// authority (which wins, RFC 9112 3.2.2).
    pub host: Option<&'a str>,
    /// The client asked to keep the connection (or HTTP/1.1 did not ask to close it).
    pub keep_alive: bool,
    /// HTTP/1.0: keep-alive must then be confirmed in the answer.
    pub http10: bool,
    /// A body follows that is never read, so the connection cannot carry another request.
    pub has_body: bool,
}

/// Why a head is refused with a 400.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

impl<'a> Head<'a> {
    pub fn read(req: &httparse::Request<'a, '_>) -> Result<Head<'a>, Refused> {
        let http10 = req.version == Some(0);
        let mut keep_alive = !http10; // HTTP/1.0 closes unless it asks otherwise
        let mut accept = None;
        let target = req.path.unwrap_or("/");
        let mut host = authority_of(target);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("accept") {
                accept = std::str::from_utf8(h.value).ok();
            } else if h.name.eq_ignore_ascii_case("host") && host.is_none() {
                host = std::str::from_utf8(h.value).ok();
            } else if h.name.eq_ignore_ascii_case("connection") {
                if has_token(h.value, b"close") {
                    keep_alive = false;
                } else if has_token(h.value, b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        Ok(Head {
            method: req.method.unwrap_or("GET"),
            path: path_of(target),
            accept,
            host,
            keep_alive,
            http10,
            has_body: body_framing(req.headers)?,
        })
    }
}

/// The path of a request target (RFC 9112 3.2): origin-form `/a?b`, absolute-form
/// `http://host/a` (proxies send it, and servers must accept it), or `*`.
pub fn path_of(target: &str) -> &str {
    let path = if target.starts_with('/') {
        target
    } else if let Some((_, rest)) = target.split_once("://") {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        "/"
    };
    path.split(['?', '#']).next().unwrap_or("/")
}

/// The authority of an absolute-form target (`http://shop.example:80/a` → `shop.example:80`).
fn authority_of(target: &str) -> Option<&str> {
    let (_, rest) = target.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Whether the request carries a body (which is never read, so the connection cannot be
/// reused after it), or `Err` for framing that must be refused (RFC 9112 6.3, RFC 9110 8.6):
/// a Content-Length that is not plain digits (no sign, no spaces inside), several that
/// disagree, or Content-Length together with Transfer-Encoding.
pub fn body_framing(headers: &[httparse::Header<'_>]) -> Result<bool, Refused> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refused);
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(Refused)?;
            if length.is_some_and(|l| l != n) {
                return Err(Refused);
            }
            length = Some(n);
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(Refused),
        (_, true) => Ok(true),
        (Some(n), false) => Ok(n > 0),
        (None, false) => Ok(false),
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive), without
/// allocating: this runs for every request that sends `Connection`, which browsers all do.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"Keep-Alive", b"keep-alive"));
        assert!(has_token(b"keep-alive, Upgrade", b"keep-alive"));
        assert!(has_token(b" close ", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }

    #[test]
    fn targets_in_every_form() {
        assert_eq!(path_of("/.maint/site.css?v=2"), "/.maint/site.css");
        assert_eq!(
            path_of("http://shop.example/.maint/site.css"),
            "/.maint/site.css"
        );
        assert_eq!(path_of("https://shop.example"), "/");
        assert_eq!(path_of("*"), "/");
        assert_eq!(path_of("/a#frag"), "/a");
    }

    #[test]
    fn content_length_is_plain_digits_and_agrees_with_itself() {
        let h = |pairs: &[(&'static str, &'static [u8])]| -> Vec<httparse::Header<'static>> {
            pairs
                .iter()
                .map(|(name, value)| httparse::Header { name, value })
                .collect()
        };
        assert_eq!(body_framing(&h(&[])), Ok(false));
        assert_eq!(body_framing(&h(&[("Content-Length", b"0")])), Ok(false));
        assert_eq!(body_framing(&h(&[("content-length", b" 12 ")])), Ok(true));
        assert_eq!(
            body_framing(&h(&[("Content-Length", b"5"), ("Content-Length", b"5")])),
            Ok(true)
        );
        assert_eq!(
            body_framing(&h(&[("Transfer-Encoding", b"chunked")])),
            Ok(true)
        );
        for bad in [
            &b"+0"[..],
            b"-5",
            b"1 2",
            b"0x10",
            b"",
            b"99999999999999999999999",
        ] {
            assert_eq!(
                body_framing(&h(&[("Content-Length", bad)])),
                Err(Refused),
                "{bad:?}"
            );
        }
        assert_eq!(
            body_framing(&h(&[("Content-Length", b"5"), ("Content-Length", b"6")])),
            Err(Refused)
        );
        assert_eq!(
            body_framing(&h(&[
                ("Content-Length", b"5"),
                ("Transfer-Encoding", b"chunked")
            ])),
            Err(Refused)
        );
    }
}
