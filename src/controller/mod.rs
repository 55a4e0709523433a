//! The controller: `on`, `off`, `status` and `check`, in the order that keeps the safety rules.
//!
//! It owns ordering (input first, then the lock, then the health gate, then the firewall, then
//! the state kill, then the record) and never reaches into a backend's or the server's
//! internals: it talks to the firewall through [`Backend`] and to the server through the
//! control socket. Every step that can fail comes before the first step that changes anything.
//!
//! Its helpers each do one job: [`firewall`] picks the backend and the port map,
//! [`supervisor`] starts and stops the background server, [`probe`] asks it over HTTP,
//! [`target`] keeps the redirect target out of other users' reach, [`report`] holds what the
//! commands report, [`fail`] how they fail.

pub mod admit;
mod check;
pub mod drain;
mod fail;
mod firewall;
pub mod keeper;
pub mod pass;
mod probe;
mod proxies;
mod quiet;
mod report;
mod status;
mod supervisor;
mod target;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use maint_backends::{InForce, Policy, PortMap};

pub use fail::{Fail, Result};
pub use report::{Maintenance, Outcome, ServerReport, StatusReport};

use crate::audit::{self, Transition};
use crate::config::Config;
use crate::control::{self, Request, Window};
use crate::request::{OffRequest, OnRequest};
use crate::state::{self, Actor, Count, Record, Store};
use crate::time::{now_secs, rfc3339};
use supervisor::Supervisor;

pub struct Controller {
    config: Config,
    config_path: PathBuf,
}

impl Controller {
    pub fn new(config: Config, config_path: PathBuf) -> Self {
        Controller {
            config,
            config_path,
        }
    }

    fn store(&self) -> Store {
        Store::new(&self.config.paths.state_dir)
    }

