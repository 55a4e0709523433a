//! The audit trail: every transition of maintenance (on, change, off, expiry, repair, restore)
//! is logged once, saying who, what and why.
//!
//! Under systemd each is a journal entry with structured fields and a `MESSAGE_ID` per kind of
//! transition, so `journalctl MESSAGE_ID=...` or a log shipper can pick them out; elsewhere a
//! syslog line (OpenBSD's daemons log there), or a line on stderr when neither exists. The
//! entries are `tracing` events with their own target, which [`layer`] sends to that sink
//! alone: the human log on stderr does not repeat them.

use std::fmt;

use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::Layer;

use crate::state::{Actor, Record};
use crate::time::rfc3339;

/// The `tracing` target of audit entries.
pub const TARGET: &str = "maint::audit";

/// Kinds of transition, each with its journal `MESSAGE_ID` (fixed forever: monitoring and
/// log searches depend on them; documented in the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Maintenance switched on (it was off, or its window had ended).
    On,
    /// Maintenance was on and its sources, exceptions, window or reason changed.
    Change,
    /// `maint off`.
    Off,
    /// The window ended (noticed by the keeper, or pf's scheduled `off`).
    Expiry,
    /// Another program removed or changed maint's table; the keeper put it back.
    Repair,
    /// `maint serve` put the recorded maintenance back when it started (after a reboot).
    Restore,
}

impl Transition {
    pub fn name(self) -> &'static str {
        match self {
            Transition::On => "on",
            Transition::Change => "change",
            Transition::Off => "off",
            Transition::Expiry => "expiry",
            Transition::Repair => "repair",
            Transition::Restore => "restore",
        }
    }

    pub fn message_id(self) -> &'static str {
        match self {
            Transition::On => "643c4a2f617942f399de044badf3342d",
            Transition::Change => "83354ba8e0644a4aa8f8a07a96b01fa7",
            Transition::Off => "02169d5ffa164939a3b7761a12b023cf",
            Transition::Expiry => "39887ca48a8946b7b77331da12c8d891",
            Transition::Repair => "a2f724607fce4a0ba8d0eb2238a82099",
            Transition::Restore => "8844450c8e694d4e9a0db5dae6772738",
        }
    }
}

/// One audit entry.
pub struct Entry<'a> {
    pub transition: Transition,
    /// Who acted: the invoking user and origin for `on`/`off`; maint itself (user "maint",
    /// origin "keeper" or "serve") for what it did on its own.
    pub by: Actor,
    /// The maintenance concerned: the new one for on and change, the ended one otherwise
    /// (`None` for an `off` that found maint's table but no record of it).
    pub record: Option<&'a Record>,
}

impl Entry<'_> {
    /// Logs the entry to the audit sink.
    pub fn log(&self) {
        let unrecorded = Record::unrecorded();
        let r = self.record.unwrap_or(&unrecorded);
        tracing::info!(
            target: TARGET,
            message_id = self.transition.message_id(),
            maint_transition = self.transition.name(),
            maint_user = self.by.user.as_str(),
            maint_origin = self.by.origin.as_deref().unwrap_or(""),
            maint_sources = r.sources.join(",").as_str(),
            maint_exceptions = r.exceptions.join(",").as_str(),
            maint_source_prefixes = r.source_count.total(),
            maint_exception_prefixes = r.exception_count.total(),
            maint_ports = maint_backends::PortMap::list(&r.ports).as_str(),
            maint_until = r.until.map(rfc3339).unwrap_or_default().as_str(),
            maint_reason = r.reason.as_deref().unwrap_or(""),
            maint_table = r.table.as_str(),
            "{self}"
        );
    }
}

/// The entry's message: one sentence with who, what and why.
impl fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.transition {
            Transition::On => "maintenance on",
            Transition::Change => "maintenance changed",
            Transition::Off => "maintenance off",
            Transition::Expiry => "maintenance window ended",
            Transition::Repair => "maintenance put back after another program changed the firewall",
            Transition::Restore => "maintenance restored at start",
        };
        let what_of = self
            .record
            .map(Record::summary)
            .unwrap_or_else(|| "maint's table, which had no state record".into());
        write!(f, "{what}: {what_of} by {}", self.by.user)?;
        if let Some(origin) = &self.by.origin {
            write!(f, " ({origin})")?;
        }
        match self.record.and_then(|r| r.reason.as_deref()) {
            Some(why) => write!(f, "; reason: {why}"),
            None => write!(f, "; no reason given"),
        }
    }
}

