//! Plain HTTP/1.1 connections, served without hyper so that an idle connection costs almost
//! nothing.
//!
//! During maintenance every visitor's browser may hold a keep-alive connection open to us;
//! 10,000 of them must fit in a few megabytes. hyper keeps read and write buffers and timers
//! per connection for as long as it lives (about 25 KB each, measured by tests/bench), so this
//! path keeps none: a connection is a small hand-written future (its socket, one timer, and
//! buffers that are empty between requests). A request is read into a per-thread buffer only
//! once the socket is readable, parsed with `httparse` (hyper's own parser), answered from the
//! pre-rendered page and written at once; only a request head that arrives in pieces, or
//! answers the client does not take at once, are kept per connection.
//!
//! What one connection may hold is bounded whatever the client sends:
//! - answers waiting for the client are at most [`QUEUE_CAP`](super::pipeline::QUEUE_CAP) bytes plus one answer, and an
//!   answer's body is never copied (it is the page's or the asset's own `Bytes`), so a client
//!   that pipelines thousands of requests for a large asset and never reads holds a few
//!   hundred bytes of headers, not megabytes: parsing stops while the queue is full and
//!   resumes as it drains;
//! - received bytes not yet answered are at most `max_header_bytes` plus one read, because
//!   nothing more is read while answers wait.
//!
//! Time limits: a head must arrive within `header_timeout` of its first byte (each request
//! anew); a client that takes nothing of a pending answer for `idle_timeout` is cut off, but
//! one that reads slowly is not (every write that makes progress moves the deadline); between
//! requests, `idle_timeout`. A held request ([`super::hold`]) is exempt: it waits for the end
//! of maintenance or `wait_timeout`, and nothing after it is answered meanwhile.
//!
//! What the answer does not depend on is not read: request bodies are never buffered; a
//! request that carries one gets its answer with `Connection: close`, and the connection is
//! closed gently (write side first, then a short drain) so the client reads the answer
//! instead of a reset.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::hold::{Held, Verdict};
use super::page::wait_answer;
use super::pipeline::{answer_all, Batch, History, PassAnswer, PassLink};
use super::shared::{ConnectionGuard, Scheme, Shared};
use super::wire::queue_answer;
use crate::admission::Reply;

/// Largest read at once; a request head larger than `max_header_bytes` is refused anyway.
const READ_CHUNK: usize = 16 * 1024;
/// How long, and how much, a closing connection is drained so the client sees our answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Slices handed to one vectored write.
const WRITEV_MAX: usize = 16;

thread_local! {
    /// The read buffer, shared by every connection this worker thread serves. Borrowed only
    /// within one poll, never across a suspension.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading and answering requests.
    Serving,
    /// A request to the wait path is held until maintenance ends or `wait_timeout`.
    Holding,
    /// A pass link waits for the keeper's answer; then its answer, and a close.
    Passing,
    /// Answered with `Connection: close`: flush, shut the write side, drain briefly.
    Closing { drained: usize, shut: bool },
}

pin_project_lite::pin_project! {
    /// One HTTP/1.1 connection. Its size is the cost of an idle keep-alive connection.
    pub struct Conn {
        stream: TcpStream,
        guard: ConnectionGuard,
        // Received bytes not answered yet: a head arriving in pieces, or pipelined requests
        // held back while earlier answers drain. Unallocated between requests.
        pending: Vec<u8>,
        // Answers the socket has not taken yet, in order.
        unsent: VecDeque<Bytes>,
        // Held while `unsent` is not empty, so a shutdown waits for these answers.
        writing: Option<mpsc::Sender<()>>,
        // While a wait request is held, and while its "off" answer is written.
        held: Option<Box<Held>>,
        // While a pass link waits for the keeper: the answer it will get. Boxed twice so an
        // idle connection pays one pointer for it.
        passing: Option<Box<PassAnswer>>,
        // When it was accepted and whether it answered a request since.
        history: History,
        state: State,
        // Idle timeout between requests and while answers wait, header timeout within a
        // head, linger when closing.
        #[pin]
        deadline: Sleep,
    }
}