    fn supervisor(&self) -> Supervisor<'_> {
        Supervisor {
            config: &self.config,
            config_path: &self.config_path,
        }
    }

    pub fn on(&self, req: OnRequest) -> Result<Outcome> {
        // 1. Input was checked when the request was built; the policy follows from it.
        let mut warnings = req.warnings.clone();
        let ports = firewall::ports(&self.config, &mut warnings);
        target::check_privileged(&ports)?;
        let policy = Policy::new(
            req.sources.iter().copied(),
            req.exceptions.iter().copied(),
            ports,
            req.until,
        );
        if policy
            .sources
            .iter()
            .all(|s| policy.exceptions.iter().any(|e| e.contains(s)))
        {
            warnings.push("every source is excepted: nobody will see the maintenance page".into());
        }
        warnings.extend(ssh_warning(&policy));

        let (backend, fw) = firewall::configured(&self.config)?;
        // A drain changes the rules only where the firewall needs it to (see `drain`).
        let policy = policy.draining(req.drain.is_some() && backend.drains_in_rules());
        let mut outcome = Outcome {
            active: true,
            dry_run: req.dry_run,
            backend: backend.name(),
            sources: req.source_tokens.clone(),
            exceptions: req.except_tokens.clone(),
            ports: policy.ports.clone(),
            until: req.until.map(rfc3339),
            reason: req.reason.clone(),
            warnings,
            after: Maintenance {
                active: true,
                sources: req.source_tokens.clone(),
                exceptions: req.except_tokens.clone(),
                until: req.until.map(rfc3339),
                reason: req.reason.clone(),
            },
            ..Outcome::default()
        };
        if req.dry_run {
            // Read-only: wait for a command under way, but take no exclusive lock.
            let _lock = state::lock_shared(&self.config.paths.lock_file());
            let previous = self.store().load().ok().flatten();
            let current = backend.in_force();
            let current = current.as_ref().map(Option::as_ref).map_err(drop);
            outcome.before = standing(previous.as_ref(), current);
            outcome.ruleset = Some(backend.render_apply(&policy));
            return Ok(outcome);
        }

        // 2. One maint at a time from here on; everything that can refuse comes before the
        // first change.
        let paths = &self.config.paths;
        let _lock = state::lock(&paths.lock_file())?;
        let store = self.store();
        let previous = store.load().unwrap_or_else(|e| {
            tracing::warn!("{e:#}; replacing it");
            None
        });
        outcome.warnings.extend(backend.preflight()?);
        store.check_writable()?;

        // 3. Health gate: never redirect visitors into a void. A server started here is
        // stopped again if anything below fails.
        let supervisor = self.supervisor();
        let started = match supervisor.ensure_server(&PortMap::servers(&policy.ports)) {
            Ok(started) => started,
            Err(e) if req.force => {
                outcome
                    .warnings
                    .push(format!("{e:#}; applying anyway because of --force"));
                None
            }
            Err(e) => return Err(Fail::Unhealthy(e)),
        };
        if started.is_some() && nix::unistd::Uid::effective().is_root() {
            if let Ok(crate::config::ServerUser {
                fallback: Some(why),
                ..
            }) = self.config.server.run_as()
            {
                outcome.warnings.push(why);
            }
        }

        // 4. The firewall, atomically, only if it differs (by digest: reading a million
        // prefixes back would cost seconds).
        let current = backend.in_force().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the current {} state ({e}); replacing it",
                backend.name()
            );
            None
        });
        outcome.before = standing(previous.as_ref(), Ok(current.as_ref()));
        let digest = policy.digest();
        if current.as_ref().map(|c| &c.digest) != Some(&digest) {
            quiet::ask_quiet(&self.config);
            backend.apply(&policy)?;
            outcome.changed = true;
            // The new table's pass sets are empty: visitors let through stay so.
            let passed = admit::put_back(&self.config, backend.as_ref());
            // 5. Every open connection follows the new policy at once: matched clients move
            // to the page, newly excepted ones back to the app. The redirect is in place, so
            // a failure here is worth a warning, not a rollback. A drain leaves them until
            // its end (`drain::finish`).
            let mut redirected = policy.ports.clone();
            redirected.extend(current.iter().flat_map(|c| c.ports.iter().cloned()));
            let killed = match req.drain {
                Some(_) => Ok(0),
                None => backend.kill_disagreeing_states(&policy.with_passes(&passed), &redirected),
            };
            match killed {
                Ok(n) => outcome.states_killed = n,
                Err(e) => outcome.warnings.push(format!(
                    "maintenance is on, but open connections that disagree with it were not cut ({e}); they follow it when they reconnect"
                )),
            }
        }

        // The firewall is in place (or already was): the server it points at stays, and now
        // the page may describe the window.
        let spawned = started.map(|s| s.keep());
        outcome.server_started = spawned;
        // A server started (a dead one replaced) is a change too.
        outcome.changed |= spawned.is_some();
        let window = Window {
            until: req.until,
            reason: req.reason.clone(),
        };
        if let Err(e) = supervisor.set_window(&window) {
            outcome.warnings.push(format!(
                "maintenance is on, but the page does not show the new window: {e:#}"
            ));
        }
        // A table or anchor renamed in the config since the last `on`: the old one goes.
        if let Some(p) = previous
            .as_ref()
            .filter(|p| (p.backend, p.table.as_str()) != (fw.kind(), fw.name()))
        {
            let cleared = firewall::for_record(&self.config, Some(p))
                .map_err(|e| format!("{:#}", e.error()))
                .and_then(|(old, _)| old.clear().map_err(|e| e.to_string()));
            match cleared {
                Ok(removed) => outcome.changed |= removed,
                Err(e) => outcome.warnings.push(format!(
                    "could not remove maint's previous {:?} {} ({e}); `maint off` with the old \
                     name in the config removes it",
                    p.backend, p.table
                )),
            }
        }

        // 6. Remember what was done.
        let spawned_server = spawned.or(previous.as_ref().and_then(|r| r.spawned_server));
        let now = now_secs();
        // Since when maintenance has been on: kept across changes while it stays on.
        let was_on = previous
            .as_ref()
            .is_some_and(|p| !p.expired_at(SystemTime::now()));
        let actor = Actor::invoking();
        let mut record = Record {
            version: state::VERSION,
            backend: fw.kind(),
            table: fw.name().to_owned(),
            digest,
            ports: policy.ports.clone(),
            until: policy.until,
            source_count: Count::of(&policy.sources),
            exception_count: Count::of(&policy.exceptions),
            sources: req.source_tokens,
            exceptions: req.except_tokens,
            since: match &previous {
                Some(p) if was_on => p.since,
                _ => now,
            },
            changed: now,
            reason: req.reason,
            on_by: Some(match &previous {
                Some(p) if was_on => p.on_by.clone().unwrap_or_else(|| p.by.clone()),
                _ => actor.clone(),
            }),
            by: actor,
            expiry_logged: false,
            spawned_server,
            drain_until: req.drain.map(|d| now + d.as_secs()),
        };
        // What the audit trail calls this: on from off, a change of what maintenance is, or
        // nothing (the same again, or only a dead server replaced).
        let described = |r: &Record| {
            (
                r.digest.clone(),
                r.sources.clone(),
                r.exceptions.clone(),
                r.reason.clone(),
                r.until,
            )
        };
        let transition = match &previous {
            Some(p) if was_on && described(p) == described(&record) => None,
            Some(_) if was_on => Some(Transition::Change),
            _ => Some(Transition::On),
        };
        outcome.changed |= transition.is_some();
        if let Some(p) = previous.as_ref().filter(|_| !outcome.changed) {
            // Nothing changed: who changed it last, and when, stays as it was.
            record.changed = p.changed;
            record.by = p.by.clone();
        }
        store.save(&record, &policy)?;
        outcome.drain_until = record.drain_until.map(rfc3339);
        outcome.drain_end = record.drain_until;
        if transition == Some(Transition::On) {
            pass::bind_to_maintenance(&self.config, record.since);
        }
        if let Some(transition) = transition {
            audit::Entry {
                transition,
                by: record.by.clone(),
                record: Some(&record),
            }
            .log();
        }
        if transition.is_some() || outcome.states_killed > 0 {
            store.add_to_totals(|t| {
                t.states_killed += outcome.states_killed as u64;
                if transition.is_some() {
                    t.last_change = Some(now);
                }
            });
        }

        if let (Some(u), false) = (req.until, backend.expires_by_itself()) {
            self.supervisor().schedule_off(u)?;
        }
        Ok(outcome)
    }

    pub fn off(&self, req: OffRequest) -> Result<Outcome> {
        let paths = &self.config.paths;
        if let Some(at) = req.scheduled {
            let wait = at.saturating_sub(now_secs());
            std::thread::sleep(Duration::from_secs(wait));
        }
        let _lock = if req.dry_run {
            None
        } else {
            Some(state::lock(&paths.lock_file())?)
        };
        let mut warnings = Vec::new();
        let store = self.store();
        let record = store.load().unwrap_or_else(|e| {
            warnings.push(format!("{e:#}; removing maint's firewall state anyway"));
            None
        });
        if let Some(at) = req.scheduled {
            if record.as_ref().and_then(|r| r.until) != Some(at) {
                tracing::info!(
                    "the window ending at {at} was replaced; leaving maintenance as it is"
                );
                return Ok(outcome_unchanged(record.as_ref()));
            }
        }
        let (backend, _) = firewall::for_record(&self.config, record.as_ref())?;
        // What is in force by its stamp: `off` removes what the record names without reading
        // a million prefixes back.
        let current = backend.in_force().unwrap_or_else(|e| {
            warnings.push(format!(
                "cannot read maint's {} state ({e}); removing it anyway",
                backend.name()
            ));
            None
        });
        let mut outcome = Outcome {
            dry_run: req.dry_run,
            backend: backend.name(),
            warnings,
            before: standing(record.as_ref(), Ok(current.as_ref())),
            ..Outcome::default()
        };
        if req.dry_run {
            outcome.ruleset = Some(backend.render_clear());
            return Ok(outcome);
        }

        // 1. No new connection is redirected, but the redirected ones are still translated,
        // so the server can answer them.
        let stopped = backend.stop_new_redirects()?;
        // 2. The server answers every visitor's held request "off" (their pages go back at
        // once) and replies when those answers are out. Removing the table first would lose
        // them, and pages would wait for their own timeout.
        let socket = paths.control_socket();
        let server = control::ask(&socket, &Request::End).ok();
        // 3. The rest of the table, then the redirected states.
        let removed = backend.clear()? || stopped;
        // Which redirected states to kill: those to the ports that were in place.
        let redirected = current
            .map(|c| c.ports)
            .or_else(|| record.as_ref().map(|r| r.ports.clone()))
            .unwrap_or_else(|| firewall::ports(&self.config, &mut Vec::new()));
        match backend.kill_disagreeing_states(&Policy::nobody(), &redirected) {
            Ok(n) => outcome.states_killed = n,
            Err(e) => outcome.warnings.push(format!(
                "the redirect is gone, but connections held by the maintenance server were not cut ({e})"
            )),
        }

        // 4. A server maint started goes too.
        if let Some(s) = &server {
            // Stop only a server maint started in the background (the record's, or the one
            // its pid file names if `on` never got to write a record), and only if it is
            // still that process.
            let supervisor = self.supervisor();
            // The pid file first: a background server the keeper started again after a
            // crash is not the one the record names.
            let pid = supervisor
                .background_server(s)
                .or_else(|| record.as_ref().and_then(|r| r.spawned_server));
            if let Some(pid) = pid.filter(|pid| supervisor.stop_started_server(*pid, s)) {
                outcome.server_stopped = Some(pid);
            }
        }
        let had_record = store.remove()?;
        outcome.changed = removed || had_record;
        if had_record {
            pass::end_with_maintenance(&self.config);
        }
        // A scheduled `off` ends a window (pf), unless the keeper logged that end already.
        let transition = match (&record, req.scheduled) {
            (Some(r), Some(_)) if r.expiry_logged => None,
            (_, Some(_)) => Some(Transition::Expiry),
            (_, None) => Some(Transition::Off),
        };
        if let Some(transition) = transition.filter(|_| outcome.changed) {
            audit::Entry {
                transition,
                by: Actor::invoking(),
                record: record.as_ref(),
            }
            .log();
        }
        if outcome.changed || outcome.states_killed > 0 {
            store.add_to_totals(|t| {
                t.states_killed += outcome.states_killed as u64;
                if outcome.changed {
                    t.last_change = Some(now_secs());
                }
            });
        }
        Ok(outcome)
    }
}

