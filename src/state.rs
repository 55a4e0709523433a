//! The state record: what the operator asked for, kept in `paths.state_dir` so that it
//! outlives a reboot, and the lock that serialises concurrent invocations (cron and Ansible
//! may well run two at once; the keeper in `maint serve` takes it too).
//!
//! Two files, so that reading what is in force costs the same for ten prefixes and for a
//! million: `maintenance.json` is small (who, why, until when, the ports, how many prefixes,
//! and the policy's digest, which the kernel's copy also carries), and `policy.json` holds
//! the prefixes, read only to put the policy back (a restore or a repair) or to list them.
//! The policy file is written first and the header names its digest, so a crash between the
//! two writes is seen as a mismatch, never taken for the new policy.
//!
//! Both are written atomically (a temporary file, fsync, rename, fsync of the directory) in
//! a versioned format; a record that cannot be read is reported by `status` and stepped over
//! by `off`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use maint_backends::{Kind, Policy, PortMap};
use serde::{Deserialize, Serialize};

/// The record format this maint writes and reads.
pub const VERSION: u32 = 2;

/// Where the two files live.
pub struct Store {
    dir: PathBuf,
}

/// How many prefixes a list holds, by family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub ipv4: usize,
    pub ipv6: usize,
}

impl Count {
    pub fn of(list: &[ipnet::IpNet]) -> Count {
        let ipv4 = list
            .iter()
            .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
            .count();
        Count {
            ipv4,
            ipv6: list.len() - ipv4,
        }
    }

    pub fn total(&self) -> usize {
        self.ipv4 + self.ipv6
    }
}

/// Who switched maintenance on (or last changed it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The invoking user (`SUDO_USER` when run through sudo).
    pub user: String,
    /// What ran maint, when it can tell: "ansible", "cron", "ssh", "terminal".
    pub origin: Option<String>,
}

impl Actor {
    /// Who is running this command: the user behind sudo if any, and what started maint
    /// (`MAINT_ORIGIN`, which the Ansible collection sets; else an SSH session, a
    /// terminal, or cron as the parent process).
    pub fn invoking() -> Actor {
        let user = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .unwrap_or_else(|| nix::unistd::Uid::effective().to_string());
        let origin = std::env::var("MAINT_ORIGIN")
            .ok()
            .filter(|o| !o.is_empty())
            .or_else(|| {
                let parent =
                    std::fs::read_to_string(format!("/proc/{}/comm", nix::unistd::getppid()))
                        .unwrap_or_default();
                if matches!(parent.trim(), "cron" | "crond" | "CRON") {
                    Some("cron".into())
                } else if std::env::var_os("SSH_CONNECTION").is_some() {
                    Some("ssh".into())
                } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    Some("terminal".into())
                } else {
                    None
                }
            });
        Actor { user, origin }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub backend: Kind,
    /// nftables table or pf anchor name, so `off` finds it even if the config changed since.
    pub table: String,
    /// [`Policy::digest`] of the policy in `policy.json`, and in the kernel's stamp.
    pub digest: String,
    pub ports: Vec<PortMap>,
    /// Unix seconds.
    pub until: Option<u64>,
    pub source_count: Count,
    pub exception_count: Count,
    /// Sources and exceptions as typed (alias names kept), for `status`.
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    /// Unix seconds since maintenance has been on (kept across changes).
    pub since: u64,
    /// Unix seconds of the last change.
    pub changed: u64,
    pub reason: Option<String>,
    /// Who made the last change.
    pub by: Actor,
    /// Who switched maintenance on (kept across changes, as `since` is).
    #[serde(default)]
    pub on_by: Option<Actor>,
    /// Whether the end of this window was logged (the audit trail says "expiry" once, also
    /// across restarts of the keeper that noticed it).
    #[serde(default)]
    pub expiry_logged: bool,
    /// The pid of a maintenance server `on` started, which `off` stops again.
    pub spawned_server: Option<u32>,
    /// `on --drain`: until when (Unix seconds) connections open before it may finish on the
    /// app; then the policy is applied whole and their states killed.
    #[serde(default)]
    pub drain_until: Option<u64>,
}

