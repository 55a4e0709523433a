//! The metrics listener (`[metrics] listen`): `GET /metrics` in the Prometheus text format,
//! on a socket of its own that the firewall never redirects to.
//!
//! Scrapers are few and trusted only as far as the address it is bound to: connections are
//! capped, each gets one request within the header timeout and is closed, and nothing of the
//! request but its method and path is looked at.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::shared::Shared;
use crate::metrics::{render, Snapshot, CONTENT_TYPE};
use crate::state::Store;

/// Scrapes served at once; more wait in the kernel's queue.
const CONCURRENT_SCRAPES: usize = 8;
/// Longest line the keeper sends.
const REPORT_LINE_MAX: u64 = 256;

/// Serves the metrics until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, state_dir: PathBuf) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_SCRAPES));
    let stopped = shared.stop_signal();
    tokio::pin!(stopped);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = tokio::select! {
            () = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (shared, state_dir) = (shared.clone(), state_dir.clone());
        let timeout = shared.limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let answer = answer(&req, &shared, &state_dir);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            // A scraper that stalls after its headers gets no more than this either.
            let _ = tokio::time::timeout(timeout * 2, conn).await;
        });
    }
}

fn answer<B>(
    req: &Request<B>,
    shared: &Shared,
    state_dir: &std::path::Path,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => match exposition(shared, state_dir) {
            Ok(text) => (StatusCode::OK, CONTENT_TYPE, text),
            Err(e) => {
                tracing::error!("metrics: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "the metrics could not be rendered; see the server's log\n".into(),
                )
            }
        },
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "maint's metrics are at /metrics\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET /metrics\n".into(),
        ),
    };
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The metrics of the moment: the record and totals as the controller left them, and this
/// server's counters.
fn exposition(shared: &Shared, state_dir: &std::path::Path) -> anyhow::Result<String> {
    let store = Store::new(state_dir);
    let record = store.load().unwrap_or_else(|e| {
        tracing::warn!("metrics: {e:#}");
        None
    });
    let totals = store.totals();
    let status = shared.status();
    render(&Snapshot {
        record: record.as_ref(),
        totals: &totals,
        kernel_in_sync: status.kernel_in_sync,
        server: Some(&status),
        now: SystemTime::now(),
    })
}

/// Reads the keeper's reports (`in_sync 1` or `in_sync 0`, a line each) until it is gone.
/// Holding the link open is also what tells the keeper that this server lives.
pub fn hear_keeper(link: std::os::unix::net::UnixStream, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        use std::io::{BufRead, Read};
        let mut reader = std::io::BufReader::new(link);
        loop {
            let mut line = String::new();
            match (&mut reader).take(REPORT_LINE_MAX).read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let verdict = match line.trim() {
                "in_sync 1" => 2,
                "in_sync 0" => 1,
                _ => continue,
            };
            shared
                .stats
                .kernel_in_sync
                .store(verdict, Ordering::Relaxed);
        }
        // The keeper is gone: nobody watches the kernel any more.
        shared.stats.kernel_in_sync.store(0, Ordering::Relaxed);
    });
}
