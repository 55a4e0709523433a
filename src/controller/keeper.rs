//! Maintenance that holds: `maint serve` puts the recorded maintenance back when it starts
//! (after a reboot), and a small process that stays root keeps the kernel in the recorded
//! state while the server runs (an `nft flush ruleset`, a firewall reload, another tool
//! deleting maint's table), and starts the server again if it was started in the background
//! and dies.
//!
//! The keeper never decides what maintenance is: the record does. It takes the same lock as
//! `on` and `off`, so it never sees (or repairs towards) a record half-way through a change,
//! and when maintenance is off or its window has ended it puts nothing back.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use maint_backends::Seen;

/// The watch's announcements, shared between the keeper's loop and its quiet socket.
type Ears = Arc<Mutex<Box<dyn maint_backends::Ears>>>;

use super::quiet::{quiet_socket, QUIET};

/// Deaf while it lives, listening again when dropped.
struct Deaf(Ears);

impl Deaf {
    fn new(ears: Ears) -> Deaf {
        if let Ok(e) = ears.lock() {
            let _ = e.deafen();
        }
        Deaf(ears)
    }
}

impl Drop for Deaf {
    fn drop(&mut self) {
        if let Ok(e) = self.0.lock() {
            if let Err(err) = e.listen() {
                tracing::error!("the keeper cannot listen to the firewall again: {err}");
            }
        }
    }
}

use super::firewall;
use super::supervisor::Supervisor;
use crate::audit::{self, Transition};
use crate::config::Config;
use crate::control::Window;
use crate::state::{self, Record, Store};
use crate::time::rfc3339;

/// How often a firewall that cannot announce changes (pf) is looked at, and how long the
/// nftables watch waits before it looks whether the server is still there.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The window the page should describe when the server starts: the record's, if
/// maintenance is on.
pub fn recorded_window(config: &Config) -> Window {
    match Store::new(&config.paths.state_dir).load() {
        Ok(Some(r)) if !r.expired_at(SystemTime::now()) => Window {
            until: r.until,
            reason: r.reason,
        },
        _ => Window::default(),
    }
}

/// Called by `maint serve` once its ports are bound (visitors redirected now wait in the
/// listen queue instead of being refused) and before it drops privileges. Never fails the
/// server's start: what went wrong is logged.
pub fn restore(config: &Config) {
    if !config.server.restore {
        tracing::info!("not restoring maintenance: `restore = false` in the config");
        return;
    }
    let _lock = match state::try_lock(&config.paths.lock_file()) {
        Ok(Some(l)) => l,
        Ok(None) => {
            tracing::info!(
                "not restoring maintenance: an `on` or `off` is under way and decides it"
            );
            return;
        }
        Err(e) => {
            tracing::error!("not restoring maintenance: {e:#}");
            return;
        }
    };
    match hold_recorded(config, false) {
        Ok(Held::NothingRecorded) => tracing::info!("no maintenance recorded; nothing to restore"),
        Ok(Held::WindowEnded(until)) => {
            tracing::info!(
                "not restoring maintenance: its window ended at {}",
                until.map(rfc3339).unwrap_or_default()
            );
            note_expiry(config, "serve");
        }
        Ok(Held::InForce(record)) => tracing::info!(
            "maintenance recorded since {} is in force already",
            rfc3339(record.since)
        ),
        Ok(Held::PutBack {
            record,
            states_killed,
            ..
        }) => {
            tracing::warn!(
                "restored maintenance recorded since {} ({})",
                rfc3339(record.since),
                record.summary()
            );
            count_transition(config, Transition::Restore, "serve", &record, states_killed);
        }
        Err(e) => tracing::error!("could not restore the recorded maintenance: {e:#}"),
    }
}

/// Logs a transition maint made by itself and adds it to the totals; the caller holds the
/// lock.
fn count_transition(
    config: &Config,
    transition: Transition,
    origin: &str,
    record: &Record,
    states_killed: usize,
) {
    audit::Entry {
        transition,
        by: audit::maint_itself(origin),
        record: Some(record),
    }
    .log();
    Store::new(&config.paths.state_dir).add_to_totals(|t| {
        match transition {
            Transition::Repair => t.repairs += 1,
            Transition::Restore => t.restores += 1,
            _ => {}
        }
        t.states_killed += states_killed as u64;
        t.last_change = Some(crate::time::now_secs());
    });
}

