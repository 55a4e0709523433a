//! The state record: what the last successful `maint on` put in place, and the lock that
//! serialises concurrent invocations (cron and Ansible may well run two at once).
//!
//! The kernel is the truth; the record holds what the kernel cannot (the tokens the operator
//! typed, the reason, since when, which server `on` started) and lets `status` spot drift.
//! It lives under /run by default, so like the kernel tables it does not survive a reboot.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use maint_backends::{Kind, Policy};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub backend: Kind,
    /// nftables table or pf anchor name, so `off` finds it even if the config changed since.
    pub table: String,
    pub policy: Policy,
    /// Sources and exceptions as typed (alias names kept), for `status`.
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    /// Unix seconds.
    pub since: u64,
    pub reason: Option<String>,
    /// The pid of a maintenance server `on` started, which `off` stops again.
    pub spawned_server: Option<u32>,
}

/// `Ok(None)` when there is no record; `Err` when there is one that cannot be read, which
/// `status` reports and `off` steps over.
pub fn load(path: &Path) -> Result<Option<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read state record {}", path.display()))
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("state record {} is corrupt", path.display()))
}

/// Written to a temporary file and renamed, so a crash never leaves half a record. Built in
/// memory and written at once: with 100,000 prefixes, writing token by token cost more than
/// loading the firewall.
pub fn save(path: &Path, record: &Record) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_vec_pretty(record)?;
    text.push(b'\n');
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Fails, naming the file, when `save` could not write the record: checked before anything
/// changes, so a record that cannot be written never leaves a firewall applied behind an
/// error.
pub fn check_writable(path: &Path) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let _ = std::fs::remove_file(&tmp);
    if path.is_dir() {
        anyhow::bail!(
            "the state record {} is a directory; remove it (maint writes a file there)",
            path.display()
        );
    }
    Ok(())
}

/// Taken by `status` so it sees the state before or after an `on` or `off`, never half-way.
/// `None` when there is no lock file yet (nothing ever ran) or it cannot be opened (an
/// unprivileged reader), in which case the reader goes on without it.
pub fn lock_shared(path: &Path) -> Option<Lock> {
    let f = File::open(path).ok()?;
    f.lock_shared().ok()?;
    Some(Lock(f))
}

pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Held for the whole of an `on` or `off`; released when dropped.
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(path: &Path) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!("another maint is running; waiting for it to finish");
            f.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    Ok(Lock(f))
}
