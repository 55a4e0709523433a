//! What the controller reports: stable objects for `--json` (field names are documented in the
//! README), turned into sentences by `output`.

use maint_backends::PortMap;
use serde::Serialize;

use crate::control::ServerStatus;
use crate::state::{Actor, Count, Record};
use crate::time::rfc3339;

/// Maintenance as an operator describes it, and what a before/after diff compares (Ansible's
/// `--diff`): sources and exceptions as given, aliases unexpanded.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Maintenance {
    pub active: bool,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub until: Option<String>,
    pub reason: Option<String>,
}

impl Maintenance {
    /// What the record describes, if the firewall still has it in force (`in_force`).
    pub fn recorded(record: Option<&Record>, in_force: bool) -> Maintenance {
        match record {
            Some(r) if in_force => Maintenance {
                active: true,
                sources: r.sources.clone(),
                exceptions: r.exceptions.clone(),
                until: r.until.map(rfc3339),
                reason: r.reason.clone(),
            },
            _ => Maintenance::default(),
        }
    }
}

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
    /// `on --drain`: until when open connections may finish on the app (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<String>,
    /// How many connections were still open on the app when the drain ended, and were cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_cut: Option<usize>,
    /// The drain's end in Unix seconds, for the command that waits for it.
    #[serde(skip)]
    pub drain_end: Option<u64>,
    pub server_started: Option<u32>,
    pub server_stopped: Option<u32>,
    pub warnings: Vec<String>,
    /// Maintenance before and after the command (with `--dry-run`: as it would be after).
    pub before: Maintenance,
    pub after: Maintenance,
    /// What would be loaded (`--dry-run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub active: bool,
    pub expired: bool,
    /// False when maint lacked the right to read the kernel: `active` is then the record's
    /// word, and the exit code says so.
    pub kernel_readable: bool,
    /// Whether the kernel holds what the record says (or nothing of maint's when off); `None`
    /// when it could not be read.
    pub kernel_in_sync: Option<bool>,
    pub backend: &'static str,
    pub table: String,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub source_count: Count,
    pub exception_count: Count,
    /// The prefixes themselves, when there are at most 1,000 (else only the counts).
    pub source_prefixes: Vec<String>,
    pub exception_prefixes: Vec<String>,
    pub ports: Vec<PortMap>,
    /// Since when maintenance has been on (RFC 3339), across changes.
    pub since: Option<String>,
    /// Who switched it on (kept across changes).
    pub on_by: Option<Actor>,
    /// When it was last switched or changed, and by whom.
    pub changed: Option<String>,
    pub by: Option<Actor>,
    pub until: Option<String>,
    pub reason: Option<String>,
    pub server: Option<ServerReport>,
    /// `on --drain` under way: until when open connections may finish on the app.
    pub drain_until: Option<String>,
    /// Pass links and the addresses they let through.
    pub passes: Vec<super::pass::PassView>,
    pub drift: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub healthy: bool,
    #[serde(flatten)]
    pub status: ServerStatus,
}
