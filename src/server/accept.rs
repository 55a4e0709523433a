//! Accepting connections: within the connection limit, only those that came through the
//! firewall's redirect, each handed to the HTTP/1.1 path ([`super::h1`]) or, on the HTTPS
//! port, to hyper ([`super::https`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::shared::{ConnectionGuard, Shared};

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, https: bool) {
    let watch_stop = shared.clone();
    let stopped = watch_stop.stopped();
    tokio::pin!(stopped);
    let https = match (&shared.tls, https) {
        (Some(tls), true) => Some(super::https::Service::new(&shared, tls)),
        _ => None,
    };
    loop {
        // At the limit, the next connections wait in the kernel's queue (served when a slot
        // frees, or refused by the kernel if the queue overflows); the metrics count them.
        let (slot, waited) = match shared.try_slot() {
            Some(slot) => (slot, false),
            None => tokio::select! {
                _ = &mut stopped => return,
                slot = shared.slot() => (slot, true),
            },
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
        let Some(guard) = ConnectionGuard::new(shared.clone(), slot, peer.ip()) else {
            tracing::debug!(%peer, "refused: its source holds max_connections_per_source");
            continue;
        };
        if waited {
            shared.stats.limit_waits.fetch_add(1, Ordering::Relaxed);
        }
        let _ = stream.set_nodelay(true);
        match &https {
            // Plain HTTP: the lean HTTP/1.1 path (see `h1` for why).
            None => {
                tokio::spawn(super::h1::Conn::new(stream, guard));
            }
            Some(server) => server.spawn(stream, peer, guard),
        }
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
