//! Plain HTTP/1.1 connections, served without hyper so that an idle connection costs almost
//! nothing.
//!
//! During maintenance every visitor's browser may hold a keep-alive connection open to us;
//! 10,000 of them must fit in a few megabytes. hyper keeps read and write buffers and timers
//! per connection for as long as it lives (about 25 KB each, measured by tests/bench), so this
//! path keeps none: a connection is a small hand-written future (its socket, one timer, and
//! buffers that are empty between requests). A request is read into a per-thread buffer only
//! once the socket is readable, parsed with `httparse` (hyper's own parser), answered from the
//! pre-rendered page into a per-thread buffer and written at once; only a request head that
//! arrives in pieces, or an answer the client does not take at once, is kept per connection.
//! HTTPS (and with it HTTP/2) stays on hyper in `http`.
//!
//! What the answer does not depend on is not read: request bodies are never buffered; a
//! request that carries one gets its answer with `Connection: close`, and the connection is
//! closed gently (write side first, then a short drain) so the client reads the answer
//! instead of a reset.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::page::Answer;
use super::shared::{ConnectionGuard, Shared};

/// Largest read at once; a request head larger than `max_header_bytes` is refused anyway.
const READ_CHUNK: usize = 16 * 1024;
/// More headers than this is not a browser.
const MAX_HEADERS: usize = 64;
/// How long, and how much, a closing connection is drained so the client sees our answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

thread_local! {
    /// The read buffer, shared by every connection this worker thread serves. Borrowed only
    /// within one poll, never across a suspension.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
    /// Answers are written from here straight away; only what the socket does not take at
    /// once is copied into the connection's own buffer.
    static WRITE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (more of) a request.
    Reading,
    /// Answered with `Connection: close`: flush, shut the write side, drain briefly.
    Closing { drained: usize, shut: bool },
}

pin_project_lite::pin_project! {
    /// One HTTP/1.1 connection. Its size is the cost of an idle keep-alive connection.
    pub struct Conn {
        stream: TcpStream,
        guard: ConnectionGuard,
        // Bytes of a request head that arrived in pieces; unallocated between requests.
        partial: Vec<u8>,
        // Answer bytes the socket has not taken yet, and how many of them it has.
        unsent: Vec<u8>,
        sent: usize,
        // Held while `unsent` is not empty, so a shutdown waits for this answer.
        writing: Option<mpsc::Sender<()>>,
        state: State,
        // Idle timeout between requests, header timeout within a head, linger when closing.
        #[pin]
        deadline: Sleep,
    }
}

impl Conn {
    pub fn new(stream: TcpStream, guard: ConnectionGuard) -> Conn {
        let idle = guard.shared.limits.idle_timeout;
        Conn {
            stream,
            guard,
            partial: Vec::new(),
            unsent: Vec::new(),
            sent: 0,
            writing: None,
            state: State::Reading,
            deadline: tokio::time::sleep(idle),
        }
    }
}

