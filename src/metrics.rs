//! Metrics in the Prometheus text format: one rendering for the server's listener
//! (`[metrics] listen`) and for `maint status --format prometheus` (node_exporter's textfile
//! collector, on hosts that run maint from cron).
//!
//! Both render a [`Snapshot`]: the record and the totals from the state directory, the
//! kernel's agreement with the record, and the server's own counters when a server runs.
//! Label values come from fixed sets (scheme, answer format, refusal cause, address family),
//! except certificate names, which the config bounds. Names follow Prometheus' conventions:
//! base units, `_total` for counters, `_timestamp_seconds` for times.

use std::time::SystemTime;

use anyhow::Result;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::control::{ServerStatus, ANSWER_FORMATS, SCHEMES};
use crate::state::{Record, Totals};

/// The content type of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics are made of.
pub struct Snapshot<'a> {
    /// The state record, if any (an ended window included).
    pub record: Option<&'a Record>,
    pub totals: &'a Totals,
    /// Whether the kernel holds what the record says; `None` when nobody could tell (no
    /// keeper watching, or no right to read the kernel).
    pub kernel_in_sync: Option<bool>,
    /// The running server's status; `None` when no server answers.
    pub server: Option<&'a ServerStatus>,
    pub now: SystemTime,
}

/// The exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> Result<String> {
    let out = Exposition::default();
    let record = snapshot.record;
    let on = record.filter(|r| !r.expired_at(snapshot.now));
    out.gauge(
        "maint_active",
        "1 while maintenance is on (recorded, its window not ended), else 0",
        f64::from(u8::from(on.is_some())),
    )?;
    if let Some(r) = on {
        out.gauge(
            "maint_active_since_timestamp_seconds",
            "Since when maintenance has been on, across changes (Unix seconds)",
            r.since as f64,
        )?;
    }
    if let Some(until) = record.and_then(|r| r.until) {
        out.gauge(
            "maint_window_end_timestamp_seconds",
            "When the recorded maintenance window ends (Unix seconds); absent without a window",
            until as f64,
        )?;
    }
    let last_change = record.map(|r| r.changed).max(snapshot.totals.last_change);
    if let Some(at) = last_change {
        out.gauge(
            "maint_last_change_timestamp_seconds",
            "When maintenance last changed: on, change, off, expiry, repair or restore (Unix seconds)",
            at as f64,
        )?;
    }
    let counts = |pick: fn(&Record) -> crate::state::Count| {
        let c = on.map(pick).unwrap_or_default();
        [(["ipv4"], c.ipv4 as f64), (["ipv6"], c.ipv6 as f64)]
    };
    out.gauge_vec(
        "maint_sources",
        "Prefixes redirected to the maintenance page, by address family (0 when off)",
        &["family"],
        &counts(|r| r.source_count),
    )?;
    out.gauge_vec(
        "maint_exceptions",
        "Prefixes excepted from the redirect, by address family (0 when off)",
        &["family"],
        &counts(|r| r.exception_count),
    )?;
    if let Some(in_sync) = snapshot.kernel_in_sync {
        out.gauge(
            "maint_kernel_in_sync",
            "1 when the kernel holds the recorded policy (or none when off), 0 when it differs",
            f64::from(u8::from(in_sync)),
        )?;
    }
    let t = snapshot.totals;
    out.counter(
        "maint_repairs_total",
        "Times the policy was put back after another program removed or changed maint's table",
        t.repairs,
    )?;
    out.counter(
        "maint_restores_total",
        "Times maint serve put the recorded maintenance back when it started",
        t.restores,
    )?;
    out.counter(
        "maint_states_killed_total",
        "Connection states cut so that clients follow the policy at once",
        t.states_killed,
    )?;
    out.gauge(
        "maint_server_up",
        "1 when the maintenance server answers on its control socket",
        f64::from(u8::from(snapshot.server.is_some())),
    )?;
    if let Some(s) = snapshot.server {
        server(&out, s)?;
    }
    out.gauge_vec(
        "maint_build_info",
        "The maint version, as a label; always 1",
        &["version"],
        &[([env!("CARGO_PKG_VERSION")], 1.0)],
    )?;
    out.text()
}

/// The server's own counters.
fn server(out: &Exposition, s: &ServerStatus) -> Result<()> {
    let requests: Vec<([&str; 2], u64)> = SCHEMES
        .iter()
        .flat_map(|scheme| ANSWER_FORMATS.iter().map(move |format| [*scheme, *format]))
        .map(|labels| {
            let n = s
                .requests_by
                .iter()
                .filter(|r| [r.scheme.as_str(), r.format.as_str()] == labels)
                .map(|r| r.count)
                .sum();
            (labels, n)
        })
        .collect();
    out.counter_vec(
        "maint_requests_total",
        "Requests answered, by scheme and answer format (wait: a page held until maintenance ends)",
        &["scheme", "format"],
        &requests,
    )?;
    out.gauge(
        "maint_connections_open",
        "Connections the server holds now",
        s.connections as f64,
    )?;
    out.counter(
        "maint_connections_accepted_total",
        "Connections served since the server started",
        s.connections_total,
    )?;
    out.counter_vec(
        "maint_connections_refused_total",
        "Connections closed unserved: per_source (its source held max_connections_per_source), \
         direct (it reached the server's port without the redirect)",
        &["cause"],
        &[
            (["per_source"], s.refused_per_source),
            (["direct"], s.refused_direct),
        ],
    )?;
    out.counter(
        "maint_connection_limit_waits_total",
        "Connections left in the kernel's queue until a slot freed, because max_connections were open",
        s.limit_waits,
    )?;
    out.gauge(
        "maint_held_requests",
        "Visitors' pages waiting for maintenance to end (about one per open tab)",
        s.held_requests as f64,
    )?;
    out.counter(
        "maint_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out",
        s.tls_handshake_failures,
    )?;
    let expiry: Vec<([&str; 1], f64)> = s
        .certificates
        .iter()
        .map(|c| ([c.name.as_str()], c.not_after as f64))
        .collect();
    if !expiry.is_empty() {
        out.gauge_vec(
            "maint_certificate_expiry_timestamp_seconds",
            "When each certificate the server presents expires (Unix seconds), by name",
            &["name"],
            &expiry,
        )?;
    }
    out.gauge(
        "maint_server_start_time_seconds",
        "When the maintenance server started (Unix seconds)",
        s.started as f64,
    )
}

