//! Plain HTTP/1.1 connections, served without hyper so that an idle connection costs almost
//! nothing.
//!
//! During maintenance every visitor's browser may hold a keep-alive connection open to us;
//! 10,000 of them must fit in a few megabytes. hyper keeps read and write buffers and timers
//! per connection for as long as it lives (about 25 KB each, measured by tests/bench), so this
//! path keeps none: an idle connection is its socket, a timer and this task's small state. A
//! request is read into a per-thread buffer only once the socket is readable, parsed with
//! `httparse` (hyper's own parser), answered from the pre-rendered page, and the buffer is
//! free again before the next wait. Only a request head that arrives in pieces is kept, up to
//! the head size limit. HTTPS (and with it HTTP/2) stays on hyper in `http`.
//!
//! What the answer does not depend on is not read: request bodies are never buffered; a
//! request that carries one gets its answer with `Connection: close`.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::http::Shared;
use super::page::Answer;

/// Largest read at once; a request head larger than `max_header_bytes` is refused anyway.
const READ_CHUNK: usize = 16 * 1024;
/// More headers than this is not a browser.
const MAX_HEADERS: usize = 64;

thread_local! {
    /// The read buffer, shared by every connection this worker thread serves. Borrowed only
    /// between a readiness event and the end of parsing, never across an await.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
    /// Answers are written from here straight away; only what the socket does not take at
    /// once is copied into the connection's own buffer.
    static WRITE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What to do after answering.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

pub async fn serve(mut stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let settings = shared.settings();
    let (idle, head_timeout, max_head) = (
        settings.server.idle_timeout,
        settings.server.header_timeout,
        settings.server.max_header_bytes,
    );
    drop(settings);
    // Bytes of a request head that arrived in pieces; empty (unallocated) between requests.
    let mut partial: Vec<u8> = Vec::new();
    let mut head_deadline = Instant::now() + head_timeout;
    loop {
        // Idle between requests: bounded by idle_timeout. Mid-head: by the header timeout,
        // counted from the head's first byte (slowloris).
        let deadline = if partial.is_empty() {
            Instant::now() + idle
        } else {
            head_deadline
        };
        tokio::select! {
            r = timeout_at(deadline, stream.readable()) => match r {
                Ok(Ok(())) => {}
                _ => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut next = Next::KeepAlive;
        let mut unsent: Vec<u8> = Vec::new();
        let read = READ_BUF.with_borrow_mut(|buf| -> std::io::Result<usize> {
            let n = match stream.try_read(buf) {
                Ok(0) => return Ok(0),
                Ok(n) => n,
                Err(e) => return Err(e),
            };
            let was_idle = partial.is_empty();
            let data: &[u8] = if was_idle {
                &buf[..n]
            } else {
                partial.extend_from_slice(&buf[..n]);
                &partial
            };
            let used = WRITE_BUF.with_borrow_mut(|out| {
                let (used, n_next) = answer_all(data, &shared, max_head, out);
                next = n_next;
                if !out.is_empty() {
                    let sent = stream.try_write(out).unwrap_or(0);
                    unsent = out[sent..].to_vec();
                }
                out.clear();
                if out.capacity() > 256 * 1024 {
                    *out = Vec::new(); // after a burst of pipelined requests
                }
                used
            });
            // Keep what is left of an unfinished head for the next read.
            let rest = data[used..].to_vec();
            if was_idle && !rest.is_empty() {
                head_deadline = Instant::now() + head_timeout;
            }
            partial = rest;
            Ok(n)
        });
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        if !unsent.is_empty() {
            // A client that does not read its answers is cut off like an idle one.
            let write = tokio::time::timeout(idle, stream.write_all(&unsent)).await;
            if !matches!(write, Ok(Ok(()))) {
                return;
            }
        }
        if next == Next::Close {
            let _ = stream.shutdown().await;
            return;
        }
    }
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
                let next = answer_one(&req, shared, out);
                if next == Next::Close {
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
    let mut has_body = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("accept") {
            accept = std::str::from_utf8(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Any length but a clean zero means a body we will not read.
            has_body |= std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                != Some(0);
        }
    }
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
            *value = Bytes::from(super::page::httpdate(now));
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