/// What happened to a pass link. Logged as audit entries too, with their own `MESSAGE_ID`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassEvent {
    /// `maint pass new`.
    Created,
    /// A visitor opened the link and their prefix was let through.
    Admitted,
    /// `maint pass revoke`.
    Revoked,
}

impl PassEvent {
    pub fn name(self) -> &'static str {
        match self {
            PassEvent::Created => "pass-new",
            PassEvent::Admitted => "pass-admit",
            PassEvent::Revoked => "pass-revoke",
        }
    }

    pub fn message_id(self) -> &'static str {
        match self {
            PassEvent::Created => "5b0e3f7c9a4d4e21b6f1c8d2a7e90b13",
            PassEvent::Admitted => "c41f8a2e6d3b4f0a9e7c5b1d2f8a6e34",
            PassEvent::Revoked => "7e2d9c4b1a8f4e6d8c3b5a7f9e1d2c45",
        }
    }
}

/// Logs a pass event: which pass (by id, never its token), who, and for an admission which
/// prefix.
pub fn pass_event(event: PassEvent, by: &Actor, id: &str, note: Option<&str>, net: Option<&str>) {
    let what = match event {
        PassEvent::Created => "pass link created",
        PassEvent::Admitted => "pass link opened",
        PassEvent::Revoked => "pass link revoked",
    };
    let origin = by
        .origin
        .as_deref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default();
    let through = net
        .map(|n| format!(", let {n} through"))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        message_id = event.message_id(),
        maint_transition = event.name(),
        maint_user = by.user.as_str(),
        maint_origin = by.origin.as_deref().unwrap_or(""),
        maint_pass = id,
        maint_pass_note = note.unwrap_or(""),
        maint_passed = net.unwrap_or(""),
        "{what}: pass {id}{through} by {}{origin}",
        by.user
    );
}

/// maint acting on its own: `origin` says which part ("keeper", "serve").
pub fn maint_itself(origin: &str) -> Actor {
    Actor {
        user: "maint".into(),
        origin: Some(origin.into()),
    }
}

/// Whether an event is an audit entry.
pub fn is_entry(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == TARGET
}

/// Where audit entries go on this host, as a layer that takes audit entries only: the
/// journal when journald listens, else syslog where there is one, else `None` (the caller
/// then lets its stderr log show them).
pub fn layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let only_entries = || -> FilterFn { filter_fn(is_entry) };
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_field_prefix(None)
                    .with_syslog_identifier("maint".into());
                return Some(journal.with_filter(only_entries()).boxed());
            }
            Err(e) => eprintln!("maint: warning: cannot write to the journal ({e}); audit entries go to syslog or stderr"),
        }
    }
    if cfg!(target_os = "openbsd") || std::path::Path::new("/dev/log").exists() {
        return Some(syslog::Syslog::open().with_filter(only_entries()).boxed());
    }
    None
}

/// Audit entries as syslog lines (facility daemon, priority notice): the message, then the
/// fields as `key="value"` pairs, so a line can be read back by a program.
mod syslog {
    use std::ffi::CString;
    use std::fmt::Write;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::Layer;

    pub struct Syslog;

    impl Syslog {
        pub fn open() -> Syslog {
            // SAFETY: the identifier is a static C string, as openlog(3) requires (it keeps
            // the pointer).
            unsafe { libc::openlog(c"maint".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
            Syslog
        }
    }

    #[derive(Default)]
    struct Line {
        message: String,
        fields: String,
    }

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                let _ = write!(self.fields, " {}={:?}", field.name(), format!("{value:?}"));
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.message.push_str(value);
            } else {
                let _ = write!(self.fields, " {}={value:?}", field.name());
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Syslog {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut line = Line::default();
            event.record(&mut line);
            // A NUL cannot pass to syslog(3): replaced, never a reason to lose the entry.
            let text = format!("{}{}", line.message, line.fields).replace('\0', " ");
            if let Ok(text) = CString::new(text) {
                // SAFETY: "%s" with one valid C string.
                unsafe { libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), text.as_ptr()) };
            }
        }
    }
}