/// Logs the end of the recorded window once (the record remembers it was logged); the
/// caller holds the lock.
fn note_expiry(config: &Config, origin: &str) {
    let store = Store::new(&config.paths.state_dir);
    let Ok(Some(mut record)) = store.load() else {
        return;
    };
    if record.expiry_logged || !record.expired_at(SystemTime::now()) {
        return;
    }
    record.expiry_logged = true;
    if let Err(e) = store.save_record(&record) {
        tracing::warn!("cannot note in the record that its window ended: {e:#}");
        return;
    }
    count_transition(config, Transition::Expiry, origin, &record, 0);
    super::pass::end_with_maintenance(config);
}

/// What [`hold_recorded`] found and did.
enum Held {
    NothingRecorded,
    WindowEnded(Option<u64>),
    /// The kernel holds the recorded policy.
    InForce(Record),
    /// It did not, and now does again; `location` names maint's rules, as the firewall does.
    PutBack {
        record: Record,
        location: String,
        states_killed: usize,
    },
}

/// Makes the kernel hold the recorded policy, if maintenance is on and its window open.
/// With `deep`, the whole policy is read back (someone else edited maint's table);
/// otherwise the digest in the kernel is compared. The caller holds the lock.
fn hold_recorded(config: &Config, deep: bool) -> anyhow::Result<Held> {
    let store = Store::new(&config.paths.state_dir);
    let Some(record) = store.load()? else {
        return Ok(Held::NothingRecorded);
    };
    if record.expired_at(SystemTime::now()) {
        return Ok(Held::WindowEnded(record.until));
    }
    let (backend, _) = firewall::for_record(config, Some(&record)).map_err(|e| e.into_error())?;
    let in_force = backend.in_force()?;
    let mut policy = None;
    if in_force.as_ref().map(|f| &f.digest) == Some(&record.digest) {
        if !deep {
            return Ok(Held::InForce(record));
        }
        let recorded = store.policy(&record)?;
        if backend.current()?.as_ref() == Some(&recorded) {
            return Ok(Held::InForce(record));
        }
        policy = Some(recorded);
    }
    let policy = match policy {
        Some(p) => p,
        None => store.policy(&record)?,
    };
    backend.apply(&policy)?;
    let passed = super::admit::put_back(config, backend.as_ref());
    // Clients that reached the app while the redirect was missing move to the page now.
    let mut redirected = policy.ports.clone();
    redirected.extend(in_force.into_iter().flat_map(|f| f.ports));
    let states_killed = backend
        .kill_disagreeing_states(&policy.with_passes(&passed), &redirected)
        .unwrap_or_else(|e| {
            tracing::warn!(
                "the redirect is back, but open connections to the app were not cut: {e}"
            );
            0
        });
    Ok(Held::PutBack {
        record,
        location: backend.location(),
        states_killed,
    })
}

/// Forks the keeper and returns the server's end of the link to it: the keeper learns that
/// the server is gone when the last copy of it closes, however the server ended (SIGKILL
/// included), and it reports on the kernel through it (see [`Keeper::report`]). Must be called before the async runtime starts (fork copies only the
/// calling thread) and while still root. `background`: the server was started by `on`, so
/// the keeper starts it again if it dies while maintenance is on (under systemd, the unit
/// restarts it instead).
pub fn spawn(config: &Config, config_path: &Path, background: bool) -> anyhow::Result<UnixStream> {
    let (server_end, keeper_end) = UnixStream::pair().context("socketpair for the keeper")?;
    // SAFETY: no other threads exist yet; the child closes what it inherited, runs plain
    // blocking code and exits without returning into the caller.
    match unsafe { nix::unistd::fork() }.context("fork the keeper")? {
        nix::unistd::ForkResult::Child => {
            drop(server_end);
            // The listening sockets and the key helper's socket are the server's: a keeper
            // holding them would keep a dead server's ports taken.
            close_inherited(keeper_end.as_raw_fd());
            let keeper = Keeper {
                config: config.clone(),
                config_path: config_path.to_path_buf(),
                background,
                reports: Mutex::new(keeper_end.try_clone().ok()),
            };
            keeper.run(keeper_end);
        }
        nix::unistd::ForkResult::Parent { child } => {
            tracing::debug!(pid = child.as_raw(), "started the keeper");
            drop(keeper_end);
            Ok(server_end)
        }
    }
}

