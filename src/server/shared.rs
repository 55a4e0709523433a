//! What every connection shares: the rendered page, the settings it was rendered from, the
//! counters, the connection limit, and the ways a shutdown reaches connections.
//!
//! The page is swapped whole (an `ArcSwap`), so a request never waits for a reload or a
//! window change; the settings it was rendered from change together under one lock, so a
//! reload and a window change cannot interleave and render a page from mismatched halves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::hold::{Ending, Held};
use super::page::Served;
use super::page::{Content, Rendered};
use super::privsep::KeyHelper;
use super::sites::Sites;
use super::tls::Identity;
use crate::config::Config;
use crate::control::{RequestCount, ServerStatus, Window, ANSWER_FORMATS, SCHEMES};

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Requests by [`Scheme`] and [`Served`] (rows and columns in their order).
    requests_by: [[AtomicU64; ANSWER_FORMATS.len()]; SCHEMES.len()],
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub refused_direct: AtomicU64,
    pub refused_per_source: AtomicU64,
    /// Connections that waited in the kernel's queue because every slot was taken.
    pub limit_waits: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// What the keeper last said about the kernel: 0 nothing (no keeper), 1 differs, 2 agrees.
    pub kernel_in_sync: std::sync::atomic::AtomicU8,
}

/// The scheme a request came by: the values of [`SCHEMES`], in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What the pages are rendered from; replaced in parts by reloads and window changes.
struct Source {
    config: Arc<Config>,
    content: Sites<Content>,
    window: Window,
}

/// What bounds one connection, fixed at start like the listeners.
pub struct Limits {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

/// State every connection reads.
pub struct Shared {
    pages: ArcSwap<Sites<Rendered>>,
    source: Mutex<Source>,
    pub stats: Stats,
    pub http_port: u16,
    pub https_port: Option<u16>,
    pub limits: Limits,
    started: u64,
    slots: Arc<Semaphore>,
    /// Open connections per source (IPv4 address, or IPv6 /64).
    per_source: Mutex<HashMap<Source64, usize>>,
    max_per_source: usize,
    /// Whether and when maintenance ends, for held requests.
    pub ending: Arc<Ending>,
    /// Flips to true on SIGTERM: accept loops stop, HTTPS connections are asked to finish.
    stop: watch::Sender<bool>,
    /// Every HTTP/1.1 connection with an answer not yet fully written, and every HTTPS
    /// connection, holds a clone of this sender; shutdown drops the original and waits until
    /// the channel closes, which is when the last such connection has finished or gone
    /// (mini-redis's drop-guard shutdown).
    writing: Mutex<Option<mpsc::Sender<()>>>,
    all_written: tokio::sync::Mutex<mpsc::Receiver<()>>,
    pub tls: Option<Identity>,
    key_helper: Option<KeyHelper>,
}

impl Shared {
    pub fn new(
        config: Config,
        content: Sites<Content>,
        tls: Option<Identity>,
        key_helper: Option<KeyHelper>,
    ) -> Result<Shared> {
        let window = Window::default();
        let pages = content.render(&window)?;
        let limits = Limits {
            idle_timeout: config.server.idle_timeout,
            header_timeout: config.server.header_timeout,
            max_header_bytes: config.server.max_header_bytes,
        };
        let (writing, all_written) = mpsc::channel(1);
        let ending = Arc::new(Ending::new(config.server.wait_timeout));
        Ok(Shared {
            limits,
            pages: ArcSwap::from_pointee(pages),
            http_port: config.server.http_port,
            https_port: tls.as_ref().map(|_| config.server.https_port),
            slots: Arc::new(Semaphore::new(config.server.max_connections)),
            per_source: Mutex::new(HashMap::new()),
            max_per_source: config.server.max_connections_per_source,
            source: Mutex::new(Source {
                config: Arc::new(config),
                content,
                window,
            }),
            stats: Stats::default(),
            started: crate::time::now_secs(),
            ending,
            stop: watch::Sender::new(false),
            writing: Mutex::new(Some(writing)),
            all_written: tokio::sync::Mutex::new(all_written),
            tls,
            key_helper,
        })
    }