/// A registry filled once per rendering, with the values of the moment.
#[derive(Default)]
struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn gauge(&self, name: &str, help: &str, value: f64) -> Result<()> {
        let g = Gauge::with_opts(Opts::new(name, help))?;
        g.set(value);
        Ok(self.registry.register(Box::new(g))?)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> Result<()> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        c.inc_by(value);
        Ok(self.registry.register(Box::new(c))?)
    }

    fn gauge_vec<const N: usize>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str; N],
        values: &[([&str; N], f64)],
    ) -> Result<()> {
        let v = GaugeVec::new(Opts::new(name, help), labels)?;
        for (l, value) in values {
            v.with_label_values(l).set(*value);
        }
        Ok(self.registry.register(Box::new(v))?)
    }

    fn counter_vec<const N: usize>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str; N],
        values: &[([&str; N], u64)],
    ) -> Result<()> {
        let v = IntCounterVec::new(Opts::new(name, help), labels)?;
        for (l, value) in values {
            v.with_label_values(l).inc_by(*value);
        }
        Ok(self.registry.register(Box::new(v))?)
    }

    fn text(&self) -> Result<String> {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CertificateExpiry, RequestCount, Window};
    use crate::state::Count;

    fn record(until: Option<u64>) -> Record {
        Record {
            version: crate::state::VERSION,
            backend: maint_backends::Kind::Nftables,
            table: "maint".into(),
            digest: "0".into(),
            ports: vec![],
            until,
            source_count: Count { ipv4: 3, ipv6: 1 },
            exception_count: Count { ipv4: 1, ipv6: 0 },
            sources: vec!["all".into()],
            exceptions: vec![],
            since: 1_800_000_000,
            changed: 1_800_000_100,
            ..Record::unrecorded()
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn an_ended_window_is_not_active_and_the_counts_drop_to_zero() {
        let totals = Totals::default();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
        let on = record(Some(2_000_000_000));
        let ended = record(Some(1_850_000_000));
        let text = |r: &Record| {
            render(&Snapshot {
                record: Some(r),
                totals: &totals,
                kernel_in_sync: Some(true),
                server: None,
                now,
            })
            .unwrap()
        };
        let (on, ended) = (text(&on), text(&ended));
        assert_eq!(value(&on, "maint_active"), Some(1.0), "{on}");
        assert_eq!(value(&on, "maint_sources{family=\"ipv4\"}"), Some(3.0));
        assert_eq!(value(&ended, "maint_active"), Some(0.0), "{ended}");
        assert_eq!(value(&ended, "maint_sources{family=\"ipv4\"}"), Some(0.0));
        assert_eq!(
            value(&ended, "maint_window_end_timestamp_seconds"),
            Some(1.85e9)
        );
        assert_eq!(value(&ended, "maint_server_up"), Some(0.0));
    }

    #[test]
    fn server_counters_fill_every_label_pair() {
        let status = ServerStatus {
            pid: 1,
            version: "0".into(),
            started: 1_800_000_000,
            requests: 3,
            connections: 2,
            connections_total: 9,
            refused_direct: 4,
            refused_per_source: 5,
            held_requests: 1,
            http_port: 503,
            https_port: None,
            window: Window::default(),
            requests_by: vec![RequestCount {
                scheme: "https".into(),
                format: "json".into(),
                count: 3,
            }],
            limit_waits: 6,
            tls_handshake_failures: 7,
            certificates: vec![CertificateExpiry {
                name: "example.org".into(),
                not_after: 1_900_000_000,
            }],
            kernel_in_sync: None,
        };
        let text = render(&Snapshot {
            record: None,
            totals: &Totals::default(),
            kernel_in_sync: None,
            server: Some(&status),
            now: SystemTime::now(),
        })
        .unwrap();
        assert_eq!(
            value(
                &text,
                "maint_requests_total{format=\"json\",scheme=\"https\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "maint_requests_total{format=\"html\",scheme=\"http\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "maint_connections_refused_total{cause=\"direct\"}"),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                "maint_certificate_expiry_timestamp_seconds{name=\"example.org\"}"
            ),
            Some(1.9e9)
        );
        assert!(!text.contains("maint_kernel_in_sync"), "{text}");
    }
}