/// Closes every descriptor above stderr except `keep` and the log's: Unix datagram sockets,
/// which only the journal and syslog sinks of the audit trail hold (the server's sockets are
/// TCP listeners and Unix stream sockets).
fn close_inherited(keep: RawFd) {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    use std::os::fd::BorrowedFd;
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (3..4096).collect(),
    };
    for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
        // SAFETY: only inspected while still open; closed below if it is not the log's.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let is_log = getsockopt(&borrowed, sockopt::SockType) == Ok(SockType::Datagram)
            && nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd).is_ok();
        if !is_log {
            let _ = nix::unistd::close(fd);
        }
    }
}

struct Keeper {
    config: Config,
    config_path: PathBuf,
    background: bool,
    /// The keeper's end of the link, for reports to the server.
    reports: Mutex<Option<UnixStream>>,
}

impl Keeper {
    fn run(self, link: UnixStream) -> ! {
        let keeper = std::sync::Arc::new(self);
        let on_gone = keeper.clone();
        std::thread::spawn(move || {
            let mut link = link;
            let mut byte = [0u8; 1];
            // Nothing is ever sent: this returns when the server is gone.
            let _ = link.read(&mut byte);
            on_gone.server_gone();
            std::process::exit(0);
        });
        if let Err(e) = keeper.keep() {
            tracing::error!("the keeper stopped watching the firewall: {e:#}");
        }
        // Without a watch, still wait for the server to go (the thread above exits).
        loop {
            std::thread::park();
        }
    }

    fn store(&self) -> Store {
        Store::new(&self.config.paths.state_dir)
    }

    /// Watches the firewall and puts the recorded policy back when it goes missing or
    /// differs.
    fn keep(&self) -> anyhow::Result<()> {
        if !self.config.server.keep {
            tracing::info!("not keeping maint's firewall state: `keep = false` in the config");
            return Ok(());
        }
        let (backend, _) = firewall::configured(&self.config).map_err(|e| e.into_error())?;
        // The server asks for pass admissions here, from its first visitor on; without root
        // there is nothing to add.
        if nix::unistd::Uid::effective().is_root() {
            if let Err(e) = super::admit::Helper::new(self.config.clone()).and_then(|h| h.spawn()) {
                tracing::error!("pass links will not work: {e:#}");
            }
        }
        let mut watch = backend.watch()?;
        self.report();
        let ears: Option<Ears> = watch.ears().map(|e| Arc::new(Mutex::new(e)));
        let quiet = Arc::new(AtomicBool::new(false));
        if let Some(ears) = &ears {
            self.answer_quiet_requests(ears.clone(), quiet.clone())?;
        }
        let mut look_again = false;
        loop {
            let seen = watch.wait(LOOK_EVERY)?;
            // The small record, read once per wake, says whether a window or a drain ended.
            let record = self.store().load().ok().flatten();
            self.expiry_check(record.as_ref());
            super::admit::expire(&self.config);
            if record.as_ref().is_some_and(super::drain::due) {
                if let Err(e) = super::drain::finish(&self.config) {
                    tracing::error!("could not end the drain: {e:#}");
                }
            }
            // An `on` asked for quiet while it loads a policy: listen again once it is done
            // (it holds the lock until then), and look at what it left.
            let was_quiet = quiet.swap(false, Ordering::SeqCst);
            if seen == Seen::Nothing && !was_quiet && !look_again {
                continue;
            }
            // While it repaired, the keeper was deaf (its own load would be announced element
            // by element), so an edit made meanwhile went unheard: it reads the table back
            // once more on its next wake.
            let deep = seen == Seen::EditedByOthers || look_again;
            look_again = match self.check(deep, ears.as_ref()) {
                Ok(repaired) => repaired,
                Err(e) => {
                    tracing::error!("could not check or repair maint's firewall state: {e:#}");
                    false
                }
            };
        }
    }

