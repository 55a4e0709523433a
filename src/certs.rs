//! The site's TLS certificates: finding them (configured, or in the usual ACME layouts),
//! reading and checking them. Both sides use this: the controller to decide whether HTTPS can
//! be redirected and to report in `maint check`, the server (and its privileged key helper)
//! to load what it serves.
//!
//! The maintenance page must answer HTTPS as well as the real site does, with the same
//! certificates: a visitor redirected from 443 to a server with the wrong certificate sees a
//! browser error, and an HSTS site cannot even be clicked through. So maint never invents a
//! certificate unless the operator asks (`tls.self_signed`); without a usable one, `on` leaves
//! 443 alone and says so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::config::{self, CertPair};
use crate::finding::Finding;

/// Certificates expiring sooner than this are reported by `maint check`.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// A certificate/key pair as read from disk (PEM text), before parsing. This is what crosses
/// from the privileged helper to the unprivileged server on reload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PemPair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    /// Unix permission bits of the key file, to warn about keys others can read.
    pub key_mode: u32,
}

/// The pairs to use: configured ones, or those found in the usual ACME layouts.
pub fn candidates(tls: &config::Tls) -> Vec<CertPair> {
    if !tls.certificates.is_empty() || !tls.discover {
        return tls.certificates.clone();
    }
    discover(Path::new("/etc/letsencrypt/live"), Path::new("/etc/ssl"))
}

/// certbot: `/etc/letsencrypt/live/NAME/{fullchain,privkey}.pem`; OpenBSD acme-client:
/// `/etc/ssl/NAME.fullchain.pem` with `/etc/ssl/private/NAME.key`.
fn discover(letsencrypt: &Path, ssl: &Path) -> Vec<CertPair> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(letsencrypt)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
        if cert.exists() && key.exists() {
            found.push(CertPair { cert, key });
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(ssl)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for cert in files {
        let Some(name) = cert
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".fullchain.pem"))
        else {
            continue;
        };
        let key = ssl.join("private").join(format!("{name}.key"));
        if key.exists() {
            found.push(CertPair { cert, key });
        }
    }
    found
}

/// Reads the candidate pairs' files. Done as root at start, and by the privileged helper on
/// reload, since key files are normally readable by root only.
pub fn read_pems(tls: &config::Tls) -> Result<Vec<PemPair>> {
    candidates(tls)
        .into_iter()
        .map(|p| {
            let cert_pem = std::fs::read_to_string(&p.cert)
                .with_context(|| format!("cannot read certificate {}", p.cert.display()))?;
            let key_pem = std::fs::read_to_string(&p.key)
                .with_context(|| format!("cannot read private key {}", p.key.display()))?;
            let key_mode = std::fs::metadata(&p.key)?.permissions().mode();
            Ok(PemPair {
                cert_path: p.cert,
                key_path: p.key,
                cert_pem,
                key_pem,
                key_mode,
            })
        })
        .collect()
}

/// One usable certificate: the rustls key and what `check` reports about it.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
    pub not_after: i64,
    pub source: PathBuf,
}

