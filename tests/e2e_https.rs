//! HTTPS through the firewall redirect on 443: the site's own certificates (from a CA made in
//! the test), chosen by SNI, HTTP/2 by ALPN, renewed on SIGHUP; no certificate means 443 is
//! left alone, never a self-signed surprise.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::site::Site;
use support::{have_root, stderr, stdout};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Ca { issuer, pem }
    }

    /// Writes `<name>.crt` and `<name>.key` (mode 600) for a leaf certificate.
    fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (c, k)
    }
}

fn tls_config(pairs: &[(PathBuf, PathBuf)]) -> String {
    let list: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "[tls]\ndiscover = false\ncertificates = [{}]\n",
        list.join(", ")
    )
}

/// `curl` from the public client to `name` pinned at `addr` on 443, verifying against `ca`.
fn https(site: &Site, name: &str, addr: &str, ca: &Path) -> String {
    let resolve = format!("{name}:443:{addr}");
    let out = site.lab.run(
        &site.lab.public.ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &format!("https://{name}/account"),
        ],
    );
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn https_is_served_through_the_redirect_with_sni_and_http2() {
    if !have_root("https_is_served_through_the_redirect_with_sni_and_http2") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "test-ca");
    let shop = ca.issue(certs.path(), "shop.example");
    let blog = ca.issue(certs.path(), "blog.example");
    let site = Site::with_config(&tls_config(&[shop, blog]));
    let on = site.maint_json(&["on", "--except", "office"]);
    assert!(
        on["ports"].to_string().contains("443"),
        "443 is redirected: {on}"
    );

    for addr in ["198.51.100.1", "[2001:db8:100::1]"] {
        // Verified against the test CA by name: the right certificate for each SNI name.
        assert_eq!(
            https(&site, "shop.example", addr, &ca.pem),
            "2 503",
            "shop.example via {addr}"
        );
        assert_eq!(
            https(&site, "blog.example", addr, &ca.pem),
            "2 503",
            "blog.example via {addr}"
        );
    }
    // HTTP/1.1 clients too.
    let out = site.lab.run(
        &site.lab.public.ns,
        &[
            "curl",
            "-sS",
            "--http1.1",
            "--max-time",
            "5",
            "--cacert",
            ca.pem.to_str().unwrap(),
            "--resolve",
            "shop.example:443:198.51.100.1",
            "-w",
            "%{http_version} %{http_code}",
            "-o",
            "/dev/null",
            "https://shop.example/",
        ],
    );
    assert_eq!(stdout(&out), "1.1 503");
    // Plain HTTP spoken to the TLS port is closed without harming others.
    let plain = site.lab.run(
        &site.lab.public.ns,
        &["curl", "-s", "--max-time", "3", "http://198.51.100.1:443/"],
    );
    assert!(!plain.status.success());
    assert_eq!(
        https(&site, "shop.example", "198.51.100.1", &ca.pem),
        "2 503"
    );
    site.maint_ok(&["off"]);
}

#[test]
fn sighup_picks_up_a_renewed_certificate() {
    if !have_root("sighup_picks_up_a_renewed_certificate") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(certs.path(), "old-ca");
    let pair = old_ca.issue(certs.path(), "shop.example");
    let site = Site::with_config(&tls_config(std::slice::from_ref(&pair)));
    site.maint_ok(&["on"]);
    assert_eq!(
        https(&site, "shop.example", "198.51.100.1", &old_ca.pem),
        "2 503"
    );

    // Renewal: a certificate from another CA lands in the same files (root-only key).
    let new_ca = Ca::new(certs.path(), "new-ca");
    let renewed = new_ca.issue(certs.path(), "shop.example");
    std::fs::rename(&renewed.0, &pair.0).unwrap();
    std::fs::rename(&renewed.1, &pair.1).unwrap();
    let pid = site.maint_json(&["status"])["server"]["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    site.wait_until(|s| https(s, "shop.example", "198.51.100.1", &new_ca.pem) == "2 503");
    assert!(
        https(&site, "shop.example", "198.51.100.1", &old_ca.pem).contains("certificate"),
        "the old certificate is gone"
    );

    // A broken renewal keeps the working certificate.
    std::fs::write(&pair.1, "not a key").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        https(&site, "shop.example", "198.51.100.1", &new_ca.pem),
        "2 503"
    );
    site.maint_ok(&["off"]);
}

#[test]
fn without_a_certificate_443_is_left_alone() {
    if !have_root("without_a_certificate_443_is_left_alone") {
        return;
    }
    let site = Site::with_config("[tls]\ndiscover = false\n");
    let out = site.maint_ok(&["--json", "on"]);
    let on: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        on["ports"],
        serde_json::json!([{ "public": 80, "server": 503 }]),
        "{on}"
    );
    assert!(
        stderr(&out).contains("port 443 not redirected: no certificate"),
        "{}",
        stderr(&out)
    );
    assert!(
        !site.lab.ruleset().contains("dport 443"),
        "{}",
        site.lab.ruleset()
    );
    let check = site.maint(&["check"]);
    assert!(
        stdout(&check).contains("HTTPS: no certificate"),
        "{}",
        stdout(&check)
    );
    site.maint_ok(&["off"]);
}

#[test]
fn a_mismatched_key_is_a_clear_error() {
    if !have_root("a_mismatched_key_is_a_clear_error") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "test-ca");
    let (shop_cert, _) = ca.issue(certs.path(), "shop.example");
    let (_, blog_key) = ca.issue(certs.path(), "blog.example");
    let site = Site::with_config(&tls_config(&[(shop_cert, blog_key.clone())]));
    let check = site.maint(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    let text = stdout(&check);
    assert!(
        text.contains(&format!(
            "private key {} does not match certificate",
            blog_key.display()
        )),
        "{text}"
    );
    let on = site.maint(&["on"]);
    assert!(on.status.success());
    assert!(stderr(&on).contains("does not match"), "{}", stderr(&on));
    assert!(!site.lab.ruleset().contains("dport 443"));
    site.maint_ok(&["off"]);
}
