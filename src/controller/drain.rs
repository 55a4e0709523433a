//! `maint on --drain 30s`: new connections from matched sources go to the page at once, while
//! connections already open to the app may finish until the drain ends; then the states still
//! open are killed, as a plain `on` kills them at once.
//!
//! The redirect itself only decides new connections, so a drain is mostly a delayed kill. One
//! case needs more: a host where nothing tracked connections before maint's table was loaded
//! (no stateful firewall, so conntrack was idle). There the first segment of an open
//! connection that the kernel sees afterwards creates its state mid-stream and looks new to
//! NAT, which would redirect it to the maintenance server and reset it. So while draining,
//! nftables redirects only connection-opening SYNs, and leaves out the rules that reset
//! picked-up states (see `rules` in the nftables backend); the end of the drain applies the
//! whole policy. pf keeps state for every connection it passes and needs no change.
//!
//! The end is reached by whoever comes first: the `maint on --drain` that waits for it, or
//! the keeper, which looks each time it wakes (so a cancelled command does not leave a drain
//! open). Both take the lock, and the second finds nothing left to do.

use std::time::{Duration, SystemTime};

use super::fail::Result;
use super::{admit, firewall, Controller, Outcome};
use crate::config::Config;
use crate::pass::Book;
use crate::state::{self, Store};
use crate::time::now_secs;

impl Controller {
    /// Waits until the drain `on` just started ends, then ends it; the connections still open
    /// on the app are counted in `outcome`.
    pub fn finish_drain(&self, outcome: &mut Outcome, until: u64) -> Result<()> {
        // To the instant `until` begins, which is when `finish` acts.
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(until);
        if let Ok(wait) = end.duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
        if let Some(cut) = finish(&self.config)? {
            outcome.drain_cut = Some(cut);
            outcome.states_killed += cut;
        }
        Ok(())
    }
}

/// Ends a drain whose time has come: the whole policy in the kernel, the states still open on
/// the app killed, the record without its drain. Returns how many states went, or `None`
/// when there was no drain to end.
pub fn finish(config: &Config) -> anyhow::Result<Option<usize>> {
    let _lock = state::lock(&config.paths.lock_file())?;
    let store = Store::new(&config.paths.state_dir);
    let Some(mut record) = store.load()? else {
        return Ok(None);
    };
    let now = now_secs();
    match record.drain_until {
        Some(u) if now >= u => {}
        _ => return Ok(None),
    }
    let (backend, _) = firewall::for_record(config, Some(&record)).map_err(|e| e.into_error())?;
    let drained = store.policy(&record)?;
    let policy = drained.clone().draining(false);
    if record.expired_at(SystemTime::now()) {
        // The window ended during the drain: nothing to cut over any more.
        record.drain_until = None;
        store.save(&record, &drained)?;
        return Ok(Some(0));
    }
    // Whom passes let through, spared by the kill: put back into the new table if the
    // rules change (the table's pass sets go with it), else as the book says.
    let passed = if drained.drain {
        super::quiet::ask_quiet(config);
        backend.apply(&policy)?;
        admit::put_back(config, backend.as_ref())
    } else {
        Book::load(&config.paths.state_dir)
            .map(|b| b.admitted_now(now))
            .unwrap_or_default()
    };
    let cut = backend
        .kill_disagreeing_states(&policy.with_passes(&passed), &policy.ports)
        .unwrap_or_else(|e| {
            tracing::warn!("the drain ended, but connections still open were not cut: {e}");
            0
        });
    record.drain_until = None;
    record.digest = policy.digest();
    store.save(&record, &policy)?;
    if cut > 0 {
        store.add_to_totals(|t| t.states_killed += cut as u64);
    }
    tracing::info!("the drain ended: {cut} connection(s) still open on the app were cut");
    Ok(Some(cut))
}

/// How long after its end the keeper waits for the `on --drain` that is waiting for it, which
/// reports what it cut; past that, the command was interrupted and the keeper ends the drain.
const KEEPER_GRACE_SECS: u64 = 2;

/// Whether `record` has a drain the keeper should end.
pub fn due(record: &crate::state::Record) -> bool {
    record
        .drain_until
        .is_some_and(|u| now_secs() >= u + KEEPER_GRACE_SECS)
}