impl Record {
    pub fn expired_at(&self, now: std::time::SystemTime) -> bool {
        maint_backends::window_ended(self.until, now)
    }

    /// A record of nothing: what the audit trail names when `off` found maint's table without
    /// a record.
    pub fn unrecorded() -> Record {
        Record {
            version: VERSION,
            backend: Kind::Nftables,
            table: String::new(),
            digest: String::new(),
            ports: Vec::new(),
            until: None,
            source_count: Count::default(),
            exception_count: Count::default(),
            sources: Vec::new(),
            exceptions: Vec::new(),
            since: 0,
            changed: 0,
            reason: None,
            by: Actor::default(),
            on_by: None,
            expiry_logged: false,
            spawned_server: None,
            drain_until: None,
        }
    }

    /// One line for logs and the audit trail: which sources, except which, which ports, until
    /// when.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({} prefixes)",
            if self.sources.is_empty() {
                "all".to_owned()
            } else {
                self.sources.join(", ")
            },
            self.source_count.total()
        );
        if !self.exceptions.is_empty() {
            s.push_str(&format!(
                " except {} ({} prefixes)",
                self.exceptions.join(", "),
                self.exception_count.total()
            ));
        }
        s.push_str(&format!("; ports {}", PortMap::list(&self.ports)));
        if let Some(u) = self.until {
            s.push_str(&format!("; until {}", crate::time::rfc3339(u)));
        }
        s
    }
}

