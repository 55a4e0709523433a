//! HTTPS connections (and with them HTTP/2), served by hyper over rustls. TLS handshakes and
//! HTTP/2 framing are solved problems; only plain HTTP/1.1 has a hand-written path (`h1`),
//! for its memory cost per idle connection.
//!
//! When maintenance ends, or the server stops, every connection is asked to finish
//! (`graceful_shutdown`: GOAWAY on HTTP/2, a close after the request in flight on HTTP/1.1),
//! so a visitor's next request opens a new connection, which reaches the site.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::hold::{Verdict, WAIT_PATH};
use super::page::{wait_answer, Served};
use super::shared::{ConnectionGuard, Scheme, Shared};
use super::tls::Identity;
use crate::admission::Reply;

/// What every HTTPS connection of one listener is served with.
pub struct Service {
    builder: auto::Builder<TokioExecutor>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Service {
    pub fn new(shared: &Shared, tls: &Identity) -> Service {
        let server = shared.settings().server.clone();
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_timeout)
            .max_buf_size(server.max_header_bytes)
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(100)
            .max_header_list_size(server.max_header_bytes as u32)
            .keep_alive_interval(Some(server.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(10));
        Service {
            builder: b,
            acceptor: tokio_rustls::TlsAcceptor::from(tls.config.clone()),
        }
    }

    /// Serves one connection in its own task, until it ends, or finishes it when maintenance
    /// ends or the server stops.
    pub fn spawn(&self, stream: TcpStream, peer: SocketAddr, guard: ConnectionGuard) {
        let shared = guard.shared.clone();
        let Some(drain) = shared.writing() else {
            return; // shutting down
        };
        let builder = self.builder.clone();
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // Shutdown waits for this connection while it lives.
            let _drain = drain;
            let limits = &shared.limits;
            // A client that stalls or speaks garbage during the handshake is dropped alone;
            // the handshake shares the header timeout's budget.
            let tls =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        shared
                            .stats
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        shared
                            .stats
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let holding = Arc::new(AtomicUsize::new(0));
            // Told when a pass link let this visitor through: the connection then ends after
            // its answer, so the browser's next request opens one the redirect lets through.
            let passed = Arc::new(tokio::sync::Notify::new());
            let svc = {
                let (shared, holding, passed) = (shared.clone(), holding.clone(), passed.clone());
                service_fn(move |req| {
                    let (shared, holding, passed) =
                        (shared.clone(), holding.clone(), passed.clone());
                    async move {
                        let resp = respond(shared, holding, peer, req).await;
                        if resp.status() == hyper::StatusCode::SEE_OTHER {
                            passed.notify_one();
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                })
            };
            let io = IdleTimeout::new(TokioIo::new(tls), limits.idle_timeout, holding);
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            let ended = shared.ending.end_after(shared.ending.ends());
            let stopped = shared.stop_signal();
            tokio::pin!(ended, stopped);
            let mut finishing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(%peer, "connection ended: {e}");
                        }
                        return;
                    }
                    () = &mut ended, if !finishing => {
                        conn.as_mut().graceful_shutdown();
                        finishing = true;
                    }
                    () = &mut stopped, if !finishing => {
                        conn.as_mut().graceful_shutdown();
                        finishing = true;
                    }
                    () = passed.notified(), if !finishing => {
                        conn.as_mut().graceful_shutdown();
                        finishing = true;
                    }
                }
            }
        });
    }
}

/// The answer to one HTTPS request: the page, or for the wait path a held 204.
async fn respond<B>(
    shared: Arc<Shared>,
    holding: Arc<AtomicUsize>,
    peer: SocketAddr,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    let method = req.method();
    if let Some(token) = super::pass::link_token(req.uri().path())
        .filter(|_| method == hyper::Method::GET || method == hyper::Method::HEAD)
    {
        let config = shared.settings();
        if let Reply::Admitted { .. } = super::pass::ask(&config, peer, token).await {
            let answer = super::pass::passed(method);
            shared.count_request(Scheme::Https, answer.served);
            let mut resp = answer.into_response();
            // The connection ends after this answer (see `spawn`): HTTP/1.1 says so here,
            // HTTP/2 with a GOAWAY.
            if req.version() < hyper::Version::HTTP_2 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
    }
    if req.uri().path() != WAIT_PATH {
        // HTTP/2 names the site in `:authority` (the URI), HTTP/1.1 in `Host`.
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let answer = shared.pages().pick(host).respond(&req);
        shared.count_request(Scheme::Https, answer.served);
        return answer.into_response();
    }
    let ending = &shared.ending;
    let verdict = if ending.is_over() {
        Verdict::Off
    } else {
        let mut held = shared.hold();
        let _holding = Holding::new(holding);
        tokio::select! {
            () = held.signal.as_mut() => {}
            () = tokio::time::sleep_until(ending.hold_deadline()) => {}
        }
        ending.verdict()
    };
    if verdict == Verdict::Off {
        ending.note_https_answer();
    }
    shared.count_request(Scheme::Https, Served::Wait);
    let mut resp = wait_answer(verdict).into_response();
    // HTTP/2 has no `connection` header: its connection is finished by GOAWAY instead.
    if verdict == Verdict::Off && req.version() < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Counts a held request on its connection, so the idle timeout leaves the connection be.
struct Holding(Arc<AtomicUsize>);

impl Holding {
    fn new(count: Arc<AtomicUsize>) -> Holding {
        count.fetch_add(1, Ordering::Relaxed);
        Holding(count)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes a connection that has had no traffic for `limit`: hyper bounds the time to read a
/// request head, but not how long an idle keep-alive connection may sit between requests.
/// A connection with a held request is not idle.
struct IdleTimeout<T> {
    inner: T,
    limit: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    holding: Arc<AtomicUsize>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, limit: Duration, holding: Arc<AtomicUsize>) -> Self {
        IdleTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            holding,
        }
    }
    fn touch(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.limit);
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for IdleTimeout<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) if self.holding.load(Ordering::Relaxed) > 0 => self.touch(),
                    Poll::Ready(()) => {
                        return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for IdleTimeout<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.touch();
        }
        r
    }
}
