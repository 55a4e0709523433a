//! Answering what a plain HTTP/1.1 connection received: every complete request head at the
//! start of the bytes, in order (pipelining), each answered from the page at once, until one
//! must wait (a held wait request, a pass link) or the queue is full. `h1` owns the socket
//! and the connection's states; this owns the requests.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::Method;

use super::head::Head;
use super::hold::{Verdict, WAIT_PATH};
use super::page::{wait_answer, Served};
use super::shared::{Scheme, Shared};
use super::wire::{error, queue_answer};

/// More headers than this is not a browser.
const MAX_HEADERS: usize = 64;

/// Answers queued for one connection, in bytes, above which no further request is parsed.
pub const QUEUE_CAP: usize = 64 * 1024;

/// What a connection has been through, for requests that arrive after maintenance ended.
#[derive(Clone, Copy)]
pub(super) struct History {
    /// How many times maintenance had ended when the connection was accepted.
    pub born_ends: u64,
    /// It answered a request before: a client reusing it retries elsewhere if it closes.
    pub served: bool,
}

/// What answering the complete requests at the start of some received bytes did.
pub(super) struct Batch {
    /// Bytes consumed (complete requests answered).
    pub used: usize,
    /// Answers were queued.
    pub answered: bool,
    /// The connection must close after them.
    pub close: bool,
    /// Stopped because the queue is full, not because the next head is incomplete.
    pub full: bool,
    /// Stopped at a request to the wait path, to be held (its bytes are consumed).
    pub hold: bool,
    /// Stopped at a pass link, to be asked about (its bytes are consumed).
    pub pass: Option<Box<PassLink>>,
}

/// A pass link's request: the token, and the page it gets if the keeper says no.
pub(super) struct PassLink {
    pub token: String,
    pub method: Method,
    pub fallback: super::page::Answer,
}

/// What a pass link's request will be answered.
pub(super) type PassAnswer = Pin<Box<dyn Future<Output = super::page::Answer> + Send>>;

/// Answers the complete request heads at the start of `data` (pipelining), queueing the
/// answers, until the data ends, a head is incomplete, the queue holds [`QUEUE_CAP`], or a
/// request is to be held. `history` is the connection's, and is updated.
pub(super) fn answer_all(
    data: &[u8],
    shared: &Shared,
    history: &mut History,
    out: &mut VecDeque<Bytes>,
) -> Batch {
    let max_head = shared.limits.max_header_bytes;
    // The caller writes what is queued before answering more, so the queue starts empty.
    debug_assert!(out.is_empty());
    let mut queued = 0;
    let mut batch = Batch {
        used: 0,
        answered: false,
        close: false,
        full: false,
        hold: false,
        pass: None,
    };
    let refuse = |batch: &mut Batch, out: &mut VecDeque<Bytes>, status| {
        out.push_back(error(status));
        batch.used = data.len();
        batch.answered = true;
        batch.close = true;
    };
    while batch.used < data.len() {
        if queued >= QUEUE_CAP {
            batch.full = true;
            break;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&data[batch.used..]) {
            // A complete head over the limit is refused like an incomplete one would be.
            Ok(httparse::Status::Complete(len)) if len > max_head => {
                refuse(&mut batch, out, "431 Request Header Fields Too Large");
                break;
            }
            Ok(httparse::Status::Complete(len)) => {
                batch.used += len;
                batch.answered = true;
                let Ok(head) = Head::read(&req) else {
                    refuse(&mut batch, out, "400 Bad Request");
                    break;
                };
                let close = !head.keep_alive || head.has_body;
                let ending = &shared.ending;
                if head.path == WAIT_PATH && !head.has_body {
                    shared.count_request(Scheme::Http, Served::Wait);
                    if ending.is_over() {
                        // Over already: say so at once.
                        queue_answer(out, &wait_answer(Verdict::Off), true, false);
                        batch.close = true;
                    } else {
                        batch.hold = true;
                    }
                    break;
                }
                let ended = ending.ended_since(history.born_ends);
                if ended && history.served {
                    // A kept-alive connection from before maintenance ended: close it
                    // unanswered. Clients send a request that meets a closed reused
                    // connection again on a new one (browsers do, and RFC 9110 9.2.2 allows
                    // it for idempotent requests), which reaches the site.
                    batch.used = data.len();
                    batch.close = true;
                    break;
                }
                // Its first request still gets the page (a client would not send it again),
                // and then a close.
                let close = close || ended;
                history.served = true;
                let method = Method::from_bytes(head.method.as_bytes()).unwrap_or(Method::GET);
                let answer = shared
                    .pages()
                    .pick(head.host)
                    .answer(&method, head.path, head.accept);
                // A pass link (GET or HEAD, no body, a token of the right shape) waits for
                // the keeper; anything else at that path is the page.
                let link = super::pass::link_token(head.path)
                    .filter(|t| crate::pass::Token::parse(t).is_some())
                    .filter(|_| {
                        (method == Method::GET || method == Method::HEAD) && !head.has_body
                    });
                if let Some(token) = link {
                    batch.pass = Some(Box::new(PassLink {
                        token: token.to_owned(),
                        method,
                        fallback: answer,
                    }));
                    batch.used = data.len();
                    batch.close = true;
                    break;
                }
                shared.count_request(Scheme::Http, answer.served);
                queued += queue_answer(out, &answer, close, head.http10 && !close);
                if close {
                    batch.used = data.len();
                    batch.close = true;
                    break;
                }
            }
            Ok(httparse::Status::Partial) => {
                if data.len() - batch.used > max_head {
                    refuse(&mut batch, out, "431 Request Header Fields Too Large");
                }
                break;
            }
            Err(httparse::Error::TooManyHeaders) => {
                refuse(&mut batch, out, "431 Request Header Fields Too Large");
                break;
            }
            Err(_) => {
                refuse(&mut batch, out, "400 Bad Request");
                break;
            }
        }
    }
    batch
}
