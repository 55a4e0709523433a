//! The health gate's eyes: asking the maintenance server over HTTP, as a visitor would, on the
//! port the redirect points at, and checking that what answers is maint's own server.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::config::Config;
use crate::control::{ServerStatus, MARKER};

/// Largest head read back; the answer to a HEAD is a few hundred bytes.
const HEAD_MAX: u64 = 8192;

/// Whether maint's server answers HTTP on `status.http_port`.
pub fn http(config: &Config, status: &ServerStatus) -> anyhow::Result<()> {
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
    let addr = SocketAddr::new(ip, status.http_port);
    let attempt = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(
            b"HEAD /maint-health-check HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )?;
        let mut head = String::new();
        s.take(HEAD_MAX).read_to_string(&mut head)?;
        Ok(head)
    };
    let head = attempt()
        .with_context(|| format!("the maintenance server does not answer HTTP on {addr}"))?;
    if !head.to_ascii_lowercase().contains(MARKER) {
        return Err(anyhow!(
            "something answers on {addr}, but it is not maint's maintenance server"
        ));
    }
    Ok(())
}
