//! The local control channel between the `maint` CLI and a running maintenance server.
//!
//! A Unix socket in the state directory, owned by root with mode 0600 when the server starts
//! as root, so only the operator reaches it and the network never can. One JSON request per
//! line, one JSON answer per line: easy to debug with `socat`, and nothing to version beyond
//! adding fields.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The header that marks every answer of maint's server, so the health probe (and the page's
/// script) can tell the maintenance server from the app.
pub const MARKER: &str = "x-maintenance";

/// The maintenance window the page describes: when it ends and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Unix seconds; drives Retry-After and the page's ETA.
    pub until: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Maintenance (again), with this window; also what `on` tells a running server.
    SetWindow(Window),
    /// Maintenance is over: answer every held request "off" (visitors' pages go back), and
    /// reply once those answers are written. `off` sends it after the redirect stopped
    /// taking new connections and before the firewall forgets the redirected ones.
    End,
}

/// The schemes requests are counted by.
pub const SCHEMES: [&str; 2] = ["http", "https"];
/// How a request was answered: the page as HTML, JSON or text, an asset, or a held wait.
pub const ANSWER_FORMATS: [&str; 6] = ["html", "json", "text", "asset", "wait", "pass"];

/// Requests answered with one scheme and format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    pub scheme: String,
    pub format: String,
    pub count: u64,
}

/// When a certificate the server presents expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateExpiry {
    /// Its first DNS name (or subject).
    pub name: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What the server reports about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub pid: u32,
    pub version: String,
    /// When it started: Unix seconds here, RFC 3339 on the wire and in `status --json`.
    #[serde(with = "crate::time::rfc3339_field")]
    pub started: u64,
    pub requests: u64,
    pub connections: u64,
    pub connections_total: u64,
    /// Connections refused because they reached the server's port directly, not through the
    /// firewall's redirect.
    pub refused_direct: u64,
    /// Connections closed at once because their source already held
    /// `max_connections_per_source`.
    #[serde(default)]
    pub refused_per_source: u64,
    /// Visitors' pages holding a request until maintenance ends (about one per open tab).
    #[serde(default)]
    pub held_requests: u64,
    pub http_port: u16,
    pub https_port: Option<u16>,
    pub window: Window,
    /// Requests by scheme and answer format.
    #[serde(default)]
    pub requests_by: Vec<RequestCount>,
    /// Connections that waited in the kernel's queue because `max_connections` were open.
    #[serde(default)]
    pub limit_waits: u64,
    #[serde(default)]
    pub tls_handshake_failures: u64,
    #[serde(default)]
    pub certificates: Vec<CertificateExpiry>,
    /// The keeper's last word on whether the kernel holds the recorded policy; `None`
    /// without a keeper.
    #[serde(default)]
    pub kernel_in_sync: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Ok { status: ServerStatus },
    Err { error: String },
}

/// Why the server could not be asked: the caller decides whether that means "not running".
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no maintenance server is running (no control socket at {0})")]
    NotRunning(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub fn ask(socket: &Path, request: &Request) -> Result<ServerStatus, ControlError> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(socket.display().to_string()))
        }
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!(
                    "cannot connect to control socket {}",
                    socket.display()
                ))
                .into())
        }
    };
    let mut exchange = || -> Result<ServerStatus> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        match serde_json::from_str(&answer).context("unreadable answer from the server")? {
            Reply::Ok { status } => Ok(status),
            Reply::Err { error } => bail!("the maintenance server refused: {error}"),
        }
    };
    exchange()
        .with_context(|| format!("talking to the maintenance server at {}", socket.display()))
        .map_err(ControlError::Other)
}
