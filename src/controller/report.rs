//! What the controller reports: stable objects for `--json` (field names are documented in the
//! README), turned into sentences by `output`.

use maint_backends::PortMap;
use serde::Serialize;

use crate::control::ServerStatus;

/// What `on` and `off` report.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub changed: bool,
    pub active: bool,
    pub dry_run: bool,
    pub backend: &'static str,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub ports: Vec<PortMap>,
    pub until: Option<String>,
    pub reason: Option<String>,
    pub states_killed: usize,
    pub server_started: Option<u32>,
    pub server_stopped: Option<u32>,
    pub warnings: Vec<String>,
    /// What would be loaded (`--dry-run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub active: bool,
    pub expired: bool,
    pub backend: &'static str,
    pub table: String,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub source_prefixes: Vec<String>,
    pub exception_prefixes: Vec<String>,
    pub ports: Vec<PortMap>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub reason: Option<String>,
    pub server: Option<ServerReport>,
    pub drift: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub healthy: bool,
    #[serde(flatten)]
    pub status: ServerStatus,
}