/// Parses a pair, checks the key matches the certificate, and reads its names and expiry.
pub fn parse(pair: &PemPair) -> Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| {
                format!(
                    "{} is not a PEM certificate chain",
                    pair.cert_path.display()
                )
            })?;
    if chain.is_empty() {
        bail!("{} holds no certificate", pair.cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("{} is not a PEM private key", pair.key_path.display()))?;
    let signing = provider::sign::any_supported_type(&key)
        .with_context(|| format!("{} is not a supported key type", pair.key_path.display()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot parse certificate {}", pair.cert_path.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let not_after = x509.validity().not_after.timestamp();
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        anyhow!(
            "private key {} does not match certificate {}",
            pair.key_path.display(),
            pair.cert_path.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
        source: pair.cert_path.clone(),
    })
}

/// Whether HTTPS can be served; `Err` says why not, in words for the operator.
pub fn availability(tls: &config::Tls) -> Result<(), String> {
    let pairs = read_pems(tls).map_err(|e| format!("{e:#}"))?;
    if pairs.is_empty() {
        if tls.self_signed {
            return Ok(());
        }
        return Err(
            "no certificate: set [tls] certificates in the config (none found in /etc/letsencrypt/live or /etc/ssl), or opt in to tls.self_signed"
                .into(),
        );
    }
    for p in &pairs {
        parse(p).map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

/// `maint check`: what was found, what expires soon, what does not match.
pub fn check(tls: &config::Tls) -> Vec<Finding> {
    let pairs = match read_pems(tls) {
        Ok(p) => p,
        Err(e) => return vec![Finding::fail(format!("HTTPS: {e:#}"))],
    };
    if pairs.is_empty() {
        return vec![if tls.self_signed {
            Finding::warn(
                "HTTPS: no certificate found; serving a self-signed one (tls.self_signed)".into(),
            )
        } else {
            Finding::warn(
                "HTTPS: no certificate configured or found; `maint on` will not redirect the HTTPS ports".into(),
            )
        }];
    }
    let now = jiff::Timestamp::now().as_second();
    let mut out = Vec::new();
    for p in &pairs {
        match parse(p) {
            Err(e) => out.push(Finding::fail(format!("HTTPS: {e:#}"))),
            Ok(l) => {
                let days = (l.not_after - now) / 86_400;
                let what = format!(
                    "certificate {} ({})",
                    p.cert_path.display(),
                    l.names.join(", ")
                );
                if l.not_after <= now {
                    out.push(Finding::fail(format!("{what} has expired")));
                } else if days < EXPIRY_WARNING_DAYS {
                    out.push(Finding::warn(format!("{what} expires in {days} days")));
                } else {
                    out.push(Finding::ok(format!("{what} valid for {days} more days")));
                }
                if p.key_mode & 0o077 != 0 {
                    out.push(Finding::warn(format!(
                        "private key {} is readable by others (mode {:o}); chmod 600 it",
                        p.key_path.display(),
                        p.key_mode & 0o777
                    )));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_certbot_and_acme_client_layouts() {
        let root = tempfile::tempdir().unwrap();
        let le = root.path().join("live");
        let ssl = root.path().join("ssl");
        std::fs::create_dir_all(le.join("example.org")).unwrap();
        std::fs::create_dir_all(ssl.join("private")).unwrap();
        for f in ["fullchain.pem", "privkey.pem"] {
            std::fs::write(le.join("example.org").join(f), "").unwrap();
        }
        std::fs::write(ssl.join("example.net.fullchain.pem"), "").unwrap();
        std::fs::write(ssl.join("private/example.net.key"), "").unwrap();
        std::fs::write(ssl.join("orphan.fullchain.pem"), "").unwrap();
        let found = discover(&le, &ssl);
        let certs: Vec<_> = found
            .iter()
            .map(|p| p.cert.strip_prefix(root.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            certs,
            [
                PathBuf::from("live/example.org/fullchain.pem"),
                PathBuf::from("ssl/example.net.fullchain.pem")
            ]
        );
    }

    #[test]
    fn mismatched_key_is_a_clear_error() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let pair = PemPair {
            cert_path: "a.pem".into(),
            key_path: "b.key".into(),
            cert_pem: a.cert.pem(),
            key_pem: b.signing_key.serialize_pem(),
            key_mode: 0o600,
        };
        let err = format!("{:#}", parse(&pair).err().expect("mismatch detected"));
        assert!(
            err.contains("b.key does not match certificate a.pem"),
            "{err}"
        );
        let good = PemPair {
            key_pem: a.signing_key.serialize_pem(),
            ..pair
        };
        assert_eq!(parse(&good).unwrap().names, ["a.example"]);
    }
}