    /// `maint on` asks for quiet before it loads a policy (see [`ask_quiet`]).
    fn answer_quiet_requests(&self, ears: Ears, quiet: Arc<AtomicBool>) -> anyhow::Result<()> {
        let path = quiet_socket(&self.config);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot create the keeper's socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut word = [0u8; QUIET.len()];
                if stream.read_exact(&mut word).is_err() || word != *QUIET {
                    continue;
                }
                let deafened = ears.lock().map(|e| e.deafen());
                if matches!(deafened, Ok(Ok(()))) {
                    quiet.store(true, Ordering::SeqCst);
                    let _ = stream.write_all(b"ok\n");
                }
            }
        });
        Ok(())
    }

    /// Returns whether it put the recorded policy back.
    fn check(&self, deep: bool, ears: Option<&Ears>) -> anyhow::Result<bool> {
        let _lock = state::lock(&self.config.paths.lock_file())?;
        // Deaf while it looks and perhaps loads (its own load would be announced element by
        // element); whatever happened meanwhile is under the lock, which it holds.
        let _deaf = ears.map(|e| Deaf::new(e.clone()));
        let held = hold_recorded(&self.config, deep);
        if let Ok(Held::PutBack {
            record,
            location,
            states_killed,
        }) = &held
        {
            tracing::warn!(
                "maint's {location} was removed or changed by another program; put the \
                 recorded maintenance back ({})",
                record.summary()
            );
            count_transition(
                &self.config,
                Transition::Repair,
                "keeper",
                record,
                *states_killed,
            );
        }
        self.report();
        held.map(|h| matches!(h, Held::PutBack { .. }))
    }

    /// Notes the end of the recorded window once it has come: the kernel stopped redirecting
    /// by itself (nftables' `meta time`); the audit trail says so. `record` is the one the
    /// keeper read on this wake.
    fn expiry_check(&self, record: Option<&Record>) {
        let due = record.is_some_and(|r| !r.expiry_logged && r.expired_at(SystemTime::now()));
        if !due {
            return;
        }
        if let Ok(_lock) = state::lock(&self.config.paths.lock_file()) {
            note_expiry(&self.config, "keeper");
        }
    }

    /// Tells the server whether the kernel holds what the record says (`in_sync 1` or
    /// `in_sync 0`), for its metrics. Without a server to tell, nothing happens.
    fn report(&self) {
        let in_sync = (|| -> anyhow::Result<bool> {
            let record = self.store().load()?;
            let (backend, _) =
                firewall::for_record(&self.config, record.as_ref()).map_err(|e| e.into_error())?;
            let current = backend.in_force()?;
            Ok(super::status::firewall_drift(
                record.as_ref(),
                current.as_ref(),
                &backend.location(),
                SystemTime::now(),
            )
            .is_none())
        })()
        .unwrap_or_else(|e| {
            tracing::warn!("cannot tell whether the kernel holds the recorded policy: {e:#}");
            false
        });
        if let Ok(mut link) = self.reports.lock() {
            if let Some(stream) = link.as_mut() {
                let _ = stream.write_all(if in_sync {
                    b"in_sync 1\n"
                } else {
                    b"in_sync 0\n"
                });
            }
        }
    }

    /// The server is gone. A background server is started again while maintenance is on;
    /// `off` stopping it holds the lock until the record is gone, so that is not mistaken
    /// for a crash.
    fn server_gone(&self) {
        if !self.background {
            return;
        }
        let Ok(_lock) = state::lock(&self.config.paths.lock_file()) else {
            return;
        };
        match self.store().load() {
            Ok(Some(r)) if !r.expired_at(SystemTime::now()) => {}
            _ => return,
        }
        let supervisor = Supervisor {
            config: &self.config,
            config_path: &self.config_path,
        };
        match supervisor.start_server() {
            Ok(pid) => tracing::warn!(
                pid,
                "the maintenance server died while maintenance is on; started it again"
            ),
            Err(e) => {
                tracing::error!("the maintenance server died and could not be started again: {e:#}")
            }
        }
    }
}
