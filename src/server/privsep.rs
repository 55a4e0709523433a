//! The privileged helper: a tiny process that stays root for one job, reading the TLS
//! certificate and key files again when the server reloads.
//!
//! Key files are normally readable by root only, and the server runs as an unprivileged user
//! after start-up, so on SIGHUP it cannot read renewed keys itself. As OpenBSD's httpd does,
//! it asks a process that kept the privilege; that process does nothing else: it reads the
//! config file it was started with, reads the key pairs the config names, and sends their
//! contents back. It exits when the server closes its end of the socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

use crate::certs::{self, PemPair};
use crate::config::Config;

pub struct KeyHelper {
    stream: Mutex<BufReader<UnixStream>>,
    pid: nix::unistd::Pid,
}

impl Drop for KeyHelper {
    /// Closing our end makes the helper exit; reap it so no zombie outlives the server.
    fn drop(&mut self) {
        if let Ok(s) = self.stream.lock() {
            let _ = s.get_ref().shutdown(std::net::Shutdown::Both);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Forks the helper. Must be called before the async runtime starts (fork copies only the
/// calling thread) and before privileges are dropped.
pub fn spawn(config_path: PathBuf) -> Result<KeyHelper> {
    let (server_end, helper_end) = UnixStream::pair().context("socketpair for the key helper")?;
    // SAFETY: no other threads exist yet; the child only runs plain blocking code and exits.
    match unsafe { nix::unistd::fork() }.context("fork the key helper")? {
        nix::unistd::ForkResult::Child => {
            drop(server_end);
            serve(helper_end, config_path);
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { child } => {
            tracing::debug!(pid = child.as_raw(), "started the key helper");
            drop(helper_end);
            Ok(KeyHelper {
                stream: Mutex::new(BufReader::new(server_end)),
                pid: child,
            })
        }
    }
}

fn serve(stream: UnixStream, config_path: PathBuf) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone socket"));
    let mut writer = stream;
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let answer: Result<Vec<PemPair>, String> = Config::load(&config_path)
            .and_then(|c| certs::read_pems(&c.tls))
            .map_err(|e| format!("{e:#}"));
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        if writer.write_all(&out).is_err() {
            return;
        }
        line.clear();
    }
}

impl KeyHelper {
    /// Asks for the key pairs as the config now names them.
    pub fn read_pems(&self) -> Result<Vec<PemPair>> {
        let mut stream = self.stream.lock().expect("not poisoned");
        stream
            .get_mut()
            .write_all(b"reload\n")
            .context("key helper is gone")?;
        let mut line = String::new();
        stream.read_line(&mut line).context("key helper is gone")?;
        let answer: Result<Vec<PemPair>, String> =
            serde_json::from_str(&line).context("unreadable answer from the key helper")?;
        answer.map_err(|e| anyhow!(e))
    }
}
