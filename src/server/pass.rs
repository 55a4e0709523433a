//! The server's half of a pass link: a visitor asks for `/.maint/pass/TOKEN` on the page, and
//! the server (unprivileged) asks the keeper (root) to let exactly that visitor's prefix
//! through. The keeper decides; the server only forwards what it saw and answers the visitor.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::admission::{self, PassSet, Refusal, Reply, Request};
use crate::config::Config;
use crate::pass::{prefix_for, Token, LINK_PREFIX};

/// How long the visitor waits for the keeper's answer at most; the page follows without it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// The token of a pass link's path, if `path` is one (shape only: the keeper judges it).
pub fn link_token(path: &str) -> Option<&str> {
    path.strip_prefix(LINK_PREFIX)
}

/// Asks the keeper to let the visitor at `peer` through with `token`.
pub async fn ask(config: &Config, peer: SocketAddr, token: &str) -> Reply {
    let Some(token) = Token::parse(token) else {
        return Reply::refused(Refusal::Malformed, "not a pass token");
    };
    let net = prefix_for(peer.ip(), config.pass.ipv4_prefix, config.pass.ipv6_prefix);
    let asking = SocketAddr::new(maint_backends::unmap(peer.ip()), peer.port());
    let request = Request {
        set: PassSet::of(&net),
        net,
        token,
        asking,
    };
    let dir = config.paths.runtime_dir.clone();
    let exchange = async {
        let std_stream = admission::connect(&dir)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(std_stream)?;
        stream.write_all(request.line().as_bytes()).await?;
        let mut buf = Vec::with_capacity(64);
        (&mut stream)
            .take(admission::MAX_LINE as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok::<_, std::io::Error>(buf)
    };
    let reply = match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(Ok(buf)) => std::str::from_utf8(&buf)
            .ok()
            .and_then(|l| Reply::parse(l.trim_end_matches('\n'))),
        Ok(Err(e)) => {
            tracing::warn!(
                "a visitor opened a pass link, but the keeper cannot be asked ({e}): is \
                 `keep` on and maint serving as root?"
            );
            None
        }
        Err(_) => None,
    };
    let reply =
        reply.unwrap_or_else(|| Reply::refused(Refusal::Failed, "no answer from the keeper"));
    match &reply {
        Reply::Admitted { id, .. } => tracing::info!("pass {id} let {net} through"),
        Reply::Refused { why, detail } => {
            tracing::info!("pass link from {peer} refused ({}): {detail}", why.word())
        }
    }
    reply
}

/// The answer to a pass link that let the visitor through: `303 See Other` to `/`, which
/// now reaches the app. The caller closes the connection after it, so the browser's next
/// request opens a new one, which the redirect no longer catches.
pub fn passed(method: &Method) -> super::page::Answer {
    let body = Bytes::from_static(
        b"<!doctype html><meta charset=utf-8><title>Let through</title>\n\
          <p>You are let through to the site. <a href=\"/\">Continue</a></p>\n",
    );
    let mut answer = super::page::finish(
        method,
        StatusCode::SEE_OTHER,
        body,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
        .headers
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    answer.served = super::page::Served::Pass;
    answer
}