    fn source(&self) -> std::sync::MutexGuard<'_, Source> {
        // A panic while holding this lock would be a bug in a few lines of assignments; the
        // data stays consistent either way, so keep serving rather than cascade the panic.
        self.source.lock().unwrap_or_else(|e| e.into_inner())
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
            None => crate::certs::read_pems(&config.tls)?,
        };
        tls.reload(&pairs, config.tls.self_signed)
    }

    pub fn settings(&self) -> Arc<Config> {
        self.source().config.clone()
    }

    /// Installs a reloaded config and page content, keeping the current window.
    pub fn replace(&self, config: Config, content: Sites<Content>) -> Result<()> {
        let mut source = self.source();
        let pages = content.render(&source.window)?;
        self.pages.store(Arc::new(pages));
        source.config = Arc::new(config);
        source.content = content;
        Ok(())
    }

    pub fn set_window(&self, window: Window) -> Result<()> {
        let mut source = self.source();
        let pages = source.content.render(&window)?;
        self.pages.store(Arc::new(pages));
        self.ending.set_window(window.until);
        source.window = window;
        Ok(())
    }

    pub fn status(&self) -> ServerStatus {
        let window = self.source().window.clone();
        ServerStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started: self.started,
            requests: self.stats.requests.load(Ordering::Relaxed),
            connections: self.stats.connections.load(Ordering::Relaxed),
            connections_total: self.stats.connections_total.load(Ordering::Relaxed),
            refused_direct: self.stats.refused_direct.load(Ordering::Relaxed),
            refused_per_source: self.stats.refused_per_source.load(Ordering::Relaxed),
            held_requests: self.ending.held() as u64,
            http_port: self.http_port,
            https_port: self.https_port,
            window,
            requests_by: SCHEMES
                .iter()
                .zip(&self.stats.requests_by)
                .flat_map(|(scheme, row)| {
                    ANSWER_FORMATS
                        .iter()
                        .zip(row)
                        .map(|(format, n)| RequestCount {
                            scheme: (*scheme).into(),
                            format: (*format).into(),
                            count: n.load(Ordering::Relaxed),
                        })
                })
                .collect(),
            limit_waits: self.stats.limit_waits.load(Ordering::Relaxed),
            tls_handshake_failures: self.stats.tls_handshake_failures.load(Ordering::Relaxed),
            certificates: self.tls.as_ref().map(Identity::expiry).unwrap_or_default(),
            kernel_in_sync: match self.stats.kernel_in_sync.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n == 2),
            },
        }
    }

    /// Every site's page, as rendered now; `pick` one by the request's host.
    pub fn pages(&self) -> arc_swap::Guard<Arc<Sites<Rendered>>> {
        self.pages.load()
    }

    pub fn count_request(&self, scheme: Scheme, served: Served) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.requests_by[scheme as usize][served as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A free connection slot at once, if there is one.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A free connection slot, waiting while all `max_connections` are taken.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// A request held now: it ends when maintenance does, or shutdown begins.
    pub fn hold(&self) -> Held {
        Held::new(self.ending.clone(), self.stop_signal())
    }

    /// Resolves once shutdown has begun.
    pub async fn stopped(&self) {
        self.stop_signal().await
    }

    /// [`Shared::stopped`], owning what it needs, for futures that outlive a borrow.
    pub fn stop_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    /// A guard a connection holds while shutdown must wait for it (an HTTP/1.1 answer not
    /// yet fully written, an HTTPS connection); `None` once shutdown has begun.
    pub fn writing(&self) -> Option<mpsc::Sender<()>> {
        self.writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops accepting, then lets open requests finish within the drain timeout.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let drain = self.settings().server.drain_timeout;
        // Dropping the original sender leaves only the connections' clones.
        self.writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let drained = async {
            // HTTP/1.1 answers are written as soon as a request is read, so only answers
            // still on their way to slow readers are waited for; idle keep-alive
            // connections close when the process exits. HTTPS connections finish their
            // open requests (told by the stop signal). `recv` returns None once every
            // sender is gone.
            let _ = self.all_written.lock().await.recv().await;
        };
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
    }
}

/// What one source is counted as: an IPv4 address, or the /64 of an IPv6 one (a client
/// usually holds a whole /64 and may use any address in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source64(u128);

impl Source64 {
    pub fn of(ip: IpAddr) -> Source64 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source64(u32::from(v4) as u128),
            // The top bit marks IPv6, so no /64 collides with an IPv4 address.
            IpAddr::V6(v6) => Source64((u128::from(v6) >> 64) | 1 << 127),
        }
    }
}

/// What a connection holds for as long as it lives: its connection slot, its place in its
/// source's count, and its place in the open-connection count. Both the HTTP/1.1 and the
/// HTTPS paths keep one.
pub struct ConnectionGuard {
    pub shared: Arc<Shared>,
    source: Source64,
    _slot: OwnedSemaphorePermit,
}

impl ConnectionGuard {
    /// The guard for a connection from `peer`, or `None` when that source already holds
    /// `max_connections_per_source` (counted in the stats).
    pub fn new(shared: Arc<Shared>, slot: OwnedSemaphorePermit, peer: IpAddr) -> Option<Self> {
        let source = Source64::of(peer);
        {
            let mut counts = shared.per_source.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(source).or_insert(0);
            if *n >= shared.max_per_source {
                shared
                    .stats
                    .refused_per_source
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            *n += 1;
        }
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard {
            shared,
            source,
            _slot: slot,
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared
            .stats
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        let mut counts = self
            .shared
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}
