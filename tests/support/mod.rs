//! Fixtures of the `maint` crate's tests: a real `maint serve` in a temporary directory with
//! its own ports, the end-to-end lab and site. What every crate's tests share (root checks,
//! namespaces, HTTP clients) comes from the test kit, `maint_testkit`.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

pub mod netns;
pub mod site;

pub use maint_testkit::http::{curl, header, raw, read_response, stderr, stdout, wait_until};
pub use maint_testkit::root::have_root;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn maint_bin() -> &'static str {
    env!("CARGO_BIN_EXE_maint")
}

/// A port nothing listens on right now (the kernel picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub http_port: u16,
    pub https_port: u16,
    pub child: Option<Child>,
}

impl TestServer {
    /// Writes a config (the given TOML plus this server's ports and paths) and starts
    /// `maint serve`, waiting until it answers.
    pub fn start(extra: &str) -> TestServer {
        let s = TestServer::configure(extra);
        s.spawn_and_wait()
    }

    pub fn configure(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let https_port = free_port();
        let config = dir.path().join("maint.toml");
        let text = format!(
            "{extra}\n[paths]\nstate_dir = \"{state}\"\nruntime_dir = \"{state}\"\n",
            state = dir.path().join("state").display()
        );
        let text = text.replacen(
            "[server]",
            &format!("[server]\nhttp_port = {http_port}\nhttps_port = {https_port}"),
            1,
        );
        let text = if text.contains("[server]") {
            text
        } else {
            format!("[server]\nhttp_port = {http_port}\nhttps_port = {https_port}\nlisten = [\"127.0.0.1\", \"::1\"]\n{text}")
        };
        std::fs::write(&config, text).unwrap();
        TestServer {
            dir,
            config,
            http_port,
            https_port,
            child: None,
        }
    }

    pub fn spawn_and_wait(mut self) -> TestServer {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = Command::new(maint_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.http_port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("maint serve exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "maint serve did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The control socket is bound just after the ports: wait for it too.
        let socket = self.socket();
        wait_until(Duration::from_secs(10), "the control socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("state/control.sock")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Runs `maint --config <this config> ARGS`.
    pub fn maint(&self, args: &[&str]) -> Output {
        Command::new(maint_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends one request line to a control socket and returns the JSON answer.
pub fn control(socket: &Path, request: &str) -> serde_json::Value {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(&out).unwrap()
}
