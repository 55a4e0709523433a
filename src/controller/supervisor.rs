//! The maintenance server's lifecycle as the controller sees it: finding a running server,
//! starting one in the background when none runs, waiting until it answers, and stopping the
//! one `on` started. Also the detached `maint off` that closes a window on firewalls that
//! cannot expire rules by themselves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::{probe, target};
use crate::config::{Config, Paths};
use crate::control::{self, ControlError, Request, ServerStatus, Window};

/// How long a freshly started server may take to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM may take to stop a server before `off` goes on without waiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the controller runs its commands with: the config and where it came from, so the
/// processes it starts read the same file.
pub struct Supervisor<'a> {
    pub config: &'a Config,
    pub config_path: &'a Path,
}

impl Supervisor<'_> {
    fn paths(&self) -> &Paths {
        &self.config.paths
    }

    /// Makes sure a healthy maintenance server runs, starting one if none does, and that it
    /// alone listens on `ports` (where the redirect will send visitors). A server it started
    /// comes back as a guard that stops it again unless the caller keeps it, so a command
    /// that fails after starting one leaves no orphan holding the port.
    pub fn ensure_server(&self, ports: &[u16]) -> anyhow::Result<Option<Started<'_>>> {
        let socket = self.paths().control_socket();
        let mut started = None;
        let status = match control::ask(&socket, &Request::Status) {
            Ok(s) => s,
            Err(ControlError::NotRunning(_)) => {
                let pid = self.start_server()?;
                let guard = Started {
                    supervisor: self,
                    pid: Some(pid),
                };
                let status = wait_for_server(&socket, pid, &self.paths().server_log())?;
                started = Some(guard);
                status
            }
            Err(ControlError::Other(e)) => return Err(e),
        };
        probe::http(self.config, &status)?;
        target::check_owner(ports, status.pid)?;
        Ok(started)
    }

    /// Tells the running server what its page says about the window.
    pub fn set_window(&self, window: &Window) -> anyhow::Result<()> {
        control::ask(
            &self.paths().control_socket(),
            &Request::SetWindow(window.clone()),
        )
        .map_err(|e| anyhow!("{e}"))
        .context("cannot tell the maintenance server about the window")?;
        Ok(())
    }

    /// `maint serve --background` in its own session, logging to the runtime directory.
    pub fn start_server(&self) -> anyhow::Result<u32> {
        let log_path = self.paths().server_log();
        std::fs::create_dir_all(&self.paths().runtime_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let pid = self
            .spawn_detached(
                &["serve", "--background"],
                Stdio::from(log.try_clone()?),
                Stdio::from(log),
            )
            .context("cannot start the maintenance server")?;
        tracing::info!(pid, "started a maintenance server in the background");
        Ok(pid)
    }

    /// pf cannot expire rules, so a detached `maint off --scheduled` closes the window.
    pub fn schedule_off(&self, at: u64) -> anyhow::Result<()> {
        self.spawn_detached(
            &["off", "--scheduled", &at.to_string()],
            Stdio::null(),
            Stdio::null(),
        )
        .context("cannot schedule the end of the window")?;
        Ok(())
    }

    /// Runs this same binary with this config and `args`, in a session of its own, so it
    /// outlives this command and a closing terminal. Returns its pid.
    fn spawn_detached(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> anyhow::Result<u32> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(std::env::current_exe()?);
        // A `maint on` run by a service (an Ansible task under systemd, say) must not hand
        // the server it starts that service's notification socket.
        cmd.env_remove("NOTIFY_SOCKET")
            .arg("--config")
            .arg(self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
        // which is async-signal-safe, allocating nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        Ok(cmd.spawn()?.id())
    }

    /// The pid of a server maint started in the background: its pid file, if the server
    /// answering on the control socket is that process.
    pub fn background_server(&self, answering: &ServerStatus) -> Option<u32> {
        let text = std::fs::read_to_string(self.paths().pid_file()).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        (pid == answering.pid).then_some(pid)
    }

    /// Stops the server `on` started (`pid`), if it is still the one answering, and removes
    /// the files it could not remove itself. Returns whether it stopped it.
    pub fn stop_started_server(&self, pid: u32, answering: &ServerStatus) -> bool {
        if answering.pid != pid {
            return false;
        }
        self.stop_server(pid);
        true
    }

    fn stop_server(&self, pid: u32) {
        stop(pid);
        let socket = self.paths().control_socket();
        // Running unprivileged, it could not remove its root-owned files itself.
        if control::ask(&socket, &Request::Status).is_err() {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(self.paths().pid_file());
        }
    }
}

/// A server this command started: stopped when dropped, unless kept.
pub struct Started<'a> {
    supervisor: &'a Supervisor<'a>,
    pid: Option<u32>,
}

impl Started<'_> {
    /// The command succeeded: the server stays, and this is its pid.
    pub fn keep(mut self) -> u32 {
        self.pid.take().expect("kept once")
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            tracing::info!(pid, "stopping the maintenance server this command started");
            self.supervisor.stop_server(pid);
        }
    }
}

fn wait_for_server(socket: &Path, pid: u32, log: &Path) -> anyhow::Result<ServerStatus> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match control::ask(socket, &Request::Status) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow!("{e}")).with_context(|| {
                    format!(
                        "the maintenance server (pid {pid}) did not come up within {} s; see {}",
                        START_TIMEOUT.as_secs(),
                        log.display()
                    )
                })
            }
            Err(_) => {}
        }
        // Gone already (a port in use, a bad page): say why, from its log.
        if !alive(pid) {
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

/// Whether `pid` still runs; reaps it if it is our exited child.
fn alive(pid: u32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let raw = pid;
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if nix::sys::signal::kill(pid, None).is_err() {
        return false;
    }
    if matches!(
        waitpid(pid, Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
    ) {
        return false;
    }
    // Not our child (the `on` that started it has exited): once it has exited it is a
    // zombie until init reaps it, which some inits do seconds later. It is gone for us.
    !is_zombie(raw)
}

/// Whether `pid` has exited and waits to be reaped (Linux's /proc; elsewhere: no).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold any
            // character: look after the last ')'.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|s| s == "Z" || s == "X")
        })
        .unwrap_or(false)
}

/// SIGTERM, then a moment to drain so the port is free for a later `on`.
fn stop(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
