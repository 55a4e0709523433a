//! The configuration file (`maint.toml`): its shape, its defaults, and loading it.
//!
//! Every setting is optional and defaults to something safe, so maint runs with no file at
//! all. Unknown keys and bad values are errors naming the key, the file and the line: a typo
//! in a maintenance tool's config must never be silently ignored. What parses but makes no
//! sense together is refused in [`validate`].

mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

pub const DEFAULT_PATH: &str = "/etc/maint/maint.toml";

/// The user the server runs as unless `server.user` says otherwise. OpenBSD's base daemons
/// run as `_name`; Linux packages create a plain system user.
pub const DEDICATED_USER: &str = if cfg!(target_os = "openbsd") {
    "_maint"
} else {
    "maint"
};

/// Who the server runs as when maint's own user does not exist.
const FALLBACK_USER: &str = "nobody";

/// The user the server will run as, looked up.
pub struct ServerUser {
    pub user: nix::unistd::User,
    /// Why this is not the user the config asked for (the dedicated user is missing).
    pub fallback: Option<String>,
}

impl Server {
    /// Looks up the user the server runs as. A configured user must exist; without one,
    /// maint's own user is used, or `nobody` with a warning in `fallback`.
    pub fn run_as(&self) -> Result<ServerUser> {
        let lookup = |name: &str| {
            nix::unistd::User::from_name(name)
                .with_context(|| format!("cannot look up user {name:?}"))
        };
        if let Some(name) = &self.user {
            let user = lookup(name)?.with_context(|| {
                format!("user {name:?} (server.user) does not exist; create it or set another")
            })?;
            return Ok(ServerUser {
                user,
                fallback: None,
            });
        }
        if let Some(user) = lookup(DEDICATED_USER)? {
            return Ok(ServerUser {
                user,
                fallback: None,
            });
        }
        let user = lookup(FALLBACK_USER)?.with_context(|| {
            format!(
                "neither {DEDICATED_USER:?} nor {FALLBACK_USER:?} exists to run the server as; \
                 create {DEDICATED_USER:?} (see conf/sysusers.conf) or set server.user"
            )
        })?;
        Ok(ServerUser {
            user,
            fallback: Some(format!(
                "the maintenance server runs as {FALLBACK_USER:?}, which other processes share \
                 and which can therefore signal it: create the user {DEDICATED_USER:?} (install \
                 conf/sysusers.conf and run systemd-sysusers; on OpenBSD: useradd -L daemon -d \
                 /var/empty -s /sbin/nologin {DEDICATED_USER}) or set server.user"
            )),
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub page: Page,
    pub tls: Tls,
    pub firewall: Firewall,
    pub paths: Paths,
    pub metrics: Metrics,
    pub pass: Pass,
    /// Named groups of sources, usable wherever a source is: `office = ["203.0.113.0/24"]`,
    /// or `partners = { file = "/etc/maint/partners.txt" }` (one prefix per line).
    pub aliases: BTreeMap<String, crate::sources::Alias>,
    /// Pages for particular sites where one host serves several, by the name visitors ask
    /// for (`Host`; `*.example.org` covers one label): what differs from `[page]`.
    pub sites: BTreeMap<String, SitePage>,
}

/// What one site's page changes of `[page]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePage {
    pub title: Option<String>,
    pub reason: Option<String>,
    pub contact: Option<String>,
    pub template: Option<PathBuf>,
    pub assets: Option<PathBuf>,
}

impl Config {
    /// The page settings of site `name`: its own over `[page]`.
    pub fn page_for(&self, name: &str) -> Page {
        let mut page = self.page.clone();
        if let Some(site) = self.sites.get(name) {
            let site = site.clone();
            page.title = site.title.unwrap_or(page.title);
            page.reason = site.reason.unwrap_or(page.reason);
            page.contact = site.contact.unwrap_or(page.contact);
            page.template = site.template.or(page.template);
            page.assets = site.assets.or(page.assets);
        }
        page
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Addresses to listen on. On Linux the kernel's `redirect` rewrites the destination to the
    /// address of the interface the packet came in on, so the server listens on the wildcard
    /// addresses and refuses connections that were not redirected; on OpenBSD pf's `rdr-to`
    /// targets loopback, so the server listens there only.
    pub listen: Vec<IpAddr>,
    /// Port for redirected plain HTTP. Below 1024, so that only root can bind it: whoever
    /// holds it receives redirected visitors' requests (`maint on` refuses an unprivileged
    /// one). 503 rarely collides with anything else.
    pub http_port: u16,
    /// Port for redirected HTTPS; privileged too.
    pub https_port: u16,
    /// Unprivileged user to run as after binding, when started as root. Unset: maint's own
    /// user ([`DEDICATED_USER`], which the install step creates), or `nobody` with a warning
    /// where it does not exist. A user shared with other daemons can signal the server.
    pub user: Option<String>,
    /// Most connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most connections one source holds at once (an IPv6 source is its /64, which one client
    /// controls); further ones from it are closed at once, so no client can take every slot.
    /// Above `max_connections` it changes nothing.
    pub max_connections_per_source: usize,
    /// A client must send its request headers within this time (slowloris guard).
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Largest request head accepted, in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// How long the page's held request (`/.maint/wait`) is held before it is answered
    /// "still on" and the page asks again: an idle tab costs one request this often.
    #[serde(deserialize_with = "duration")]
    pub wait_timeout: Duration,
    /// How long SIGTERM waits for open requests before exiting.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// `maint serve` puts the recorded maintenance back when it starts (after a reboot),
    /// unless its window has ended.
    pub restore: bool,
    /// While maintenance is on, `maint serve` puts maint's firewall state back when another
    /// program removes or changes it (a firewall reload, `nft flush ruleset`).
    pub keep: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: default_listen(),
            http_port: 503,
            https_port: 504,
            user: None,
            max_connections: 20_000,
            // A tenth of the whole: room for a large office behind one NAT address.
            max_connections_per_source: 2_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            max_header_bytes: 16 * 1024,
            wait_timeout: Duration::from_secs(50),
            drain_timeout: Duration::from_secs(10),
            restore: true,
            keep: true,
        }
    }
}

fn default_listen() -> Vec<IpAddr> {
    if cfg!(target_os = "linux") {
        vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
    } else {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    }
}

/// The Prometheus metrics listener of the running server; off unless `listen` is set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Address and port the server answers `GET /metrics` on, e.g. `127.0.0.1:9503`. Never one
    /// of the redirected or redirect target ports; it is not behind the redirect, so bind it
    /// to an address only the monitoring reaches.
    pub listen: Option<std::net::SocketAddr>,
}

