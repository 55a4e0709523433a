//! `maint pass new | list | revoke`: the operator's side of pass links. The keeper admits
//! visitors ([`super::admit`]); this makes, lists and ends the passes, under the same lock
//! as `on` and `off`.

use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::fail::Result;
use super::{firewall, Controller};
use crate::audit::{self, PassEvent};
use crate::config::Config;
use crate::pass::{Book, Pass, LINK_PREFIX, NOTE_MAX_BYTES};
use crate::state::{self, Actor};
use crate::time::{now_secs, rfc3339};

/// One pass as `pass list` and `status` show it. Never its token.
#[derive(Debug, Serialize)]
pub struct PassView {
    pub id: String,
    pub note: Option<String>,
    pub created: String,
    pub by: Actor,
    /// Its own end, if it has one; it also ends with its maintenance.
    pub until: Option<String>,
    /// Whether it waits for the next maintenance (made while maintenance was off).
    pub waiting: bool,
    pub admitted: Vec<AdmittedView>,
}

#[derive(Debug, Serialize)]
pub struct AdmittedView {
    pub net: IpNet,
    pub at: String,
    pub until: Option<String>,
}

impl PassView {
    fn of(p: &Pass, now: u64) -> PassView {
        PassView {
            id: p.id.clone(),
            note: p.note.clone(),
            created: rfc3339(p.created),
            by: p.by.clone(),
            until: p.until.map(rfc3339),
            waiting: p.made_for.is_none(),
            admitted: p
                .admitted
                .iter()
                .filter(|a| !a.ended_at(now))
                .map(|a| AdmittedView {
                    net: a.net,
                    at: rfc3339(a.at),
                    until: a.until.map(rfc3339),
                })
                .collect(),
        }
    }
}

/// What `pass new` made: the only time the link is shown.
#[derive(Debug, Serialize)]
pub struct MadePass {
    pub id: String,
    /// The whole link when `[pass] site` names the site, else its path.
    pub url: String,
    pub path: String,
    pub until: Option<String>,
    pub note: Option<String>,
    /// Whether maintenance is on now (else the pass waits for the next one).
    pub maintenance_on: bool,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// What `pass revoke` ended.
#[derive(Debug, Serialize)]
pub struct Revoked {
    pub ids: Vec<String>,
    /// Prefixes no pass lets through any more.
    pub withdrawn: Vec<IpNet>,
    pub states_killed: usize,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The passes of the state directory, for `status` and `pass list`.
pub fn views(config: &Config) -> Vec<PassView> {
    let now = now_secs();
    Book::load(&config.paths.state_dir)
        .map(|b| b.passes.iter().map(|p| PassView::of(p, now)).collect())
        .unwrap_or_default()
}

/// Maintenance ended (off, or its window): its passes end with it. The caller holds the lock.
pub fn end_with_maintenance(config: &Config) {
    let dir = &config.paths.state_dir;
    match Book::load(dir) {
        Ok(mut book) => {
            let gone = book.end_maintenance();
            if !gone.is_empty() {
                tracing::info!("passes ended with maintenance: {}", gone.join(", "));
                if let Err(e) = book.save(dir) {
                    tracing::warn!("cannot write the pass book: {e:#}");
                }
            }
        }
        Err(e) => tracing::warn!("{e:#}"),
    }
}

/// `on` started maintenance anew at `since`: passes made while it was off are for it.
pub fn bind_to_maintenance(config: &Config, since: u64) {
    let dir = &config.paths.state_dir;
    if let Ok(mut book) = Book::load(dir) {
        let before = book.clone();
        book.bind_to(since);
        if book != before {
            if let Err(e) = book.save(dir) {
                tracing::warn!("cannot write the pass book: {e:#}");
            }
        }
    }
}

impl Controller {
    pub fn pass_new(&self, until: Option<u64>, note: Option<String>) -> Result<MadePass> {
        if let Some(n) = &note {
            if n.len() > NOTE_MAX_BYTES || n.chars().any(char::is_control) {
                return Err(super::Fail::Input(anyhow::anyhow!(
                    "--note must be one line of at most {NOTE_MAX_BYTES} bytes"
                )));
            }
        }
        let paths = &self.config.paths;
        let _lock = state::lock(&paths.lock_file())?;
        let store = self.store();
        store.check_writable()?;
        let record = store
            .load()
            .ok()
            .flatten()
            .filter(|r| !r.expired_at(SystemTime::now()));
        let mut warnings = Vec::new();
        if !self.config.server.keep {
            warnings.push(
                "`keep = false` in the config: no keeper runs to let visitors through, so this \
                 link shows the maintenance page like any other"
                    .to_owned(),
            );
        }
        if !self.config.pass.proxies.is_empty() {
            warnings.push(
                "[pass] proxies is set: visitors behind those proxies all arrive from their \
                 addresses, so a pass lets the proxy through (everyone behind it) or nobody"
                    .to_owned(),
            );
        }
        let mut book = Book::load(&paths.state_dir)?;
        let by = Actor::invoking();
        let now = now_secs();
        let (pass, token) = book.create(
            note,
            until,
            record.as_ref().map(|r| r.since),
            by.clone(),
            now,
        )?;
        book.save(&paths.state_dir)?;
        audit::pass_event(
            PassEvent::Created,
            &by,
            &pass.id,
            pass.note.as_deref(),
            None,
        );
        let path = format!("{LINK_PREFIX}{}", token.as_str());
        let url = match &self.config.pass.site {
            Some(site) => format!("{}{path}", site.trim_end_matches('/')),
            None => path.clone(),
        };
        Ok(MadePass {
            id: pass.id,
            url,
            path,
            until: pass.until.map(rfc3339),
            note: pass.note,
            maintenance_on: record.is_some(),
            warnings,
        })
    }

