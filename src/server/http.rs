//! Serving HTTP: accepting connections within limits, refusing those that did not come
//! through the firewall's redirect, and answering every request with the current page.
//!
//! Hostile clients are bounded everywhere: a semaphore caps open connections, hyper's header
//! read timeout stops slowloris, the head size is capped, idle keep-alive connections are
//! closed, and request bodies are never read (the answer does not depend on them).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::page::{Content, Page};
use super::privsep::KeyHelper;
use super::tls::Tls;
use crate::config::Config;
use crate::control::{ServerStatus, Window};

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub refused_direct: AtomicU64,
}

/// State every connection reads; swapped whole on reload or window change.
pub struct Shared {
    page: ArcSwap<Page>,
    /// Config, page content and window together, so a reload and a window change cannot
    /// interleave and render a page from mismatched halves.
    source: Mutex<(Arc<Config>, Content, Window)>,
    pub stats: Stats,
    pub http_port: u16,
    started: u64,
    slots: Arc<Semaphore>,
    graceful: Mutex<Option<GracefulShutdown>>,
    /// Flips to true on SIGTERM: stop accepting, close idle connections.
    stop: watch::Sender<bool>,
    tls: Option<Tls>,
    key_helper: Option<KeyHelper>,
    /// Connection limits, fixed at start like the listeners.
    pub limits: Limits,
    /// HTTP/1.1 connections with an answer not yet fully written; SIGTERM waits for them.
    pub writing: AtomicUsize,
}

/// What bounds one connection.
pub struct Limits {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Shared {
    pub fn new(
        config: Config,
        content: Content,
        tls: Option<Tls>,
        key_helper: Option<KeyHelper>,
    ) -> Result<Shared> {
        let window = Window::default();
        let page = Page::render(&content, &window)?;
        let limits = Limits {
            idle_timeout: config.server.idle_timeout,
            header_timeout: config.server.header_timeout,
            max_header_bytes: config.server.max_header_bytes,
        };
        Ok(Shared {
            limits,
            writing: AtomicUsize::new(0),
            page: ArcSwap::from_pointee(page),
            http_port: config.server.http_port,
            slots: Arc::new(Semaphore::new(config.server.max_connections)),
            source: Mutex::new((Arc::new(config), content, window)),
            stats: Stats::default(),
            started: super::page::now_secs(),
            graceful: Mutex::new(Some(GracefulShutdown::new())),
            stop: watch::Sender::new(false),
            tls,
            key_helper,
        })
    }

    /// Re-reads the certificates (through the privileged helper when running unprivileged).
    /// An HTTPS listener cannot appear on reload: a server started without certificates
    /// needs a restart to serve HTTPS.
    pub fn reload_tls(&self, config: &Config) -> Result<()> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let pairs = match &self.key_helper {
            Some(helper) => helper.read_pems()?,
            None => super::tls::read_pems(&config.tls)?,
        };
        tls.reload(&pairs, config.tls.self_signed)
    }

    pub fn settings(&self) -> Arc<Config> {
        self.source.lock().expect("not poisoned").0.clone()
    }

    /// Installs a reloaded config and page content, keeping the current window.
    pub fn replace(&self, config: Config, content: Content) -> Result<()> {
        let mut source = self.source.lock().expect("not poisoned");
        let page = Page::render(&content, &source.2)?;
        self.page.store(Arc::new(page));
        source.0 = Arc::new(config);
        source.1 = content;
        Ok(())
    }

    pub fn set_window(&self, window: Window) -> Result<()> {
        let mut source = self.source.lock().expect("not poisoned");
        let page = Page::render(&source.1, &window)?;
        self.page.store(Arc::new(page));
        source.2 = window;
        Ok(())
    }

    pub fn status(&self) -> ServerStatus {
        let window = self.source.lock().expect("not poisoned").2.clone();
        ServerStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: self.started,
            requests: self.stats.requests.load(Ordering::Relaxed),
            connections: self.stats.connections.load(Ordering::Relaxed),
            connections_total: self.stats.connections_total.load(Ordering::Relaxed),
            refused_direct: self.stats.refused_direct.load(Ordering::Relaxed),
            http_port: self.http_port,
            https_port: self.tls.as_ref().map(|_| self.settings().server.https_port),
            window,
        }
    }

    pub fn page(&self) -> arc_swap::Guard<Arc<Page>> {
        self.page.load()
    }

    pub fn count_request(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops accepting, then lets open requests finish within the drain timeout.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let drain = self.settings().server.drain_timeout;
        let graceful = self.graceful.lock().expect("not poisoned").take();
        let drained = async {
            if let Some(g) = graceful {
                g.shutdown().await;
            }
            // HTTP/1.1 answers are written as soon as a request is read, so only answers
            // still on their way to slow readers are waited for; idle keep-alive
            // connections close when the process exits.
            while self.writing.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let server = self.settings().server.clone();
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
        b
    }
}

/// A connection's hold on the shared state, counted in the stats for as long as it lives;
/// both the HTTP/1.1 and the TLS paths keep one.
pub struct Open(pub Arc<Shared>);

impl Open {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Open(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, https: bool) {
    let mut stop = shared.stop.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let builder = shared.builder();
    let acceptor = match (&shared.tls, https) {
        (Some(tls), true) => Some(tokio_rustls::TlsAcceptor::from(tls.config.clone())),
        _ => None,
    };
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = shared.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !came_through_redirect(&stream) {
            shared.stats.refused_direct.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "refused a connection that reached the server port directly");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Some(watcher) = shared
            .graceful
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|g| g.watcher())
        else {
            return;
        };
        let shared = shared.clone();
        let Some(acceptor) = acceptor.clone() else {
            // Plain HTTP: the lean HTTP/1.1 path (see `h1` for why).
            tokio::spawn(super::h1::Conn::new(stream, shared, permit));
            continue;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = Open::new(shared.clone());
            let server = shared.settings().server.clone();
            let svc = service_fn(|req| {
                shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                let resp = shared.page.load().respond(&req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let result = {
                {
                    // A client that stalls or speaks garbage during the handshake is dropped
                    // alone; the handshake shares the header timeout's budget.
                    let tls =
                        match tokio::time::timeout(server.header_timeout, acceptor.accept(stream))
                            .await
                        {
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
                    let io = IdleTimeout::new(TokioIo::new(tls), server.idle_timeout);
                    watcher.watch(builder.serve_connection(io, svc)).await
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Only connections the firewall redirected (or from this host) are served: the server's own
/// port must not become a second, unfirewalled way in. The kernel keeps the pre-NAT
/// destination in conntrack; a connection whose original port is the port it arrived on was
/// not redirected.
#[cfg(target_os = "linux")]
fn came_through_redirect(stream: &TcpStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt};
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return false;
    };
    if peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let original_port = if local.is_ipv4() {
        getsockopt(stream, sockopt::OriginalDst).map(|sa| u16::from_be(sa.sin_port))
    } else {
        getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sa| u16::from_be(sa.sin6_port))
    };
    matches!(original_port, Ok(p) if p != local.port())
}

/// On other systems the server listens on loopback only (pf's `rdr-to 127.0.0.1`), which the
/// network cannot reach.
#[cfg(not(target_os = "linux"))]
fn came_through_redirect(_: &TcpStream) -> bool {
    true
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