/// Pass links (`maint pass new`): who a link lets through, and how often.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pass {
    /// The site's address as visitors type it, e.g. "https://www.example.org": with it,
    /// `maint pass new` prints the whole link, not only its path.
    pub site: Option<String>,
    /// How much of a visitor's address a pass lets through: 32 (the address) for IPv4, its
    /// /64 for IPv6, where a client's addresses change within its network (RFC 8981).
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// At most this many admissions a minute, whatever the server asks.
    pub admissions_per_minute: u32,
    /// Address ranges of proxies or a CDN in front of this host. Visitors behind them all
    /// arrive from these addresses, so a pass cannot tell them apart: `maint check` warns
    /// when the clients it sees come from here.
    pub proxies: Vec<ipnet::IpNet>,
}

impl Default for Pass {
    fn default() -> Self {
        Pass {
            site: None,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            admissions_per_minute: 30,
            proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Page {
    /// HTTP status of the maintenance response.
    pub status: u16,
    /// Retry-After in seconds when no window end is known.
    pub retry_after: u64,
    /// Page title and heading.
    pub title: String,
    /// Default reason shown when `maint on` gives none.
    pub reason: String,
    /// Who to contact (an address or URL), shown on the page when set.
    pub contact: String,
    /// A custom page (minijinja template; placeholders: title, reason, eta, until, until_unix,
    /// contact, contact_href, retry_after, assets). Without it the built-in page is used.
    pub template: Option<PathBuf>,
    /// A directory whose files are served under `/.maint/` (CSS, logo) for a custom page.
    pub assets: Option<PathBuf>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            status: 503,
            retry_after: 300,
            title: "Down for maintenance".into(),
            reason: "We are performing scheduled maintenance.".into(),
            contact: String::new(),
            template: None,
            assets: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Certificate chain and key pairs in PEM; chosen by SNI, the first is the default.
    pub certificates: Vec<CertPair>,
    /// Look for certificates in the usual ACME layouts when none are configured.
    pub discover: bool,
    /// Serve a self-signed certificate when no real one exists (visitors see a warning).
    pub self_signed: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            certificates: Vec::new(),
            discover: true,
            self_signed: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Firewall {
    /// `auto` (nftables on Linux, pf on OpenBSD), `nftables` or `pf`.
    pub backend: BackendChoice,
    /// Name of maint's nftables table (family inet) or pf anchor.
    pub table: String,
    /// Public ports whose plain HTTP is redirected to the server's http_port.
    pub http_ports: Vec<u16>,
    /// Public ports whose HTTPS is redirected to the server's https_port.
    pub https_ports: Vec<u16>,
    /// The pfctl program (pf backend only).
    pub pfctl: PathBuf,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            backend: BackendChoice::Auto,
            table: "maint".into(),
            http_ports: vec![80],
            https_ports: vec![443],
            pfctl: "/sbin/pfctl".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Nftables,
    Pf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// The record of what the operator asked for (`maintenance.json` and `policy.json`).
    /// Persistent, so `maint serve` can put maintenance back after a reboot.
    pub state_dir: PathBuf,
    /// The lock, and by default the control socket, the pid file and a background server's
    /// log: what belongs to running processes and goes with a reboot.
    pub runtime_dir: PathBuf,
    /// The server's control socket (local only; the network cannot reach it).
    pub control_socket: Option<PathBuf>,
    /// Pid file of a server that `maint on` started in the background.
    pub pid_file: Option<PathBuf>,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            // Where each system keeps daemons' persistent state.
            state_dir: if cfg!(target_os = "linux") {
                "/var/lib/maint"
            } else {
                "/var/db/maint"
            }
            .into(),
            // Linux has /run; the BSDs keep runtime state in /var/run.
            runtime_dir: if cfg!(target_os = "linux") {
                "/run/maint"
            } else {
                "/var/run/maint"
            }
            .into(),
            control_socket: None,
            pid_file: None,
        }
    }
}

impl Paths {
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join("control.sock"))
    }
    pub fn pid_file(&self) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| self.runtime_dir.join("server.pid"))
    }
    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir.join("lock")
    }
    pub fn server_log(&self) -> PathBuf {
        self.runtime_dir.join("server.log")
    }
}

