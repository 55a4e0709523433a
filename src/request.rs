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
    /// `--drain`: how long connections already open on the app may go on.
    pub drain: Option<std::time::Duration>,
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
        let drain = args.drain.as_deref().map(parse_drain).transpose()?;
        if let (Some(d), Some(end)) = (drain, until) {
            let now_secs = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |n| n.as_secs());
            if now_secs + d.as_secs() >= end {
                return Err(anyhow!(
                    "--drain {} would outlast the window: give a drain shorter than --for/--until",
                    args.drain.as_deref().unwrap_or("")
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
            drain,
            warnings,
        })
    }
}

/// The longest drain: a drain holds `on` (and an Ansible task) until it ends.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// `--drain 30s`: from one second to an hour.
fn parse_drain(text: &str) -> anyhow::Result<std::time::Duration> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| anyhow!("--drain {text:?}: {e}; write a duration like 30s or 2m"))?;
    if d < std::time::Duration::from_secs(1) || d > DRAIN_MAX {
        return Err(anyhow!(
            "--drain {text:?}: give from 1s to 1h (connections open longer are cut at its end)"
        ));
    }
    Ok(std::time::Duration::from_secs(d.as_secs()))
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