/// What maint has done over time, for the metrics: kept in the state directory because the
/// processes that act (`on`, `off`, the keeper) come and go. Written under the lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Connection states cut by `on`, `off` and repairs.
    pub states_killed: u64,
    /// Times the keeper put the recorded policy back after another program removed or
    /// changed it.
    pub repairs: u64,
    /// Times `maint serve` put the recorded maintenance back when it started.
    pub restores: u64,
    /// Unix seconds of the last transition (on, change, off, expiry, repair, restore).
    pub last_change: Option<u64>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn record_path(&self) -> PathBuf {
        self.dir.join("maintenance.json")
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.json")
    }

    fn totals_path(&self) -> PathBuf {
        self.dir.join("totals.json")
    }

    /// The totals so far; zero when none were written (or the file cannot be read: they are
    /// counters for monitoring, never a reason to fail a command).
    pub fn totals(&self) -> Totals {
        read_if_exists(&self.totals_path())
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    }

    /// Adds to the totals (the caller holds the lock). A failure is logged, not returned:
    /// the transition it counts has happened.
    pub fn add_to_totals(&self, change: impl FnOnce(&mut Totals)) {
        let mut totals = self.totals();
        change(&mut totals);
        let written = serde_json::to_vec(&totals)
            .map_err(anyhow::Error::from)
            .and_then(|t| write_atomically(&self.totals_path(), &t));
        if let Err(e) = written {
            tracing::warn!("cannot update the totals for the metrics: {e:#}");
        }
    }

    /// `Ok(None)` when there is no record; `Err` when there is one that cannot be read,
    /// which `status` reports and `off` steps over.
    pub fn load(&self) -> Result<Option<Record>> {
        let path = self.record_path();
        let Some(text) = read_if_exists(&path)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(&text)
            .with_context(|| format!("state record {} is corrupt", path.display()))?;
        if v.version != VERSION {
            bail!(
                "state record {} has format version {}, this maint reads version {VERSION}; \
                 `maint off` removes it",
                path.display(),
                v.version
            );
        }
        serde_json::from_slice(&text)
            .map(Some)
            .with_context(|| format!("state record {} is corrupt", path.display()))
    }

    /// The whole policy `record` names, checked against its digest.
    pub fn policy(&self, record: &Record) -> Result<Policy> {
        let path = self.policy_path();
        let text = read_if_exists(&path)?
            .with_context(|| format!("the policy file {} is missing", path.display()))?;
        let policy: Policy = serde_json::from_slice(&text)
            .with_context(|| format!("the policy file {} is corrupt", path.display()))?;
        if policy.digest() != record.digest {
            bail!(
                "the policy file {} does not hold the policy the record names (digest {} \
                 instead of {}); run `maint on` again",
                path.display(),
                policy.digest(),
                record.digest
            );
        }
        Ok(policy)
    }

    /// Writes the policy, then the record naming it.
    pub fn save(&self, record: &Record, policy: &Policy) -> Result<()> {
        // Rewriting a million prefixes for an unchanged policy would cost seconds.
        let same = self
            .load()
            .ok()
            .flatten()
            .is_some_and(|old| old.digest == record.digest)
            && self.policy_path().exists();
        if !same {
            write_atomically(&self.policy_path(), &serde_json::to_vec(policy)?)?;
        }
        self.save_record(record)
    }

    /// Rewrites the record alone, for a policy already saved.
    pub fn save_record(&self, record: &Record) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(record)?;
        text.push(b'\n');
        write_atomically(&self.record_path(), &text)
    }

    /// Fails, naming the file, when `save` could not write: checked before anything changes,
    /// so a record that cannot be written never leaves a firewall applied behind an error.
    pub fn check_writable(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        for path in [self.record_path(), self.policy_path()] {
            if path.is_dir() {
                bail!(
                    "{} is a directory; remove it (maint writes a file there)",
                    path.display()
                );
            }
        }
        let tmp = self.dir.join(".maint-write-test");
        File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }

    /// Removes both files; returns whether there was a record.
    pub fn remove(&self) -> Result<bool> {
        let had = remove_if_exists(&self.record_path())?;
        remove_if_exists(&self.policy_path())?;
        Ok(had)
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// A temporary file, fsync, rename over `path`, fsync of the directory: after a crash or a
/// power cut the file is the old one or the new one, never half of either.
///
/// Mode 0644 whatever the umask (the unit sets 0077): the unprivileged server reads the record
/// and the totals for its metrics, and `maint status` run by any user reads the record. None
/// of it is secret; the lock and the sockets stay root's.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    // Created through the umask; set the mode it must have.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
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

/// The lock if nobody holds it now; `Ok(None)` when an `on` or `off` is under way.
pub fn try_lock(path: &Path) -> Result<Option<Lock>> {
    let f = open_lock_file(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(Lock(f))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

/// Held for the whole of an `on` or `off`; released when dropped.
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(path: &Path) -> Result<Lock> {
    let f = open_lock_file(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(policy: &Policy) -> Record {
        Record {
            version: VERSION,
            backend: Kind::Nftables,
            table: "maint".into(),
            digest: policy.digest(),
            ports: policy.ports.clone(),
            until: policy.until,
            source_count: Count::of(&policy.sources),
            exception_count: Count::of(&policy.exceptions),
            sources: vec!["all".into()],
            exceptions: vec![],
            since: 1,
            changed: 1,
            ..Record::unrecorded()
        }
    }

    #[test]
    fn record_and_policy_roundtrip_and_are_checked_against_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let p = Policy::new(
            maint_backends::everything(),
            ["203.0.113.0/24".parse().unwrap()],
            [PortMap {
                public: 80,
                server: 503,
            }],
            Some(2_000_000_000),
        );
        store.save(&record(&p), &p).unwrap();
        let r = store.load().unwrap().unwrap();
        assert_eq!(r.source_count, Count { ipv4: 1, ipv6: 1 });
        assert_eq!(store.policy(&r).unwrap(), p);

        // A policy file that is not the one the record names is refused, never used.
        let other = Policy::new(maint_backends::everything(), [], p.ports.clone(), None);
        std::fs::write(store.policy_path(), serde_json::to_vec(&other).unwrap()).unwrap();
        let err = store.policy(&r).unwrap_err();
        assert!(
            format!("{err:#}").contains("does not hold the policy"),
            "{err:#}"
        );

        // Another format version is named, not misread.
        let text = std::fs::read_to_string(store.record_path()).unwrap();
        std::fs::write(
            store.record_path(),
            text.replace("\"version\": 2", "\"version\": 9"),
        )
        .unwrap();
        let err = store.load().unwrap_err();
        assert!(format!("{err:#}").contains("version 9"), "{err:#}");

        assert!(store.remove().unwrap());
        assert!(!store.remove().unwrap());
    }
}
