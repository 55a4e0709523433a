//! The embedded maintenance server (`maint serve`): start-up, privileges, signals, and the
//! control channel. Connections are accepted in [`accept`] and served by [`h1`] (plain
//! HTTP/1.1) or [`https`]; what they answer is in [`page`], what they share in [`shared`].
//!
//! Start-up order matters and follows OpenBSD's httpd: bind the ports and read every file
//! while still root, then drop to the unprivileged user before the first byte from the
//! network is read. After that, SIGHUP re-reads the config and page as that user.

mod accept;
mod h1;
mod head;
mod hold;
mod https;
mod negotiate;
mod page;
mod pass;
mod pipeline;
mod privsep;
mod scrape;
mod shared;
mod sites;
mod tls;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::control::{Reply, Request};
use shared::Shared;

/// Longest control request read, in bytes; real ones are under 1 KiB.
const CONTROL_LINE_MAX: u64 = 64 * 1024;

/// Runs the server until SIGTERM or SIGINT.
/// What the caller hands the server for its start.
pub struct Startup {
    /// The window the page describes until `maint on` says otherwise (after a restart, the
    /// recorded one).
    pub window: crate::control::Window,
    /// Runs as root once every port is bound (redirected visitors wait in the listen queue
    /// instead of being refused) and before privileges are dropped. It may return the link
    /// to a keeper of the firewall state: the server holds it open for as long as it runs
    /// and reads the keeper's reports on the kernel from it.
    #[allow(clippy::type_complexity)]
    pub after_bind: Box<dyn FnOnce() -> Result<Option<std::os::unix::net::UnixStream>>>,
}

pub fn run(config: Config, config_path: PathBuf, background: bool, startup: Startup) -> Result<()> {
    // A SIGTERM or SIGHUP that arrives after the ports are bound (so the server looks up)
    // but before the handlers exist must wait, not kill the process or skip a reload: block
    // them now, and `signals` unblocks them once it listens. Threads inherit the mask.
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&handled_signals()),
        None,
    )
    .context("cannot block signals during start-up")?;
    let paths = config.paths.clone();
    prepare_runtime_dir(&paths.runtime_dir)?;
    raise_open_file_limit(config.server.max_connections);

    let http_listeners = bind_all(&config.server.listen, config.server.http_port)?;
    // Read as root, but only what the user it is about to become could read itself.
    let server_user = server_user(&config)?;
    let reader = match &server_user {
        Some(u) => page::Reader::As(u),
        None => page::Reader::Itself,
    };
    let content = sites::Sites::load(&config, reader)?;
    // HTTPS only with a usable certificate; otherwise `maint on` leaves 443 alone.
    let tls = match crate::certs::read_pems(&config.tls)
        .and_then(|p| tls::Identity::new(&p, config.tls.self_signed))
    {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("HTTPS not served: {e:#}");
            None
        }
    };
    let https_listeners = match &tls {
        Some(_) => bind_all(&config.server.listen, config.server.https_port)?,
        None => Vec::new(),
    };
    let key_helper = match (&tls, nix::unistd::Uid::effective().is_root()) {
        (Some(_), true) => Some(privsep::spawn(config_path.clone())?),
        _ => None,
    };
    let control = bind_control(&paths.control_socket())?;
    let metrics = match config.metrics.listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| {
                    format!("cannot listen on {addr} for metrics (metrics.listen in the config)")
                })?,
        ),
        None => None,
    };
    if background {
        std::fs::write(paths.pid_file(), format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", paths.pid_file().display()))?;
    }
    let keeper = (startup.after_bind)()?;
    if let Some(u) = &server_user {
        drop_privileges(u)?;
    } else {
        tracing::debug!("not started as root; keeping the current user");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let https_port = tls.as_ref().map(|_| config.server.https_port);
        let state_dir = config.paths.state_dir.clone();
        let shared = Arc::new(Shared::new(config, content, tls, key_helper)?);
        if let Some(link) = keeper {
            scrape::hear_keeper(link, shared.clone());
        }
        if let Some(l) = metrics {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(address = %l.local_addr()?, "serving metrics at /metrics");
            tokio::spawn(scrape::serve(l, shared.clone(), state_dir));
        }
        if let Err(e) = shared.set_window(startup.window) {
            tracing::warn!("the page does not describe the recorded window: {e:#}");
        }
        for l in http_listeners {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(accept::accept_loop(l, shared.clone(), false));
        }
        for l in https_listeners {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(accept::accept_loop(l, shared.clone(), true));
        }
        tokio::spawn(control_loop(
            UnixListener::from_std(control)?,
            shared.clone(),
        ));
        tracing::info!(
            port = shared.http_port,
            https_port,
            pid = std::process::id(),
            "maintenance server ready"
        );
        // Under systemd (Type=notify): the units ordered after maint, the web server and the
        // app, start now that the ports answer and a recorded maintenance is back. Unset
        // afterwards, so nothing this process starts can speak for the unit.
        let _ = sd_notify::notify(true, &[sd_notify::NotifyState::Ready]);
        signals(&shared, &config_path).await?;
        shared.shutdown().await;
        anyhow::Ok(())
    });
    if background {
        let _ = std::fs::remove_file(paths.pid_file());
    }
    result
}