impl Conn {
    pub fn new(stream: TcpStream, guard: ConnectionGuard) -> Conn {
        let idle = guard.shared.limits.idle_timeout;
        let history = History {
            born_ends: guard.shared.ending.ends(),
            served: false,
        };
        Conn {
            stream,
            guard,
            pending: Vec::new(),
            unsent: VecDeque::new(),
            writing: None,
            held: None,
            passing: None,
            history,
            state: State::Serving,
            deadline: tokio::time::sleep(idle),
        }
    }
}

impl Future for Conn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let shared = &this.guard.shared;
        let limits = &shared.limits;
        loop {
            // 1. What the client has not taken yet goes first.
            if !this.unsent.is_empty() {
                match write_queued(this.stream, this.unsent, cx) {
                    Poll::Ready(Ok(())) => {
                        // Progress: a slow reader is still a reader.
                        this.deadline
                            .as_mut()
                            .reset(Instant::now() + limits.idle_timeout);
                        if this.unsent.is_empty() {
                            *this.writing = None;
                            *this.unsent = VecDeque::new();
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    // A client that takes nothing is cut off when the deadline passes.
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
                    // An "off" answer is out: `maint off` may go on.
                    *this.held = None;
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
            // 3. A held request: answered when maintenance ends or the hold times out.
            if *this.state == State::Holding {
                let held = this
                    .held
                    .as_mut()
                    .expect("a holding connection has its hold");
                let ended = held.signal.as_mut().poll(cx).is_ready();
                if ended || this.deadline.as_mut().poll(cx).is_ready() {
                    let verdict = shared.ending.verdict();
                    let off = verdict == Verdict::Off;
                    queue_answer(this.unsent, &wait_answer(verdict), off, false);
                    *this.writing = shared.writing();
                    if verdict == Verdict::Off {
                        *this.state = State::Closing {
                            drained: 0,
                            shut: false,
                        };
                        *this.pending = Vec::new();
                    } else {
                        *this.state = State::Serving;
                        *this.held = None;
                        this.deadline
                            .as_mut()
                            .reset(Instant::now() + limits.idle_timeout);
                    }
                    continue;
                }
                // Meanwhile only watch the socket, so a client that leaves frees its slot
                // at once; anything it sends waits (bounded) until the hold is answered.
                match this.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
                let read = READ_BUF.with_borrow_mut(|buf| match this.stream.try_read(buf) {
                    Ok(0) => Err(()),
                    Ok(n) if this.pending.len() + n > limits.max_header_bytes => Err(()),
                    Ok(n) => {
                        this.pending.extend_from_slice(&buf[..n]);
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                    Err(_) => Err(()),
                });
                if read.is_err() {
                    return Poll::Ready(());
                }
                continue;
            }
            // 3b. A pass link: its answer once the keeper has spoken, then a close, so the
            //     browser's next request opens a connection the redirect lets through.
            if *this.state == State::Passing {
                let answer = match this.passing.as_mut() {
                    Some(fut) => match fut.as_mut().as_mut().poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => return Poll::Pending,
                    },
                    None => return Poll::Ready(()),
                };
                *this.passing = None;
                shared.count_request(Scheme::Http, answer.served);
                queue_answer(this.unsent, &answer, true, false);
                *this.writing = shared.writing();
                *this.state = State::Closing {
                    drained: 0,
                    shut: false,
                };
                *this.pending = Vec::new();
                continue;
            }
            // 4. Requests held back while answers drained are answered before reading more.
            let held = if this.pending.is_empty() {
                None
            } else {
                let batch = answer_all(this.pending, shared, this.history, this.unsent);
                this.pending.drain(..batch.used);
                let head_started = batch.used > 0;
                (batch.answered || batch.hold || batch.close).then_some((batch, head_started))
            };
            // 5. Otherwise wait for (more of) a request.
            let (mut batch, head_started) = match held {
                Some(answered) => answered,
                None => {
                    match this.stream.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => return this.deadline.poll(cx),
                    }
                    let read = READ_BUF.with_borrow_mut(|buf| {
                        let n = match this.stream.try_read(buf) {
                            Ok(0) => return Ok(None),
                            Ok(n) => n,
                            Err(e) => return Err(e),
                        };
                        let fresh = this.pending.is_empty();
                        if !fresh {
                            this.pending.extend_from_slice(&buf[..n]);
                        }
                        let data: &[u8] = if fresh { &buf[..n] } else { this.pending };
                        let batch = answer_all(data, shared, this.history, this.unsent);
                        let rest = data[batch.used..].to_vec();
                        *this.pending = rest;
                        // The clock for a head starts at its first byte: when this read began
                        // it, or when a request before it in this read was complete.
                        let head_started = fresh || batch.used > 0;
                        Ok(Some((batch, head_started)))
                    });
                    match read {
                        Ok(Some(read)) => read,
                        Ok(None) => return Poll::Ready(()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return Poll::Ready(()),
                    }
                }
            };
            if let Some(link) = batch.pass.take() {
                if batch.answered {
                    *this.writing = shared.writing();
                }
                let peer = this.stream.peer_addr();
                let config = shared.settings();
                let PassLink {
                    token,
                    method,
                    fallback,
                } = *link;
                *this.passing = Some(Box::new(Box::pin(async move {
                    let Ok(peer) = peer else { return fallback };
                    match super::pass::ask(&config, peer, &token).await {
                        Reply::Admitted { .. } => super::pass::passed(&method),
                        Reply::Refused { .. } => fallback,
                    }
                })));
                *this.state = State::Passing;
                continue;
            }
            if batch.hold {
                if batch.answered {
                    // Pipelined answers before the held request still go out first.
                    *this.writing = shared.writing();
                }
                *this.held = Some(Box::new(shared.hold()));
                *this.state = State::Holding;
                this.deadline.as_mut().reset(shared.ending.hold_deadline());
                continue;
            }
            if after_batch(
                &batch,
                head_started,
                this.pending,
                this.state,
                this.deadline.as_mut(),
                shared,
            ) {
                *this.writing = shared.writing();
            }
        }
    }
}

/// Settles the connection after a batch of answers: a close, the deadline for what comes
/// next, and whether answers now wait to be written.
fn after_batch(
    batch: &Batch,
    head_started: bool,
    pending: &mut Vec<u8>,
    state: &mut State,
    deadline: Pin<&mut Sleep>,
    shared: &Shared,
) -> bool {
    let limits = &shared.limits;
    if batch.close {
        *state = State::Closing {
            drained: 0,
            shut: false,
        };
        *pending = Vec::new();
    } else if pending.is_empty() {
        deadline.reset(Instant::now() + limits.idle_timeout);
    } else if !batch.full && head_started {
        deadline.reset(Instant::now() + limits.header_timeout);
    }
    batch.answered
}

/// Writes as much of the queue as the socket takes. `Ready(Ok)` when some was written.
fn write_queued(
    stream: &mut TcpStream,
    unsent: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let slices: Vec<IoSlice<'_>> = unsent
        .iter()
        .take(WRITEV_MAX)
        .map(|b| IoSlice::new(b))
        .collect();
    let mut n = match Pin::new(&mut *stream).poll_write_vectored(cx, &slices) {
        Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => n,
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => return Poll::Pending,
    };
    while n > 0 {
        let Some(front) = unsent.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            unsent.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn fresh() -> History {
        History {
            born_ends: 0,
            served: false,
        }
    }

    fn shared() -> Shared {
        let config = crate::config::Config::default();
        let content =
            super::super::sites::Sites::load(&config, super::super::page::Reader::Itself).unwrap();
        Shared::new(config, content, None, None).unwrap()
    }

    /// The status codes of the answers queued, in order.
    fn statuses(out: &VecDeque<Bytes>) -> Vec<u16> {
        out.iter()
            .filter(|b| b.starts_with(b"HTTP/1.1 "))
            .map(|b| std::str::from_utf8(&b[9..12]).unwrap().parse().unwrap())
            .collect()
    }

    fn request() -> impl Strategy<Value = (String, bool)> {
        (
            prop::sample::select(vec!["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE"]),
            "/[a-zA-Z0-9._~%/-]{0,30}(\\?[a-z=&]{0,10})?",
            prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
            prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..6),
            any::<bool>(),
        )
            .prop_map(|(method, path, version, headers, close)| {
                let mut r = format!("{method} {path} {version}\r\nHost: shop.example\r\n");
                for (name, value) in headers {
                    // Framing headers are the subject of other properties.
                    let lower = name.to_ascii_lowercase();
                    if ["content-length", "transfer-encoding", "connection"]
                        .contains(&lower.as_str())
                    {
                        continue;
                    }
                    r.push_str(&format!("{name}: {}\r\n", value.trim()));
                }
                if close {
                    r.push_str("Connection: close\r\n");
                } else if version == "HTTP/1.0" {
                    r.push_str("Connection: keep-alive\r\n");
                }
                r.push_str("\r\n");
                (r, close)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever arrives, the parser neither panics nor answers anything but a status line,
        /// and a refusal (4xx) always closes.
        #[test]
        fn any_bytes_get_an_answer_or_wait(data in prop::collection::vec(any::<u8>(), 0..4096)) {
            let shared = shared();
            let mut out = VecDeque::new();
            let batch = answer_all(&data, &shared, &mut fresh(), &mut out);
            prop_assert!(batch.used <= data.len());
            for status in statuses(&out) {
                if (400..500).contains(&status) {
                    prop_assert!(batch.close);
                }
            }
            if !batch.answered {
                prop_assert!(out.is_empty());
            }
        }

        /// Pipelined well-formed requests are each answered, in order, and the connection
        /// closes only after one that asked for it.
        #[test]
        fn pipelined_requests_are_each_answered(reqs in prop::collection::vec(request(), 1..8)) {
            let shared = shared();
            let mut data = String::new();
            let mut expected = 0;
            let mut closes = false;
            for (r, close) in &reqs {
                data.push_str(r);
                expected += 1;
                if *close {
                    closes = true;
                    break;
                }
            }
            let mut out = VecDeque::new();
            let batch = answer_all(data.as_bytes(), &shared, &mut fresh(), &mut out);
            let got = statuses(&out);
            prop_assert_eq!(got.len(), expected, "{:?}", got);
            prop_assert!(got.iter().all(|s| [200, 404, 503].contains(s)), "{:?}", got);
            prop_assert_eq!(batch.used, data.len());
            prop_assert_eq!(batch.close, closes);
        }

        /// A Content-Length that is not plain digits is refused with a 400 and a close.
        #[test]
        fn a_bad_content_length_is_a_400_and_a_close(
            value in "[+-]?[0-9]{0,5}[ a-zA-Z+-]{1,3}[0-9]{0,3}|[+-][0-9]{1,5}"
        ) {
            let shared = shared();
            let data = format!("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
            let mut out = VecDeque::new();
            let batch = answer_all(data.as_bytes(), &shared, &mut fresh(), &mut out);
            // Leading or trailing spaces are optional whitespace and fine; the rest is not.
            if value.trim().bytes().all(|b| b.is_ascii_digit()) && !value.trim().is_empty() {
                prop_assert!(statuses(&out).iter().all(|s| *s == 503));
            } else {
                prop_assert_eq!(statuses(&out), vec![400]);
                prop_assert!(batch.close);
            }
        }
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
