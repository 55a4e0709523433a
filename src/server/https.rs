//! HTTPS connections (and with them HTTP/2), served by hyper over rustls. TLS handshakes and
//! HTTP/2 framing are solved problems; only plain HTTP/1.1 has a hand-written path (`h1`),
//! for its memory cost per idle connection.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::shared::{ConnectionGuard, Shared};
use super::tls::Identity;

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

    /// Serves one connection in its own task, until it ends or shutdown drains it.
    pub fn spawn(&self, stream: TcpStream, peer: SocketAddr, guard: ConnectionGuard) {
        let shared = guard.shared.clone();
        let Some(watcher) = shared
            .graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.watcher())
        else {
            return; // shutting down
        };
        let builder = self.builder.clone();
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let limits = &shared.limits;
            // A client that stalls or speaks garbage during the handshake is dropped alone;
            // the handshake shares the header timeout's budget.
            let tls =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let svc = service_fn(|req| {
                shared.count_request();
                let resp = shared.page().respond(&req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let io = IdleTimeout::new(TokioIo::new(tls), limits.idle_timeout);
            if let Err(e) = watcher.watch(builder.serve_connection(io, svc)).await {
                tracing::trace!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Closes a connection that has had no traffic for `limit`: hyper bounds the time to read a
/// request head, but not how long an idle keep-alive connection may sit between requests.
struct IdleTimeout<T> {
    inner: T,
    limit: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, limit: Duration) -> Self {
        IdleTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
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
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
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
