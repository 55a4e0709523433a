//! A web site under test: a server namespace running the app on port 80 behind a typical
//! stateful host firewall, maint configured with an `office` alias, and two clients.

use std::process::Output;
use std::time::Duration;

use super::netns::Lab;
use super::{maint_bin, stderr, stdout};

/// The stateful firewall a real host loads at boot (what nftables.service does).
pub const HOST_FIREWALL: &str = "table inet host_filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established,related accept\n  tcp dport { 22, 80, 443 } accept\n }\n}\n";

/// `nft -f -` of `script` in namespace `ns`, which must succeed.
pub fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed: {script}");
}

/// A server host running the app, with maint configured, and two clients.
pub struct Site {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

impl Site {
    pub fn new() -> Site {
        Site::with_config("")
    }

    pub fn with_config(extra: &str) -> Site {
        Site::build(extra, true)
    }

    /// `firewall`: give the server the kind of stateful firewall a real host has, which also
    /// switches conntrack on in its namespace before maint arrives.
    pub fn build(extra: &str, firewall: bool) -> Site {
        let lab = Lab::new();
        if firewall {
            nft(&lab.server.ns, HOST_FIREWALL);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("maint.toml");
        std::fs::write(
            &config,
            format!(
                "{extra}\n[aliases]\noffice = [\"203.0.113.0/24\", \"2001:db8:113::/48\"]\n\n[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n",
                dir.path().join("state").display(),
                dir.path().join("run").display()
            ),
        )
        .unwrap();
        let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/app.py");
        lab.spawn(&lab.server.ns, &["python3", app, "80"]);
        let site = Site { lab, dir, config };
        site.wait_until(|s| {
            s.get_public(&format!("http://{}/", s.lab.server_public_v4))
                .0
                == 200
        });
        site
    }

    /// `maint --config <site config> ARGS` on the server host.
    pub fn maint(&self, args: &[&str]) -> Output {
        let mut all = vec![maint_bin(), "--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.lab.run(&self.lab.server.ns, &all)
    }

    pub fn maint_ok(&self, args: &[&str]) -> Output {
        let out = self.maint(args);
        assert!(
            out.status.success(),
            "maint {args:?} failed ({}): {}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn maint_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&stdout(&self.maint_ok(&all))).unwrap()
    }

    /// (status, body) of a GET from a client; status 0 when no HTTP answer came.
    pub fn get(&self, ns: &str, url: &str, extra: &[&str]) -> (u16, String) {
        let mut args = vec![
            "curl",
            "-s",
            "-g",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.lab.run(ns, &args);
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
    pub fn get_public(&self, url: &str) -> (u16, String) {
        self.get(&self.lab.public.ns, url, &[])
    }
    pub fn get_office(&self, url: &str) -> (u16, String) {
        self.get(&self.lab.office.ns, url, &[])
    }

    pub fn wait_until(&self, mut f: impl FnMut(&Site) -> bool) {
        super::wait_until(Duration::from_secs(10), "site condition", || f(self));
    }

    pub fn pub4(&self) -> String {
        format!("http://{}/account/login", self.lab.server_public_v4)
    }
    pub fn pub6(&self) -> String {
        format!("http://[{}]/account/login", self.lab.server_public_v6)
    }
    pub fn off4(&self) -> String {
        format!("http://{}/account/login", self.lab.server_office_v4)
    }
    pub fn off6(&self) -> String {
        "http://[2001:db8:113::1]/account/login".into()
    }
}

pub fn is_maintenance((code, body): &(u16, String)) -> bool {
    *code == 503 && body.contains("Down for maintenance")
}
pub fn is_app((code, body): &(u16, String)) -> bool {
    *code == 200 && body.trim() == "APP OK"
}