/// Maintenance as it stands: the record's, if the firewall has a policy in force (`current`;
/// an error when it could not be read, as without privilege for a dry run: then the record
/// alone says).
fn standing(record: Option<&Record>, current: Result<Option<&InForce>, ()>) -> Maintenance {
    let in_force = match current {
        Ok(Some(p)) => !p.expired_at(SystemTime::now()),
        Ok(None) => false,
        Err(()) => record.is_some(),
    };
    Maintenance::recorded(record, in_force)
}

/// What a scheduled `off` reports when the window it was scheduled for was replaced.
fn outcome_unchanged(record: Option<&Record>) -> Outcome {
    Outcome {
        active: record.is_some(),
        sources: record.map(|r| r.sources.clone()).unwrap_or_default(),
        exceptions: record.map(|r| r.exceptions.clone()).unwrap_or_default(),
        ports: record.map(|r| r.ports.clone()).unwrap_or_default(),
        until: record.and_then(|r| r.until).map(rfc3339),
        reason: record.and_then(|r| r.reason.clone()),
        ..Outcome::default()
    }
}

/// Rule 1: SSH is never redirected, but an operator whose own address is covered will see the
/// maintenance page in their browser and may think the app is broken.
fn ssh_warning(policy: &Policy) -> Option<String> {
    let conn = std::env::var("SSH_CONNECTION").ok()?;
    let ip: IpAddr = conn.split_whitespace().next()?.parse().ok()?;
    policy.matches(ip).then(|| {
        format!(
            "your SSH client address {ip} is covered: your browser will see the maintenance page (SSH itself is untouched); add `--except {ip}` to keep testing the app"
        )
    })
}