/// Every connection is a file descriptor, and the usual soft limit (1024) would cap the
/// server far below `max_connections`; raise it to the hard limit, as nginx and Go do.
fn raise_open_file_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!(soft, hard, "cannot raise the open-file limit");
    }
    let limit = if soft < hard { hard } else { soft };
    if (limit as usize) < max_connections {
        tracing::warn!(
            limit,
            max_connections,
            "the open-file limit caps connections below server.max_connections; raise it (LimitNOFILE= in systemd)"
        );
    }
}

fn prepare_runtime_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create runtime directory {}", dir.display()))
}

/// Binds one listener per address. IPv6 sockets are v6-only so `0.0.0.0` and `::` can both
/// be bound on the same port, and a port in use is a clear error naming the address.
fn bind_all(addrs: &[IpAddr], port: u16) -> Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    addrs
        .iter()
        .map(|ip| {
            let addr = SocketAddr::new(*ip, port);
            let bind = || -> std::io::Result<std::net::TcpListener> {
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                if addr.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.set_reuse_address(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                socket.listen(4096)?;
                Ok(socket.into())
            };
            bind().map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                    "cannot listen on {addr}: the port is already in use (another maint serve, or \
                     another program; choose another port under [server] in the config)"
                ),
                std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                    "cannot listen on {addr}: permission denied (ports below 1024 need root)"
                ),
                _ => anyhow::Error::from(e).context(format!("cannot listen on {addr}")),
            })
        })
        .collect()
}

/// The control socket is created while root and made 0600, so once the server runs as its
/// unprivileged user only root can still talk to it.
fn bind_control(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A live server answers on it; a dead one left a stale file behind.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "a maintenance server is already running (its control socket {} answers); stop it first \
             or give this one another paths.runtime_dir",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The user the server will run as: `None` when it was not started as root (it keeps the
/// user it has).
fn server_user(config: &Config) -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let run_as = config.server.run_as()?;
    if let Some(why) = run_as.fallback {
        tracing::warn!("{why}");
    }
    Ok(Some(run_as.user))
}

fn drop_privileges(u: &nix::unistd::User) -> Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Uid};
    let user = &u.name;
    setgroups(&[u.gid]).context("setgroups")?;
    setgid(u.gid).context("setgid")?;
    setuid(u.uid).context("setuid")?;
    if setuid(Uid::from_raw(0)).is_ok() {
        bail!("could drop privileges to {user:?} but regain root: refusing to run");
    }
    tracing::info!(user, "dropped privileges");
    Ok(())
}

fn handled_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

async fn signals(shared: &Arc<Shared>, config_path: &Path) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Handlers are in place: let signals through (to this thread; the runtime's worker
    // threads keep them blocked, which is fine for process-directed signals).
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&handled_signals()),
        None,
    )?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); return Ok(()) }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); return Ok(()) }
            _ = hup.recv() => reload(shared, config_path),
        }
    }
}

/// SIGHUP: a broken new config or page keeps the old one, and says why.
fn reload(shared: &Shared, config_path: &Path) {
    let result = Config::load(config_path).and_then(|config| {
        if config.server.listen != shared.settings().server.listen
            || config.server.http_port != shared.http_port
        {
            tracing::warn!(
                "listen addresses and ports change only on restart; keeping the current ones"
            );
        }
        // Read as root, but only what the user it is about to become could read itself.
        let server_user = server_user(&config)?;
        let reader = match &server_user {
            Some(u) => page::Reader::As(u),
            None => page::Reader::Itself,
        };
        let content = sites::Sites::load(&config, reader)?;
        shared.reload_tls(&config)?;
        shared.replace(config, content)
    });
    match result {
        Ok(()) => tracing::info!("SIGHUP: reloaded config and page"),
        Err(e) => {
            tracing::error!("SIGHUP: reload failed, keeping the previous config and page: {e:#}")
        }
    }
}

async fn control_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            // A request is one short JSON line; reading is capped so no local client can make
            // the server buffer without bound (a longer "line" is cut there and refused).
            let mut lines = BufReader::new(read.take(CONTROL_LINE_MAX)).lines();
            // One request per connection keeps the protocol trivial; bounded by a timeout so
            // a stuck client cannot hold a task forever.
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line()).await;
            let answer = match line {
                Ok(Ok(Some(line))) => match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Status) => Reply::Ok {
                        status: shared.status(),
                    },
                    Ok(Request::End) => {
                        let unwritten = shared.ending.end().await;
                        if unwritten > 0 {
                            tracing::warn!(
                                unwritten,
                                "maintenance ended; some held requests were not answered in time"
                            );
                        } else {
                            tracing::info!("maintenance ended; held requests answered");
                        }
                        Reply::Ok {
                            status: shared.status(),
                        }
                    }
                    Ok(Request::SetWindow(w)) => match shared.set_window(w) {
                        Ok(()) => Reply::Ok {
                            status: shared.status(),
                        },
                        Err(e) => Reply::Err {
                            error: format!("{e:#}"),
                        },
                    },
                    Err(e) => Reply::Err {
                        error: format!("bad request: {e}"),
                    },
                },
                _ => return,
            };
            let mut out = serde_json::to_vec(&answer).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}
