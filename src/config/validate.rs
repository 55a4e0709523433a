//! What serde cannot check: values that parse but make no sense together, each refused with
//! a message naming the key and what to do.

use std::time::Duration;

use anyhow::{bail, Result};

use super::Config;

impl Config {
    /// Checks what serde cannot: values that parse but make no sense together.
    fn validate_sites(&self) -> Result<()> {
        for name in self.sites.keys() {
            let host = name.strip_prefix("*.").unwrap_or(name);
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                bail!(
                    "[sites.{name:?}]: not a host name; use the name visitors type, like \
                     \"shop.example.org\", or \"*.example.org\" for every name one label below it"
                );
            }
        }
        Ok(())
    }

    fn validate_pass(&self) -> Result<()> {
        let p = &self.pass;
        if !(8..=32).contains(&p.ipv4_prefix) {
            bail!(
                "pass.ipv4_prefix is {}: give a prefix length from 8 to 32 (32 lets one address through)",
                p.ipv4_prefix
            );
        }
        if !(16..=128).contains(&p.ipv6_prefix) {
            bail!(
                "pass.ipv6_prefix is {}: give a prefix length from 16 to 128 (64, one network, is usual)",
                p.ipv6_prefix
            );
        }
        if !(1..=10_000).contains(&p.admissions_per_minute) {
            bail!(
                "pass.admissions_per_minute is {}: give a number from 1 to 10000",
                p.admissions_per_minute
            );
        }
        if let Some(site) = &p.site {
            let rest = site
                .strip_prefix("https://")
                .or_else(|| site.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                let host = r.strip_suffix('/').unwrap_or(r);
                !host.is_empty() && !host.contains(['/', '?', '#', ' ', '"', '<', '>', '@'])
            });
            if !ok {
                bail!(
                    "pass.site is {site:?}: give the site's address without a path, e.g. \"https://www.example.org\""
                );
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<()> {
        self.validate_sites()?;
        self.validate_pass()?;
        let s = &self.server;
        if s.listen.is_empty() {
            bail!("server.listen is empty: give at least one address, e.g. [\"0.0.0.0\", \"::\"]");
        }
        if s.http_port == 0 || s.https_port == 0 || s.http_port == s.https_port {
            bail!(
                "server.http_port ({}) and server.https_port ({}) must be two different non-zero ports",
                s.http_port,
                s.https_port
            );
        }
        if s.max_header_bytes < 8192 {
            bail!(
                "server.max_header_bytes is {}: it must be at least 8192",
                s.max_header_bytes
            );
        }
        if s.max_connections == 0 {
            bail!("server.max_connections must be at least 1");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&s.wait_timeout) {
            bail!(
                "server.wait_timeout is {:?}: it must be between 1s and 60s (the page gives up \
                 on a held request after 70 s; 50s is the default)",
                s.wait_timeout
            );
        }
        if s.max_connections_per_source == 0 {
            bail!("server.max_connections_per_source must be at least 1");
        }
        if !(100..=599).contains(&self.page.status) {
            bail!(
                "page.status is {}: it must be an HTTP status between 100 and 599",
                self.page.status
            );
        }
        let f = &self.firewall;
        for port in f.http_ports.iter().chain(&f.https_ports) {
            if *port == 0 {
                bail!("firewall ports must be non-zero");
            }
            if [s.http_port, s.https_port].contains(port) {
                bail!(
                    "firewall port {port} is also a server port: a redirect onto itself would loop"
                );
            }
        }
        if let Some(addr) = self.metrics.listen {
            let port = addr.port();
            if port == 0 {
                bail!("metrics.listen {addr} has port 0: give the port Prometheus scrapes, e.g. 127.0.0.1:9503");
            }
            if [s.http_port, s.https_port].contains(&port) {
                bail!(
                    "metrics.listen {addr} uses port {port}, a port the firewall redirects visitors \
                     to (server.http_port/https_port): pick another, e.g. 127.0.0.1:9503"
                );
            }
            if f.http_ports
                .iter()
                .chain(&f.https_ports)
                .any(|p| *p == port)
            {
                bail!(
                    "metrics.listen {addr} uses port {port}, which maint redirects \
                     (firewall.http_ports/https_ports): pick another, e.g. 127.0.0.1:9503"
                );
            }
        }
        if let Some(p) = f.http_ports.iter().find(|p| f.https_ports.contains(p)) {
            bail!("port {p} is in both firewall.http_ports and firewall.https_ports");
        }
        if f.table.is_empty()
            || f.table.len() > 32
            || !f
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "firewall.table {:?} is not a usable name: use 1-32 letters, digits, '_' or '-'",
                f.table
            );
        }
        for (name, alias) in &self.aliases {
            if crate::sources::is_reserved(name) {
                bail!("alias {name:?} is a reserved word; pick another name");
            }
            // A file is read when the alias is used, and its errors named then.
            let crate::sources::Alias::List(entries) = alias else {
                continue;
            };
            for entry in entries {
                crate::sources::parse_prefix(entry).map_err(|why| {
                    anyhow::anyhow!("alias {name:?} has a bad entry {entry:?}: {why}")
                })?;
            }
        }
        Ok(())
    }
}
