//! Which firewall maint drives and with what: the backend for the config, or for the state
//! record (which knows the firewall and table `on` used even after the config changed or
//! broke), and the port map the config asks for.

use anyhow::anyhow;
use maint_backends::{Backend, Kind, PortMap, Settings};

use super::fail::{Fail, Result};
use crate::config::{BackendChoice, Config};
use crate::state::Record;

/// The firewall the config names (or this system's own, for `auto`).
pub fn configured_kind(config: &Config) -> Result<Kind> {
    match config.firewall.backend {
        BackendChoice::Nftables => Ok(Kind::Nftables),
        BackendChoice::Pf => Ok(Kind::Pf),
        BackendChoice::Auto => Kind::native().ok_or_else(|| {
            Fail::Input(anyhow!(
                "no firewall backend for this operating system; set firewall.backend to \"nftables\" or \"pf\""
            ))
        }),
    }
}

/// The backend for `kind` with maint's table or anchor called `name`, and its settings.
fn open(config: &Config, kind: Kind, name: &str) -> Result<(Box<dyn Backend>, Settings)> {
    let settings = match kind {
        Kind::Nftables => Settings::Nftables {
            table: name.to_owned(),
        },
        Kind::Pf => Settings::Pf {
            anchor: name.to_owned(),
            pfctl: config.firewall.pfctl.clone(),
        },
    };
    Ok((maint_backends::open(settings.clone())?, settings))
}

/// The backend the config asks for.
pub fn configured(config: &Config) -> Result<(Box<dyn Backend>, Settings)> {
    open(config, configured_kind(config)?, &config.firewall.table)
}

/// The backend maint's state is in: the record's, else the config's.
pub fn for_record(
    config: &Config,
    record: Option<&Record>,
) -> Result<(Box<dyn Backend>, Settings)> {
    match record {
        Some(r) => open(config, r.backend, &r.table),
        None => configured(config),
    }
}

/// The redirects for this config. HTTPS ports are left out when the server has no usable
/// certificate: redirecting 443 to a server that cannot complete a handshake would show
/// visitors a certificate error instead of the app.
pub fn ports(config: &Config, warnings: &mut Vec<String>) -> Vec<PortMap> {
    let fw = &config.firewall;
    let mut ports: Vec<PortMap> = fw
        .http_ports
        .iter()
        .map(|&public| PortMap {
            public,
            server: config.server.http_port,
        })
        .collect();
    if fw.https_ports.is_empty() {
        return ports;
    }
    let https = fw.https_ports.iter().map(|&public| PortMap {
        public,
        server: config.server.https_port,
    });
    match crate::certs::availability(&config.tls) {
        Ok(()) => ports.extend(https),
        Err(why) => {
            let skipped: Vec<String> = fw.https_ports.iter().map(u16::to_string).collect();
            warnings.push(format!(
                "port{} {} not redirected: {why}",
                if skipped.len() > 1 { "s" } else { "" },
                skipped.join(", ")
            ))
        }
    }
    ports
}