    pub fn pass_list(&self) -> Vec<PassView> {
        let _lock = state::lock_shared(&self.config.paths.lock_file());
        views(&self.config)
    }

    /// Ends the passes named by `ids` (every pass with `all`): the addresses they let through
    /// see the page again at once, their open connections to the app cut.
    pub fn pass_revoke(&self, ids: &[String], all: bool) -> Result<Revoked> {
        let paths = &self.config.paths;
        let _lock = state::lock(&paths.lock_file())?;
        let mut book = Book::load(&paths.state_dir)?;
        if let Some(unknown) = ids
            .iter()
            .find(|id| !book.passes.iter().any(|p| &p.id == *id))
        {
            return Err(super::Fail::Input(anyhow::anyhow!(
                "no pass has id {unknown:?}; `maint pass list` shows them"
            )));
        }
        let now = now_secs();
        let before = book.admitted_now(now);
        let (gone, kept): (Vec<Pass>, Vec<Pass>) = book
            .passes
            .drain(..)
            .partition(|p| all || ids.contains(&p.id));
        book.passes = kept;
        let still = book.admitted_now(now);
        let withdrawn: Vec<IpNet> = before.into_iter().filter(|n| !still.contains(n)).collect();
        let mut out = Revoked {
            ids: gone.iter().map(|p| p.id.clone()).collect(),
            withdrawn: withdrawn.clone(),
            states_killed: 0,
            warnings: Vec::new(),
        };
        let store = self.store();
        if let Some(record) = store
            .load()
            .ok()
            .flatten()
            .filter(|_| !withdrawn.is_empty())
        {
            let (backend, _) = firewall::for_record(&self.config, Some(&record))?;
            backend.withdraw(&withdrawn)?;
            // Their open connections to the app follow the policy again: to the page.
            match store.policy(&record) {
                Ok(policy) => {
                    let policy = policy.with_passes(&still);
                    match backend.kill_disagreeing_states(&policy, &policy.ports) {
                        Ok(n) => out.states_killed = n,
                        Err(e) => out.warnings.push(format!(
                            "the passes are revoked, but open connections to the app were not cut ({e})"
                        )),
                    }
                }
                Err(e) => out.warnings.push(format!("{e:#}")),
            }
        }
        book.save(&paths.state_dir)?;
        let by = Actor::invoking();
        for p in &gone {
            audit::pass_event(PassEvent::Revoked, &by, &p.id, p.note.as_deref(), None);
        }
        Ok(out)
    }
}
