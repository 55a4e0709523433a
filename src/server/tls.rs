//! TLS for the HTTPS port: serving the site's certificates (see [`crate::certs`]) by SNI,
//! swappable on reload.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::{parse, Loaded, PemPair};
use crate::control::CertificateExpiry;

/// Picks a certificate by SNI: exact name, then wildcard, then the default (the first pair),
/// so a client without SNI or with an unknown name still gets an answer.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<Certs>,
}

#[derive(Debug)]
struct Certs {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Each certificate's first name and expiry, for the metrics.
    expiry: Vec<CertificateExpiry>,
}

impl Resolver {
    fn new(certs: Certs) -> Self {
        Resolver {
            current: ArcSwap::from_pointee(certs),
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.load();
        let Some(name) = hello.server_name().map(|n| n.to_ascii_lowercase()) else {
            return Some(certs.default.clone());
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        certs
            .by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| certs.by_name.get(&w)))
            .or(Some(&certs.default))
            .cloned()
    }
}

fn build_certs(pairs: &[PemPair], self_signed: bool) -> Result<Certs> {
    let mut loaded = Vec::new();
    for pair in pairs {
        if pair.key_mode & 0o077 != 0 {
            tracing::warn!(
                "private key {} is readable by others (mode {:o}); chmod 600 it",
                pair.key_path.display(),
                pair.key_mode & 0o777
            );
        }
        loaded.push(parse(pair)?);
    }
    if loaded.is_empty() {
        if !self_signed {
            bail!("no certificate configured or found (see [tls] in the config)");
        }
        loaded.push(self_signed_cert()?);
    }
    let mut by_name = HashMap::new();
    for l in &loaded {
        tracing::info!(cert = %l.source.display(), names = ?l.names, "serving certificate");
        for n in &l.names {
            by_name.entry(n.clone()).or_insert_with(|| l.key.clone());
        }
    }
    let expiry = loaded
        .iter()
        .map(|l| CertificateExpiry {
            name: l
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| l.source.display().to_string()),
            not_after: l.not_after,
        })
        .collect();
    Ok(Certs {
        by_name,
        default: loaded[0].key.clone(),
        expiry,
    })
}

/// Only when the operator opts in: visitors will see a certificate warning.
fn self_signed_cert() -> Result<Loaded> {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let cert = rcgen::generate_simple_self_signed(vec![hostname.clone()])?;
    let pair = PemPair {
        cert_path: "(self-signed)".into(),
        key_path: "(self-signed)".into(),
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
        key_mode: 0o600,
    };
    tracing::warn!(%hostname, "serving a self-signed certificate (tls.self_signed = true): visitors will see a warning");
    parse(&pair)
}

/// The TLS side of the server: a rustls config whose certificates can be swapped on reload.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    resolver: Arc<Resolver>,
}

impl Identity {
    pub fn new(pairs: &[PemPair], self_signed: bool) -> Result<Identity> {
        let resolver = Arc::new(Resolver::new(build_certs(pairs, self_signed)?));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless tickets let returning clients resume without a full handshake, as nginx does.
        config.ticketer = provider::Ticketer::new().context("TLS session tickets")?;
        Ok(Identity {
            config: Arc::new(config),
            resolver,
        })
    }

    /// When each certificate served now expires.
    pub fn expiry(&self) -> Vec<CertificateExpiry> {
        self.resolver.current.load().expiry.clone()
    }

    /// Swaps in new certificates; open connections keep theirs. On error the old ones stay.
    pub fn reload(&self, pairs: &[PemPair], self_signed: bool) -> Result<()> {
        let certs = build_certs(pairs, self_signed)?;
        self.resolver.current.store(Arc::new(certs));
        Ok(())
    }
}
