//! HTTP/1.1 answers as bytes on the wire, for the hand-written path (`h1`): the page
//! or an asset behind its head, and refusals.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::page::Answer;

/// Bodies up to this size are copied next to their head (one buffer, one write); larger
/// ones are queued as the page's or asset's own shared bytes.
const COPY_BODY_MAX: usize = 16 * 1024;

/// Queues one answer: its head, with the body copied next to it when small, or followed by
/// the body's own shared bytes. Returns the bytes queued.
pub fn queue_answer(
    out: &mut VecDeque<Bytes>,
    a: &Answer,
    close: bool,
    keep_alive_10: bool,
) -> usize {
    let copy_body = a.body.len() <= COPY_BODY_MAX;
    let mut head = Vec::with_capacity(320 + if copy_body { a.body.len() } else { 0 });
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        a.status.as_str(),
        a.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &a.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(&date());
    head.extend_from_slice(b"\r\n");
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive_10 {
        // HTTP/1.0 keeps a connection only when the answer says so (RFC 9112 9.3).
        head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let len = head.len() + a.body.len();
    if copy_body {
        head.extend_from_slice(&a.body);
        out.push_back(Bytes::from(head));
    } else {
        out.push_back(Bytes::from(head));
        out.push_back(a.body.clone());
    }
    len
}

pub fn error(status: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    ))
}

/// The Date header, formatted once per second per thread.
fn date() -> Bytes {
    thread_local! {
        static CACHE: RefCell<(u64, Bytes)> = const { RefCell::new((0, Bytes::new())) };
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE.with_borrow_mut(|(at, value)| {
        if *at != now {
            *at = now;
            *value = Bytes::from(crate::time::httpdate(now));
        }
        value.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_an_http_date() {
        let d = String::from_utf8(date().to_vec()).unwrap();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
    }
}
