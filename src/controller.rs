//! The controller: `on`, `off`, `status` and `check`, in the order that keeps the safety rules.
//!
//! It owns ordering (input first, then the lock, then the health gate, then the firewall, then
//! the state kill, then the record) and never reaches into a backend's or the server's
//! internals: it talks to the firewall through [`Backend`] and to the server through the
//! control socket. Every step that can fail comes before the first step that changes anything.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use maint_backends::{Backend, BackendError, Kind, Options, Policy, PortMap, StateTarget};
use serde::Serialize;

use crate::cli::{OffArgs, OnArgs};
use crate::config::{BackendChoice, Config};
use crate::control::{self, ControlError, Request, ServerStatus, Window};
use crate::server::page::now_secs;
use crate::sources;
use crate::state::{self, Record};

/// A failure, with the exit code the caller should see.
#[derive(Debug)]
pub enum Fail {
    /// Bad usage or input (exit 2). Nothing was changed.
    Input(anyhow::Error),
    /// The maintenance server did not answer (exit 3). Nothing was changed.
    Unhealthy(anyhow::Error),
    /// Anything else (exit 1).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail::Failed(e)
    }
}
impl From<BackendError> for Fail {
    /// A firewall that is not set up for maint (pf disabled, no anchor line, a table over pf's
    /// limit) is the operator's to fix, like bad input, and nothing was changed: exit 2.
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotReady { .. } => Fail::Input(e.into()),
            e => Fail::Failed(e.into()),
        }
    }
}

pub type Result<T, E = Fail> = std::result::Result<T, E>;