impl Future for Conn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let shared = &this.guard.shared;
        loop {
            // 1. Whatever the client has not taken yet goes first.
            if *this.sent < this.unsent.len() {
                match Pin::new(&mut *this.stream).poll_write(cx, &this.unsent[*this.sent..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *this.sent += n;
                        if *this.sent == this.unsent.len() {
                            *this.writing = None;
                            *this.unsent = Vec::new();
                            *this.sent = 0;
                        }
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                    // A client that does not read its answers is cut off like an idle one.
                    Poll::Pending => return this.deadline.poll(cx),
                }
            }
            // 2. A closing connection: shut our side, then drain what the client still sends
            //    (an unread body) for a moment, so closing does not reset away our answer.
            if let State::Closing { drained, shut } = *this.state {
                if !shut {
                    let _ = Pin::new(&mut *this.stream).poll_shutdown(cx);
                    *this.state = State::Closing {
                        drained,
                        shut: true,
                    };
                    this.deadline.as_mut().reset(Instant::now() + LINGER);
                }
                match this.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return this.deadline.poll(cx),
                }
                let n = READ_BUF.with_borrow_mut(|buf| this.stream.try_read(buf));
                match n {
                    Ok(0) => return Poll::Ready(()),
                    Ok(n) if drained + n > LINGER_BYTES => return Poll::Ready(()),
                    Ok(n) => {
                        *this.state = State::Closing {
                            drained: drained + n,
                            shut: true,
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(()),
                }
                continue;
            }
            // 3. Wait for a request; the deadline is the idle or the header timeout.
            match this.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return this.deadline.poll(cx),
            }
            let limits = &shared.limits;
            let mut close = false;
            let read = READ_BUF.with_borrow_mut(|buf| -> std::io::Result<usize> {
                let n = match this.stream.try_read(buf) {
                    Ok(0) => return Ok(0),
                    Ok(n) => n,
                    Err(e) => return Err(e),
                };
                let was_idle = this.partial.is_empty();
                let data: &[u8] = if was_idle {
                    &buf[..n]
                } else {
                    this.partial.extend_from_slice(&buf[..n]);
                    this.partial
                };
                let rest = WRITE_BUF.with_borrow_mut(|out| {
                    let (used, next) = answer_all(data, shared, limits.max_header_bytes, out);
                    close = next == Next::Close;
                    let rest = data[used..].to_vec();
                    if !out.is_empty() {
                        let sent = this.stream.try_write(out).unwrap_or(0);
                        if sent < out.len() {
                            *this.writing = shared.writing();
                            *this.unsent = out[sent..].to_vec();
                            *this.sent = 0;
                        }
                        out.clear();
                        if out.capacity() > 256 * 1024 {
                            *out = Vec::new(); // after a burst of pipelined requests
                        }
                    }
                    // The clock for an unfinished head starts at its first byte (slowloris);
                    // between requests it is the idle timeout.
                    if rest.is_empty() {
                        this.deadline
                            .as_mut()
                            .reset(Instant::now() + limits.idle_timeout);
                    } else if was_idle {
                        this.deadline
                            .as_mut()
                            .reset(Instant::now() + limits.header_timeout);
                    }
                    rest
                });
                *this.partial = rest;
                Ok(n)
            });
            match read {
                Ok(0) => return Poll::Ready(()),
                Ok(_) if close => {
                    *this.state = State::Closing {
                        drained: 0,
                        shut: false,
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// Whether a connection may carry another request.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// Answers every complete request head in `data` (pipelining), appending the answers to
/// `out`. Returns how many bytes were used, and whether the connection must close.
fn answer_all(data: &[u8], shared: &Shared, max_head: usize, out: &mut Vec<u8>) -> (usize, Next) {
    let mut used = 0;
    while used < data.len() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&data[used..]) {
            Ok(httparse::Status::Complete(len)) => {
                used += len;
                if answer_one(&req, shared, out) == Next::Close {
                    return (data.len(), Next::Close);
                }
            }
            Ok(httparse::Status::Partial) => {
                if data.len() - used > max_head {
                    error(out, "431 Request Header Fields Too Large");
                    return (data.len(), Next::Close);
                }
                return (used, Next::KeepAlive);
            }
            Err(httparse::Error::TooManyHeaders) => {
                error(out, "431 Request Header Fields Too Large");
                return (data.len(), Next::Close);
            }
            Err(_) => {
                error(out, "400 Bad Request");
                return (data.len(), Next::Close);
            }
        }
    }
    (used, Next::KeepAlive)
}

fn answer_one(req: &httparse::Request<'_, '_>, shared: &Shared, out: &mut Vec<u8>) -> Next {
    shared.count_request();
    let method = Method::from_bytes(req.method.unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let path = req.path.unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut accept = None;
    let mut close = req.version == Some(0); // HTTP/1.0 closes unless it asks otherwise
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("accept") {
            accept = std::str::from_utf8(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, b"close") {
                close = true;
            } else if has_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    let has_body = match body_framing(req.headers) {
        Ok(has_body) => has_body,
        Err(()) => {
            error(out, "400 Bad Request");
            return Next::Close;
        }
    };
    // The body is not read, so the connection cannot be reused after it.
    let next = if close || has_body {
        Next::Close
    } else {
        Next::KeepAlive
    };
    let answer = shared.page().answer(&method, path, accept);
    write_answer(out, &answer, next == Next::Close);
    next
}

/// Whether the request carries a body (which is never read, so the connection cannot be
/// reused after it), or `Err` for framing that must be refused, as pingora refuses it
/// (RFC 9112 6.3, RFC 9110 8.6): a Content-Length that is not plain digits (no sign, no
/// spaces inside), several that disagree, or Content-Length together with Transfer-Encoding.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<bool, ()> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(()),
        (_, true) => Ok(true),
        (Some(n), false) => Ok(n > 0),
        (None, false) => Ok(false),
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive), without
/// allocating: this runs for every request that sends `Connection`, which browsers all do.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn write_answer(out: &mut Vec<u8>, a: &Answer, close: bool) {
    out.reserve(a.body.len() + 320);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        a.status.as_str(),
        a.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &a.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&date());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&a.body);
}

fn error(out: &mut Vec<u8>, status: &str) {
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    );
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
    fn connection_tokens() {
        assert!(has_token(b"Keep-Alive", b"keep-alive"));
        assert!(has_token(b"keep-alive, Upgrade", b"keep-alive"));
        assert!(has_token(b" close ", b"close"));
        assert!(!has_token(b"closed", b"close"));
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
                Err(()),
                "{bad:?}"
            );
        }
        assert_eq!(
            body_framing(&h(&[("Content-Length", b"5"), ("Content-Length", b"6")])),
            Err(())
        );
        assert_eq!(
            body_framing(&h(&[
                ("Content-Length", b"5"),
                ("Transfer-Encoding", b"chunked")
            ])),
            Err(())
        );
    }

    #[test]
    fn date_is_an_http_date() {
        let d = String::from_utf8(date().to_vec()).unwrap();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
    }

    #[test]
    fn an_idle_connection_stays_small() {
        // The whole point of this module: keep this near the socket plus one timer.
        assert!(
            std::mem::size_of::<Conn>() <= 320,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }
}
