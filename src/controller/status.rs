//! `status`: what is in force, told truthfully and at a cost that does not grow with the
//! policy. The kernel's stamp, the state record and the server are compared; where they
//! disagree that is drift (its own exit code), and without the right to read the kernel
//! the report says so instead of guessing "off".

use std::time::SystemTime;

use super::{firewall, probe, Controller, Result, ServerReport, StatusReport};
use crate::control::{self, Request};
use crate::state::{self, Record};
use crate::time::rfc3339;
use maint_backends::InForce;

/// `status` lists the prefixes themselves up to this many; beyond, only their counts.
const LISTED_PREFIXES: usize = 1000;

/// What is wrong between the record and the kernel, if anything: `None` when the kernel holds
/// the recorded policy, or nothing of maint's when none is on. The keeper reports the same
/// verdict to the metrics.
pub(super) fn firewall_drift(
    record: Option<&Record>,
    current: Option<&InForce>,
    location: &str,
    now: SystemTime,
) -> Option<String> {
    let recorded_on = record.filter(|r| !r.expired_at(now));
    match (recorded_on, current) {
        (Some(_), None) => Some(format!(
            "the state record says maintenance is on, but maint's {location} is not in the kernel (flushed or removed by hand?); `maint serve` puts it back when it runs, or run `maint on` again or `maint off`"
        )),
        (None, Some(c)) if record.is_none() && !c.expired_at(now) => Some(
            "the kernel holds maint's redirect but there is no state record; `maint off` removes it".into(),
        ),
        (Some(r), Some(c)) if r.digest != c.digest => Some(
            "the kernel's redirect differs from the state record (changed by hand?); run `maint on` again to restore it".into(),
        ),
        _ => None,
    }
}

impl Controller {
    /// `status --format prometheus`: the metrics the server's listener gives, with the
    /// kernel checked here (this command may read it; the server may not).
    pub fn metrics(&self) -> Result<String> {
        let (report, record) = self.survey()?;
        let totals = self.store().totals();
        crate::metrics::render(&crate::metrics::Snapshot {
            record: record.as_ref(),
            totals: &totals,
            kernel_in_sync: report.kernel_in_sync,
            server: report.server.as_ref().map(|s| &s.status),
            now: SystemTime::now(),
        })
        .map_err(super::Fail::System)
    }

    pub fn status(&self) -> Result<StatusReport> {
        self.survey().map(|(report, _)| report)
    }

    /// The status report, and the record it was made from.
    fn survey(&self) -> Result<(StatusReport, Option<Record>)> {
        let paths = &self.config.paths;
        // Wait for an `on` or `off` under way, so what is read is before or after it.
        let _lock = state::lock_shared(&paths.lock_file());
        let mut drift = Vec::new();
        let store = self.store();
        let record = store.load().unwrap_or_else(|e| {
            drift.push(format!("{e:#}"));
            None
        });
        let (backend, fw) = firewall::for_record(&self.config, record.as_ref())?;
        let now = SystemTime::now();
        // What is in force, by the kernel's stamp: the same cost for ten prefixes and for a
        // million. Without the right to read the kernel, say so instead of guessing "off".
        let (current, kernel_readable) = match backend.in_force() {
            Ok(c) => (c, true),
            Err(maint_backends::BackendError::Permission { .. }) => (None, false),
            Err(e) => {
                drift.push(format!("cannot read the {} state: {e}", backend.name()));
                (None, true)
            }
        };
        let recorded_on = record.as_ref().filter(|r| !r.expired_at(now));
        let kernel_drift =
            firewall_drift(record.as_ref(), current.as_ref(), &backend.location(), now);
        let kernel_in_sync =
            (kernel_readable && drift.is_empty()).then_some(kernel_drift.is_none());
        if kernel_readable {
            drift.extend(kernel_drift);
        }
        let server = control::ask(&paths.control_socket(), &Request::Status)
            .ok()
            .map(|s| ServerReport {
                healthy: probe::http(&self.config, &s).is_ok(),
                status: s,
            });
        // Without privilege the control socket cannot be asked either: no verdict on the server.
        if let Some(r) = recorded_on.filter(|_| kernel_readable) {
            match &server {
                None => drift.push(
                    "maintenance is on but the maintenance server is not running: redirected visitors get \"connection refused\"; `maint on` again starts one (or `systemctl start maint`)".into(),
                ),
                Some(s) if !s.healthy => drift.push(format!(
                    "the maintenance server (pid {}) does not answer HTTP on port {}",
                    s.status.pid, s.status.http_port
                )),
                Some(s) if (s.status.window.until, &s.status.window.reason) != (r.until, &r.reason) => {
                    drift.push(
                        "the maintenance server's page describes another window than the record; run `maint on` again".into(),
                    )
                }
                _ => {}
            }
        }
        let expired = match (&current, &record) {
            (Some(c), _) => c.expired_at(now),
            (None, Some(r)) if !kernel_readable => r.expired_at(now),
            _ => false,
        };
        let active = if kernel_readable {
            current.is_some() && !expired
        } else {
            recorded_on.is_some()
        };
        // Listing a million prefixes is not a status line; the counts always are.
        let listed = record
            .as_ref()
            .filter(|r| r.source_count.total() + r.exception_count.total() <= LISTED_PREFIXES)
            .and_then(|r| store.policy(r).ok());
        let list = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect();
        let report = StatusReport {
            active,
            expired,
            kernel_readable,
            kernel_in_sync,
            backend: backend.name(),
            table: fw.name().to_owned(),
            sources: record
                .as_ref()
                .map(|r| r.sources.clone())
                .unwrap_or_default(),
            exceptions: record
                .as_ref()
                .map(|r| r.exceptions.clone())
                .unwrap_or_default(),
            source_count: record.as_ref().map(|r| r.source_count).unwrap_or_default(),
            exception_count: record
                .as_ref()
                .map(|r| r.exception_count)
                .unwrap_or_default(),
            source_prefixes: listed
                .as_ref()
                .map(|p| list(&p.sources))
                .unwrap_or_default(),
            exception_prefixes: listed
                .as_ref()
                .map(|p| list(&p.exceptions))
                .unwrap_or_default(),
            ports: current
                .as_ref()
                .map(|c| c.ports.clone())
                .or_else(|| record.as_ref().map(|r| r.ports.clone()))
                .unwrap_or_default(),
            since: record.as_ref().map(|r| rfc3339(r.since)),
            on_by: record.as_ref().and_then(|r| r.on_by.clone()),
            changed: record.as_ref().map(|r| rfc3339(r.changed)),
            by: record.as_ref().map(|r| r.by.clone()),
            until: current
                .as_ref()
                .map(|c| c.until)
                .unwrap_or_else(|| record.as_ref().and_then(|r| r.until))
                .map(rfc3339),
            reason: record.as_ref().and_then(|r| r.reason.clone()),
            server,
            drain_until: recorded_on.and_then(|r| r.drain_until).map(rfc3339),
            passes: super::pass::views(&self.config),
            drift,
        };
        Ok((report, record))
    }
}