/// What `on` and `off` report: a stable object for `--json`, a sentence for humans.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub changed: bool,
    pub active: bool,
    pub dry_run: bool,
    pub backend: &'static str,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub ports: Vec<PortMap>,
    pub until: Option<String>,
    pub reason: Option<String>,
    pub states_killed: usize,
    pub server_started: Option<u32>,
    pub server_stopped: Option<u32>,
    pub warnings: Vec<String>,
    /// What would be loaded (`--dry-run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

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

    fn backend_kind(&self) -> Result<Kind> {
        match self.config.firewall.backend {
            BackendChoice::Nftables => Ok(Kind::Nftables),
            BackendChoice::Pf => Ok(Kind::Pf),
            BackendChoice::Auto => Kind::native().ok_or_else(|| {
                Fail::Input(anyhow!(
                    "no firewall backend for this operating system; set firewall.backend to \"nftables\" or \"pf\""
                ))
            }),
        }
    }

    fn open_backend(&self, kind: Kind, table: &str) -> Result<Box<dyn Backend>> {
        Ok(maint_backends::open(
            kind,
            Options {
                name: table.to_string(),
                pfctl: self.config.firewall.pfctl.clone(),
            },
        )?)
    }

    /// The backend maint's state is in. The record knows which firewall and table `on` used,
    /// even if the config changed or broke since; without one, the config (or its defaults)
    /// decides.
    fn backend_for(&self, record: Option<&Record>) -> Result<(Box<dyn Backend>, Kind, String)> {
        let (kind, table) = match record {
            Some(r) => (r.backend, r.table.clone()),
            None => (self.backend_kind()?, self.config.firewall.table.clone()),
        };
        Ok((self.open_backend(kind, &table)?, kind, table))
    }

    /// The redirects for this config. HTTPS ports are left out when the server has no usable
    /// certificate: redirecting 443 to a server that cannot complete a handshake would show
    /// visitors a certificate error instead of the app.
    fn ports(&self, warnings: &mut Vec<String>) -> Vec<PortMap> {
        let fw = &self.config.firewall;
        let mut ports: Vec<PortMap> = fw
            .http_ports
            .iter()
            .map(|&public| PortMap {
                public,
                server: self.config.server.http_port,
            })
            .collect();
        if !fw.https_ports.is_empty() {
            match crate::server::tls::availability(&self.config.tls) {
                Ok(_) => ports.extend(fw.https_ports.iter().map(|&public| PortMap {
                    public,
                    server: self.config.server.https_port,
                })),
                Err(why) => warnings.push(format!(
                    "port{} {} not redirected: {why}",
                    if fw.https_ports.len() > 1 { "s" } else { "" },
                    join(&fw.https_ports)
                )),
            }
        }
        ports
    }

    pub fn on(&self, args: &OnArgs) -> Result<Outcome> {
        // 1. Input: every token and the window, before anything else happens.
        let source_tokens = if args.sources.is_empty() {
            vec!["all".to_string()]
        } else {
            args.sources.clone()
        };
        let aliases = &self.config.aliases;
        let src = sources::resolve(&source_tokens, aliases).map_err(|e| Fail::Input(e.into()))?;
        let exc = sources::resolve(&args.except, aliases).map_err(|e| Fail::Input(e.into()))?;
        let until = sources::window_end(
            args.for_.as_deref(),
            args.until.as_deref(),
            SystemTime::now(),
        )
        .map_err(|e| Fail::Input(e.into()))?;
        if let Some(r) = &args.reason {
            if r.len() > 1000 {
                return Err(Fail::Input(anyhow!(
                    "--reason is {} bytes long; keep it under 1000",
                    r.len()
                )));
            }
        }
        let mut warnings = src.warnings;
        warnings.extend(exc.warnings);
        let ports = self.ports(&mut warnings);
        let policy = Policy::new(src.prefixes, exc.prefixes, ports, until);
        if policy
            .sources
            .iter()
            .all(|s| policy.exceptions.iter().any(|e| e.contains(s)))
        {
            warnings.push("every source is excepted: nobody will see the maintenance page".into());
        }
        warnings.extend(ssh_warning(&policy));

        let kind = self.backend_kind()?;
        let table = self.config.firewall.table.clone();
        let backend = self.open_backend(kind, &table)?;
        let mut outcome = Outcome {
            active: true,
            dry_run: args.dry_run,
            backend: backend.name(),
            sources: source_tokens.clone(),
            exceptions: args.except.clone(),
            ports: policy.ports.clone(),
            until: until.map(crate::server::page::rfc3339),
            reason: args.reason.clone(),
            warnings,
            ..Outcome::default()
        };
        if args.dry_run {
            outcome.ruleset = Some(backend.render(Some(&policy)));
            return Ok(outcome);
        }

        // 2. One maint at a time from here on.
        let paths = &self.config.paths;
        let _lock = state::lock(&paths.lock_file())?;
        let previous = state::load(&paths.state_record()).unwrap_or_else(|e| {
            tracing::warn!("{e:#}; replacing it");
            None
        });
        outcome.warnings.extend(backend.preflight()?);

        // 3. Health gate: never redirect visitors into a void.
        let reason = args.reason.clone();
        let window = Window {
            until,
            reason: reason.clone(),
        };
        let spawned = match self.ensure_server(&window) {
            Ok(spawned) => spawned,
            Err(e) if args.force => {
                outcome
                    .warnings
                    .push(format!("{e:#}; applying anyway because of --force"));
                None
            }
            Err(e) => return Err(Fail::Unhealthy(e)),
        };
        outcome.server_started = spawned;
        let spawned_server = spawned.or(previous.as_ref().and_then(|r| r.spawned_server));

        // 4. The firewall, atomically, only if it differs.
        let current = backend.current().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the current {} state ({e}); replacing it",
                backend.name()
            );
            None
        });
        if current.as_ref() != Some(&policy) {
            backend.apply(&policy)?;
            outcome.changed = true;
            // 5. Move matched clients over at once. The redirect is in place, so a failure
            // here is worth a warning, not a rollback.
            match backend.kill_states(&policy, StateTarget::App) {
                Ok(n) => outcome.states_killed = n,
                Err(e) => outcome.warnings.push(format!(
                    "maintenance is on, but open connections to the app were not cut ({e}); they move over when they reconnect"
                )),
            }
        }

        // 6. Remember what was done.
        let record = Record {
            backend: kind,
            table,
            policy: policy.clone(),
            sources: source_tokens,
            exceptions: args.except.clone(),
            since: match &previous {
                Some(p) if !outcome.changed => p.since,
                _ => now_secs(),
            },
            reason,
            spawned_server,
        };
        if previous
            .as_ref()
            .map(|p| (&p.sources, &p.exceptions, &p.reason))
            != Some((&record.sources, &record.exceptions, &record.reason))
        {
            outcome.changed = true;
        }
        state::save(&paths.state_record(), &record)?;

        if let (Some(u), false) = (until, backend.expires_by_itself()) {
            self.schedule_off(u)?;
        }
        Ok(outcome)
    }

    pub fn off(&self, args: &OffArgs) -> Result<Outcome> {
        let paths = &self.config.paths;
        if let Some(at) = args.scheduled {
            let wait = at.saturating_sub(now_secs());
            std::thread::sleep(Duration::from_secs(wait));
        }
        let _lock = if args.dry_run {
            None
        } else {
            Some(state::lock(&paths.lock_file())?)
        };
        let mut warnings = Vec::new();
        let record = state::load(&paths.state_record()).unwrap_or_else(|e| {
            warnings.push(format!("{e:#}; removing maint's firewall state anyway"));
            None
        });
        if let Some(at) = args.scheduled {
            if record.as_ref().and_then(|r| r.policy.until) != Some(at) {
                tracing::info!(
                    "the window ending at {at} was replaced; leaving maintenance as it is"
                );
                return Ok(self.outcome_unchanged(record.as_ref()));
            }
        }
        let (backend, _, _) = self.backend_for(record.as_ref())?;
        let current = backend.current().unwrap_or_else(|e| {
            warnings.push(format!(
                "cannot read maint's {} state ({e}); removing it anyway",
                backend.name()
            ));
            None
        });
        let mut outcome = Outcome {
            dry_run: args.dry_run,
            backend: backend.name(),
            warnings,
            ..Outcome::default()
        };
        if args.dry_run {
            outcome.ruleset = Some(backend.render(None));
            return Ok(outcome);
        }

        let removed = backend.clear()?;
        // Which redirected states to kill: those to the ports that were in place.
        let policy = current
            .or_else(|| record.as_ref().map(|r| r.policy.clone()))
            .unwrap_or_else(|| Policy::new([], [], self.ports(&mut Vec::new()), None));
        match backend.kill_states(&policy, StateTarget::Server) {
            Ok(n) => outcome.states_killed = n,
            Err(e) => outcome.warnings.push(format!(
                "the redirect is gone, but connections held by the maintenance server were not cut ({e})"
            )),
        }

        let socket = paths.control_socket();
        let server = control::ask(&socket, &Request::SetWindow(Window::default())).ok();
        if let (Some(pid), Some(s)) = (record.as_ref().and_then(|r| r.spawned_server), &server) {
            // Stop only the server `on` started, and only if it is still that process.
            if s.pid == pid {
                stop_server(pid);
                outcome.server_stopped = Some(pid);
                // Running unprivileged, it could not remove its root-owned files itself.
                if control::ask(&socket, &Request::Status).is_err() {
                    let _ = std::fs::remove_file(&socket);
                    let _ = std::fs::remove_file(paths.pid_file());
                }
            }
        }
        let had_record = state::remove(&paths.state_record())?;
        outcome.changed = removed || had_record;
        Ok(outcome)
    }

    fn outcome_unchanged(&self, record: Option<&Record>) -> Outcome {
        Outcome {
            active: record.is_some(),
            sources: record.map(|r| r.sources.clone()).unwrap_or_default(),
            exceptions: record.map(|r| r.exceptions.clone()).unwrap_or_default(),
            ports: record.map(|r| r.policy.ports.clone()).unwrap_or_default(),
            until: record
                .and_then(|r| r.policy.until)
                .map(crate::server::page::rfc3339),
            reason: record.and_then(|r| r.reason.clone()),
            ..Outcome::default()
        }
    }

    /// Makes sure a healthy maintenance server runs, starting one if none does, and tells it
    /// the window. Returns the pid of a server it started.
    fn ensure_server(&self, window: &Window) -> anyhow::Result<Option<u32>> {
        let socket = self.config.paths.control_socket();
        let mut spawned = None;
        let status = match control::ask(&socket, &Request::Status) {
            Ok(s) => s,
            Err(ControlError::NotRunning(_)) => {
                let pid = self.spawn_server()?;
                spawned = Some(pid);
                wait_for_server(&socket, pid, &self.config.paths.server_log())?
            }
            Err(ControlError::Other(e)) => return Err(e),
        };
        probe_http(&self.config, &status)?;
        control::ask(&socket, &Request::SetWindow(window.clone()))
            .map_err(|e| anyhow!("{e}"))
            .context("cannot tell the maintenance server about the window")?;
        Ok(spawned)
    }

    fn spawn_server(&self) -> anyhow::Result<u32> {
        use std::os::unix::process::CommandExt;
        let log_path = self.config.paths.server_log();
        std::fs::create_dir_all(&self.config.paths.state_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(["serve", "--background"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own session, so it outlives this command and a closing terminal.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().context("cannot start the maintenance server")?;
        tracing::info!(
            pid = child.id(),
            "started a maintenance server in the background"
        );
        Ok(child.id())
    }

    /// pf cannot expire rules, so a detached `maint off --scheduled` closes the window.
    fn schedule_off(&self, at: u64) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(["off", "--scheduled", &at.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        cmd.spawn()
            .context("cannot schedule the end of the window")?;
        Ok(())
    }

    pub fn status(&self) -> Result<StatusReport> {
        let paths = &self.config.paths;
        let mut drift = Vec::new();
        let record = state::load(&paths.state_record()).unwrap_or_else(|e| {
            drift.push(format!("{e:#}"));
            None
        });
        let (backend, kind, table) = self.backend_for(record.as_ref())?;
        let current = match backend.current() {
            Ok(c) => c,
            Err(e) => {
                drift.push(format!("cannot read the {} state: {e}", backend.name()));
                None
            }
        };
        match (&record, &current) {
            (Some(_), None) => drift.push(format!(
                "the state record says maintenance is on, but maint's {} {table:?} is not in the kernel (removed by hand, or a reboot?); run `maint on` again or `maint off`",
                if kind == Kind::Pf { "anchor" } else { "table" }
            )),
            (None, Some(_)) => drift.push(
                "the kernel holds maint's redirect but there is no state record; `maint off` removes it".into(),
            ),
            (Some(r), Some(c)) if &r.policy != c => drift.push(
                "the kernel's redirect differs from the state record (changed by hand?); run `maint on` again to restore it".into(),
            ),
            _ => {}
        }
        let policy = current
            .clone()
            .or_else(|| record.as_ref().map(|r| r.policy.clone()));
        let expired = policy
            .as_ref()
            .is_some_and(|p| p.expired_at(SystemTime::now()));
        let server = match control::ask(&paths.control_socket(), &Request::Status) {
            Ok(s) => {
                let healthy = probe_http(&self.config, &s).is_ok();
                Some(ServerReport { healthy, status: s })
            }
            Err(_) => None,
        };
        Ok(StatusReport {
            active: current.is_some() && !expired,
            expired,
            backend: backend.name(),
            table,
            sources: record
                .as_ref()
                .map(|r| r.sources.clone())
                .unwrap_or_default(),
            exceptions: record
                .as_ref()
                .map(|r| r.exceptions.clone())
                .unwrap_or_default(),
            source_prefixes: policy
                .as_ref()
                .map(|p| p.sources.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
            exception_prefixes: policy
                .as_ref()
                .map(|p| p.exceptions.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
            ports: policy.as_ref().map(|p| p.ports.clone()).unwrap_or_default(),
            since: record
                .as_ref()
                .map(|r| crate::server::page::rfc3339(r.since)),
            until: policy
                .as_ref()
                .and_then(|p| p.until)
                .map(crate::server::page::rfc3339),
            reason: record.as_ref().and_then(|r| r.reason.clone()),
            server,
            drift,
        })
    }

    pub fn check(&self) -> Result<Vec<Finding>> {
        let mut out = vec![Finding::ok(format!(
            "config {} is valid",
            self.config_path.display()
        ))];
        let kind = self.backend_kind()?;
        let backend = self.open_backend(kind, &self.config.firewall.table)?;
        match backend.preflight() {
            Ok(w) => {
                out.push(Finding::ok(format!("{} is usable", backend.name())));
                out.extend(w.into_iter().map(Finding::warn));
            }
            Err(e) => out.push(Finding::fail(format!("{}: {e}", backend.name()))),
        }
        let mut warnings = Vec::new();
        let ports = self.ports(&mut warnings);
        out.push(Finding::ok(format!(
            "redirects: {}",
            ports
                .iter()
                .map(|p| format!("{}→{}", p.public, p.server))
                .collect::<Vec<_>>()
                .join(", ")
        )));
        out.extend(warnings.into_iter().map(Finding::warn));
        out.extend(crate::server::tls::check(&self.config.tls));
        match control::ask(&self.config.paths.control_socket(), &Request::Status) {
            Ok(s) => match probe_http(&self.config, &s) {
                Ok(()) => out.push(Finding::ok(format!(
                    "maintenance server (pid {}) answers on port {}",
                    s.pid, s.http_port
                ))),
                Err(e) => out.push(Finding::fail(format!("{e:#}"))),
            },
            Err(ControlError::NotRunning(_)) => out.push(Finding::warn(
                "no maintenance server is running; `maint on` will start one".into(),
            )),
            Err(e) => out.push(Finding::fail(format!("{e}"))),
        }
        Ok(out)
    }
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub active: bool,
    pub expired: bool,
    pub backend: &'static str,
    pub table: String,
    pub sources: Vec<String>,
    pub exceptions: Vec<String>,
    pub source_prefixes: Vec<String>,
    pub exception_prefixes: Vec<String>,
    pub ports: Vec<PortMap>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub reason: Option<String>,
    pub server: Option<ServerReport>,
    pub drift: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub healthy: bool,
    #[serde(flatten)]
    pub status: ServerStatus,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub level: &'static str,
    pub message: String,
}

impl Finding {
    pub fn ok(message: String) -> Self {
        Finding {
            level: "ok",
            message,
        }
    }
    pub fn warn(message: String) -> Self {
        Finding {
            level: "warn",
            message,
        }
    }
    pub fn fail(message: String) -> Self {
        Finding {
            level: "fail",
            message,
        }
    }
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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

fn wait_for_server(socket: &Path, pid: u32, log: &Path) -> anyhow::Result<ServerStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match control::ask(socket, &Request::Status) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow!("{e}")).with_context(|| {
                    format!(
                        "the maintenance server (pid {pid}) did not come up within 10 s; see {}",
                        log.display()
                    )
                })
            }
            Err(_) => {}
        }
        // Gone already (a port in use, a bad page): say why, from its log.
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err()
            || matches!(
                nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG)
                ),
                Ok(nix::sys::wait::WaitStatus::Exited(..))
            )
        {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(anyhow!(
                "the maintenance server exited at start-up: {last} (full log: {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks the server over HTTP, as a visitor would, on the port the redirect points at.
pub fn probe_http(config: &Config, status: &ServerStatus) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let ip = config
        .server
        .listen
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            other => *other,
        })
        .next()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let addr = std::net::SocketAddr::new(ip, status.http_port);
    let attempt = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(
            b"HEAD /maint-health-check HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )?;
        let mut head = String::new();
        s.take(8192).read_to_string(&mut head)?;
        Ok(head)
    };
    let head = attempt()
        .with_context(|| format!("the maintenance server does not answer HTTP on {addr}"))?;
    if !head
        .to_ascii_lowercase()
        .contains(crate::server::page::MARKER)
    {
        return Err(anyhow!(
            "something answers on {addr}, but it is not maint's maintenance server"
        ));
    }
    Ok(())
}

fn stop_server(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(pid, Signal::SIGTERM);
    // Reap it if it is our child (it is not, after setsid in another invocation); give it a
    // moment to drain so the port is free for a later `on`.
    let deadline = Instant::now() + Duration::from_secs(5);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(20));
    }
}
