//! What the operator asked for, as the controller takes it: every token of the command line
//! parsed and checked here, before anything changes (as ripgrep builds `HiArgs` from the
//! parsed `LowArgs`). The controller never sees clap's types, and a bad token is refused
//! before the first lock is taken.

use std::time::SystemTime;

use anyhow::anyhow;
use ipnet::IpNet;

use crate::cli::{OffArgs, OnArgs};
use crate::config::Config;
use crate::sources;

/// Longest reason accepted: it is shown on the page and kept in the record.
const REASON_MAX_BYTES: usize = 1000;

/// `maint on`, resolved.
#[derive(Debug, Clone)]
pub struct OnRequest {
    /// Sources and exceptions as typed (alias names kept), for the record and `status`.
    pub source_tokens: Vec<String>,
    pub except_tokens: Vec<String>,
    /// What they resolve to.
    pub sources: Vec<IpNet>,
    pub exceptions: Vec<IpNet>,
    /// The window's end, Unix seconds.
    pub until: Option<u64>,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub force: bool,
    /// What resolving noticed (`0.0.0.0/0` covers IPv4 only, ...).
    pub warnings: Vec<String>,
}

impl OnRequest {
    /// Resolves `args` against the config's aliases at `now`; any bad token is an error that
    /// names it.
    pub fn new(args: &OnArgs, config: &Config, now: SystemTime) -> anyhow::Result<OnRequest> {
        let source_tokens = if args.sources.is_empty() {
            vec!["all".to_string()]
        } else {
            args.sources.clone()
        };
        let aliases = &config.aliases;
        let src = sources::resolve(&source_tokens, aliases)?;
        let exc = sources::resolve(&args.except, aliases)?;
        let until = sources::window_end(args.for_.as_deref(), args.until.as_deref(), now)?;
        if let Some(r) = &args.reason {
            if r.len() > REASON_MAX_BYTES {
                return Err(anyhow!(
                    "--reason is {} bytes long; keep it under {REASON_MAX_BYTES}",
                    r.len()
                ));
            }
        }
        let mut warnings = src.warnings;
        warnings.extend(exc.warnings);
        Ok(OnRequest {
            source_tokens,
            except_tokens: args.except.clone(),
            sources: src.prefixes,
            exceptions: exc.prefixes,
            until,
            reason: args.reason.clone(),
            dry_run: args.dry_run,
            force: args.force,
            warnings,
        })
    }
}

/// `maint off`.
#[derive(Debug, Clone, Copy)]
pub struct OffRequest {
    pub dry_run: bool,
    /// Set by the `maint off` that `on` schedules for a window's end on firewalls that cannot
    /// expire rules: end maintenance at this Unix time if the window is still that one.
    pub scheduled: Option<u64>,
}

impl From<&OffArgs> for OffRequest {
    fn from(args: &OffArgs) -> Self {
        OffRequest {
            dry_run: args.dry_run,
            scheduled: args.scheduled,
        }
    }
}