impl Config {
    /// Loads `path`. A missing file is fine only when it is the default path (built-in
    /// defaults then); a file the operator named explicitly must exist.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                tracing::debug!(
                    "no config file at {}, using built-in defaults",
                    path.display()
                );
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read config file {}", path.display()))
            }
        };
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }
}

/// Durations are written as humans do: "10s", "1m30s".
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"10s\": {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_listener_on_a_redirected_or_target_port_is_refused_by_name() {
        let ok = Config::parse("[metrics]\nlisten = \"127.0.0.1:9503\"").unwrap();
        assert_eq!(ok.metrics.listen, Some("127.0.0.1:9503".parse().unwrap()));
        assert_eq!(Config::default().metrics.listen, None);
        for (listen, names) in [
            ("127.0.0.1:503", "server.http_port"),
            ("[::1]:504", "server.http_port/https_port"),
            ("0.0.0.0:80", "firewall.http_ports"),
            ("0.0.0.0:443", "firewall.http_ports/https_ports"),
            ("127.0.0.1:0", "port 0"),
        ] {
            let e = Config::parse(&format!("[metrics]\nlisten = \"{listen}\""))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(names) && e.contains("metrics.listen"),
                "{listen}: {e}"
            );
        }
        let e = Config::parse("[metrics]\nlisten = \"localhost:9503\"").unwrap_err();
        assert!(format!("{e:#}").contains("listen"), "{e:#}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.http_port, 503);
        assert_eq!(c.page.status, 503);
        assert_eq!(c.firewall.http_ports, [80]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse("[server]\nhttp_port = 8080\nhttp_prot = 1\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("http_prot"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = Config::parse("[server]\nheader_timeout = \"soon\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("soon"));
    }

    #[test]
    fn bad_alias_entry_is_named() {
        let err = Config::parse("[aliases]\noffice = [\"203.0.113.0/33\"]\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("office") && msg.contains("203.0.113.0/33"),
            "{msg}"
        );
    }

    #[test]
    fn shipped_example_config_is_valid_and_shows_the_defaults() {
        let example = Config::parse(include_str!("../../conf/maint.toml")).unwrap();
        let defaults = Config::default();
        assert_eq!(example.server.http_port, defaults.server.http_port);
        assert_eq!(example.server.idle_timeout, defaults.server.idle_timeout);
        assert_eq!(example.page.reason, defaults.page.reason);
        assert_eq!(example.firewall.https_ports, defaults.firewall.https_ports);
    }

    #[test]
    fn redirect_loop_is_refused() {
        let err = Config::parse("[firewall]\nhttp_ports = [503]\n").unwrap_err();
        assert!(format!("{err:#}").contains("503"));
    }
}
