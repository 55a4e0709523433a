//! The maintenance server as visitors and operators meet it: the real `maint serve` binary,
//! real curl, raw sockets for the hostile cases.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

#[test]
fn every_method_and_path_gets_the_maintenance_page() {
    let s = TestServer::start("");
    for path in [
        "/",
        "/login",
        "/app?view=dashboard",
        "/a/b/c.php",
        "/%7Efoo/..;/x",
    ] {
        for method in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND",
        ] {
            let out = curl(&["-i", "-X", method, "--data-binary", "x=1", &s.url(path)]);
            let text = stdout(&out);
            assert!(text.starts_with("HTTP/1.1 503"), "{method} {path}: {text}");
            assert!(text.contains("Down for maintenance"), "{method} {path}");
        }
    }
}

#[test]
fn headers_are_right_for_a_maintenance_response() {
    let s = TestServer::start("");
    let get = stdout(&curl(&["-i", &s.url("/login")]));
    let (head, body) = get.split_once("\r\n\r\n").unwrap();
    assert_eq!(header(head, "retry-after"), Some("300"));
    assert_eq!(header(head, "cache-control"), Some("no-store"));
    assert_eq!(header(head, "vary"), Some("Accept"));
    assert_eq!(
        header(head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(head, "content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        body.len()
    );
    assert!(
        body.contains("<meta name=\"viewport\""),
        "a page that works on phones"
    );
    assert!(
        body.contains("x-maintenance"),
        "the page polls to return visitors by itself"
    );

    // HEAD: the same headers, the length GET would have, no body.
    let head_only = raw(
        s.addr(),
        b"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(head_only.starts_with("HTTP/1.1 503"), "{head_only}");
    assert_eq!(
        header(&head_only, "content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        body.len()
    );
    assert!(
        head_only.ends_with("\r\n\r\n"),
        "HEAD must carry no body: {head_only:?}"
    );
}

#[test]
fn content_negotiation_html_json_text() {
    let s = TestServer::start("[page]\nreason = \"Upgrading the database\"\n");
    let json = curl(&[
        "-i",
        "-H",
        "Accept: application/json",
        &s.url("/api/v1/items"),
    ]);
    let json = stdout(&json);
    let (head, body) = json.split_once("\r\n\r\n").unwrap();
    assert_eq!(header(head, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["status"], "maintenance");
    assert_eq!(v["code"], 503);
    assert_eq!(v["reason"], "Upgrading the database");
    assert_eq!(v["retry_after"], 300);
    assert!(v["until"].is_null());

    let text = stdout(&curl(&["-i", "-H", "Accept: text/plain", &s.url("/")]));
    assert!(
        text.contains("content-type: text/plain; charset=utf-8"),
        "{text}"
    );
    assert!(
        text.contains("Upgrading the database") && !text.contains("<html"),
        "{text}"
    );

    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let html = stdout(&curl(&[
        "-i",
        "-H",
        &format!("Accept: {browser}"),
        &s.url("/"),
    ]));
    assert!(html.contains("content-type: text/html") && html.contains("Upgrading the database"));
}

#[test]
fn window_drives_retry_after_json_and_page() {
    let s = TestServer::start("");
    // 2026-12-01T02:00:00Z, far enough ahead for this test's lifetime.
    let until = 1_796_090_400u64;
    let answer = control(
        &s.socket(),
        &format!(r#"{{"op":"set_window","until":{until},"reason":"Moving to new hardware"}}"#),
    );
    assert_eq!(answer["status"]["window"]["until"], until);
    let out = stdout(&curl(&["-i", &s.url("/")]));
    assert!(
        out.contains("retry-after: Tue, 01 Dec 2026 02:00:00 GMT"),
        "{out}"
    );
    assert!(
        out.contains("Moving to new hardware") && out.contains("2026-12-01 02:00 UTC"),
        "{out}"
    );
    let json = stdout(&curl(&["-H", "Accept: application/json", &s.url("/")]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["until"], "2026-12-01T02:00:00Z");
    let left = v["retry_after"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        left <= until - now && left + 5 >= until - now,
        "retry_after counts down: {left}"
    );
}

#[test]
fn custom_template_and_assets() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("page.html");
    std::fs::write(
        &tpl,
        "<html><head><link rel=stylesheet href=\"{{ assets }}site.css\"></head><body>\
         <h1>{{ title }}</h1><p id=r>{{ reason }}</p><p id=c>{{ contact }}</p></body></html>",
    )
    .unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("img")).unwrap();
    std::fs::write(assets.join("site.css"), "body { color: teal }").unwrap();
    std::fs::write(assets.join("img/logo.svg"), "<svg/>").unwrap();
    let s = TestServer::start(&format!(
        "[page]\ntitle = \"Example Shop\"\ncontact = \"ops@example.org\"\ntemplate = \"{}\"\nassets = \"{}\"\n",
        tpl.display(),
        assets.display()
    ));
    let page = stdout(&curl(&[&s.url("/checkout")]));
    assert!(page.contains("<h1>Example Shop</h1>"), "{page}");
    assert!(page.contains("<p id=c>ops@example.org</p>"), "{page}");
    assert!(page.contains("href=\"/.maint/site.css\""), "{page}");
    assert!(
        page.contains("var waitPath = \"/.maint/wait\";"),
        "the page's script is added to custom pages too"
    );

    let css = stdout(&curl(&["-i", &s.url("/.maint/site.css")]));
    assert!(
        css.starts_with("HTTP/1.1 200") && css.contains("content-type: text/css"),
        "{css}"
    );
    assert!(css.ends_with("body { color: teal }"));
    let svg = stdout(&curl(&["-i", &s.url("/.maint/img/logo.svg")]));
    assert!(svg.contains("content-type: image/svg+xml"), "{svg}");
    let missing = stdout(&curl(&["-i", &s.url("/.maint/nope.js")]));
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn sighup_reloads_the_page_and_keeps_it_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("page.html");
    std::fs::write(&tpl, "<body>first version</body>").unwrap();
    let s = TestServer::start(&format!("[page]\ntemplate = \"{}\"\n", tpl.display()));
    // A keep-alive connection opened before the reload must survive it.
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    conn.write_all(ask).unwrap();
    assert!(read_response(&mut conn).contains("first version"));

    std::fs::write(&tpl, "<body>second version</body>").unwrap();
    s.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(5), "the new page after SIGHUP", || {
        stdout(&curl(&[&s.url("/")])).contains("second version")
    });
    conn.write_all(ask).unwrap();
    assert!(
        read_response(&mut conn).contains("second version"),
        "same connection, new page"
    );

    std::fs::write(&tpl, "<body>{% if broken </body>").unwrap();
    s.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(5), "a failed reload in the log", || {
        s.log().contains("reload failed")
    });
    assert!(stdout(&curl(&[&s.url("/")])).contains("second version"));
    assert!(
        s.log().contains("keeping the previous config"),
        "{}",
        s.log()
    );
}

#[test]
fn sigterm_drains_and_exits() {
    let mut s = TestServer::start("[server]\ndrain_timeout = \"3s\"\n");
    let mut idle = TcpStream::connect(s.addr()).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    read_response(&mut idle);
    let started = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{status}: {}", s.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exits within the drain timeout"
    );
    assert!(TcpStream::connect(s.addr()).is_err(), "no longer accepting");
    assert!(s.log().contains("SIGTERM: draining"));
}

#[test]
fn port_in_use_is_a_clear_error() {
    let s = TestServer::configure("");
    let _taken = std::net::TcpListener::bind(("127.0.0.1", s.http_port)).unwrap();
    let out = s.maint(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{}", s.http_port)) && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn bad_config_names_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("maint.toml");
    std::fs::write(&cfg, "[server]\nhttp_port = 8080\nlisten_on = [\"::\"]\n").unwrap();
    let out = std::process::Command::new(maint_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("listen_on") && err.contains("line 3") && err.contains(cfg.to_str().unwrap()),
        "{err}"
    );

    let missing = std::process::Command::new(maint_bin())
        .args(["--config", "/nonexistent/maint.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/maint.toml"));
}

#[test]
fn malformed_requests_do_not_hurt_the_server() {
    let s = TestServer::start("");
    // Each gets an answer and a close: a 400 for what is not HTTP/1.x (or frames its body
    // ambiguously), the page for a request whose body is never read.
    let junk: [(&[u8], &str); 7] = [
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (b"GET / HTTP/9.9\r\n\r\n", "HTTP/1.1 400"),
        (b"GET\r\n\r\n", "HTTP/1.1 400"),
        (b"\x00\xff\xfe\r\n\r\n", "HTTP/1.1 400"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzzzz\r\n",
            "HTTP/1.1 503",
        ),
    ];
    for (j, status) in junk {
        let answer = raw(s.addr(), j, Duration::from_secs(3));
        assert!(answer.starts_with(status), "{j:?}: {answer:?}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{j:?}: {answer:?}"
        );
    }
    // An oversized head is refused, not buffered without bound.
    let mut huge = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let answer = raw(s.addr(), &huge, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert!(
        stdout(&curl(&["-i", &s.url("/")])).starts_with("HTTP/1.1 503"),
        "still serving"
    );
}

#[test]
fn slow_header_client_is_cut_off_while_others_are_served() {
    let s = TestServer::start("[server]\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\n");
    let mut slow = TcpStream::connect(s.addr()).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let t = Instant::now();
    // Meanwhile others are served promptly.
    for _ in 0..5 {
        assert!(stdout(&curl(&["-i", &s.url("/")])).starts_with("HTTP/1.1 503"));
    }
    slow.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "slowloris connection held {waited:?}"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("503"),
        "no answer for an unfinished head"
    );

    // An idle keep-alive connection is closed after idle_timeout.
    let mut idle = TcpStream::connect(s.addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    read_response(&mut idle);
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "idle connection held {:?}",
        t.elapsed()
    );
}

#[test]
fn connection_limit_holds_extra_clients_back() {
    let s = TestServer::start(
        "[server]\nmax_connections = 2\nidle_timeout = \"30s\"\nheader_timeout = \"30s\"\n",
    );
    let a = TcpStream::connect(s.addr()).unwrap();
    let b = TcpStream::connect(s.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The third connects (kernel backlog) but is not served while two are open.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    assert!(c.read(&mut buf).is_err(), "served beyond max_connections");
    drop(a);
    drop(b);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_response(&mut c).starts_with("HTTP/1.1 503"));
}

/// The real, effective, saved and filesystem uids of process `pid`.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {name}"))
        .uid
        .as_raw()
}

#[test]
fn runs_unprivileged_after_binding_when_started_as_root() {
    if !have_root("runs_unprivileged_after_binding_when_started_as_root") {
        return;
    }
    // A user of its own (tests may not create users in /etc/passwd, so `daemon`, which no
    // test process runs as, stands in for `maint`).
    let s = TestServer::start("[server]\nuser = \"daemon\"\n");
    // The port accepts connections from listen(2) on, a moment before privileges are dropped.
    wait_until(Duration::from_secs(5), "privileges dropped", || {
        s.log().contains("dropped privileges")
    });
    let pid = s.child.as_ref().unwrap().id();
    assert_eq!(uids(pid), vec![uid_of("daemon"); 4], "all four uids");
    // And it still serves.
    assert!(stdout(&curl(&["-i", &s.url("/")])).starts_with("HTTP/1.1 503"));
    // Processes of other users, `nobody` included, cannot signal it.
    let kill = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(["kill", "-HUP", &pid.to_string()])
        .output()
        .unwrap();
    assert!(!kill.status.success(), "nobody signalled the server");
    assert!(
        stderr(&kill).contains("Operation not permitted"),
        "{}",
        stderr(&kill)
    );
    assert!(!s.log().contains("SIGHUP"), "{}", s.log());
}

#[test]
fn without_its_own_user_the_server_shares_nobody_and_says_so() {
    if !have_root("without_its_own_user_the_server_shares_nobody_and_says_so") {
        return;
    }
    if nix::unistd::User::from_name("maint").unwrap().is_some() {
        eprintln!("SKIPPED: this machine has a user `maint`, so there is no fallback to see");
        return;
    }
    let s = TestServer::start("");
    wait_until(Duration::from_secs(5), "privileges dropped", || {
        s.log().contains("dropped privileges")
    });
    let pid = s.child.as_ref().unwrap().id();
    assert_eq!(uids(pid), vec![uid_of("nobody"); 4], "all four uids");
    assert!(
        s.log()
            .contains("runs as \"nobody\", which other processes share"),
        "{}",
        s.log()
    );
    // A configured user that does not exist is an error, not a fallback.
    let bad = TestServer::configure("[server]\nuser = \"no-such-user-maint\"\n");
    let out = std::process::Command::new(maint_bin())
        .args(["--config", bad.config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"no-such-user-maint\" (server.user) does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn world_readable_key_is_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example".into()]).unwrap();
    let (c, k) = (dir.path().join("shop.crt"), dir.path().join("shop.key"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let s = TestServer::configure(&format!(
        "[tls]\ndiscover = false\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        c.display(),
        k.display()
    ));
    let out = s.maint(&["check"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "private key {} is readable by others (mode 644)",
            k.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("shop.example") && text.contains("valid for"),
        "{text}"
    );
}

#[test]
fn status_reads_counters_over_the_control_socket() {
    let s = TestServer::start("");
    for _ in 0..3 {
        curl(&[&s.url("/")]);
    }
    let v = control(&s.socket(), r#"{"op":"status"}"#);
    assert!(v["status"]["requests"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["status"]["http_port"], s.http_port);
    let bad = control(&s.socket(), r#"{"op":"explode"}"#);
    assert!(
        bad["error"].as_str().unwrap().contains("bad request"),
        "{bad}"
    );
}

/// Runs `maint serve` with this server's config and expects it to refuse to start.
fn serve_refuses(s: &TestServer) -> String {
    let mut child = std::process::Command::new(maint_bin())
        .arg("--config")
        .arg(&s.config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("maint serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    stderr(&out)
}

fn assets_config(assets: &std::path::Path) -> String {
    format!("[page]\nassets = \"{}\"\n", assets.display())
}

#[test]
fn assets_are_regular_files_inside_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("site.css"), "body{}").unwrap();
    // A symlink to a file inside the directory is served as that file.
    std::os::unix::fs::symlink(assets.join("site.css"), assets.join("alias.css")).unwrap();
    let s = TestServer::start(&assets_config(&assets));
    assert!(stdout(&curl(&[&s.url("/.maint/alias.css")])).contains("body{}"));
    drop(s);

    // A symlink out of it (to a secret) is refused at start, naming it.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "password=hunter2").unwrap();
    std::os::unix::fs::symlink(&secret, assets.join("leak.txt")).unwrap();
    let s = TestServer::configure(&assets_config(&assets));
    let err = serve_refuses(&s);
    assert!(
        err.contains("leak.txt") && err.contains("inside the assets directory"),
        "{err}"
    );
}

#[test]
fn assets_the_server_user_cannot_read_are_refused_when_started_as_root() {
    if !have_root("assets_the_server_user_cannot_read_are_refused_when_started_as_root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("site.css"), "body{}").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(assets.join("root-only.key"), "secret").unwrap();
    std::fs::set_permissions(
        assets.join("root-only.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let s = TestServer::configure(&assets_config(&assets));
    let err = serve_refuses(&s);
    assert!(
        err.contains("root-only.key") && err.contains("not readable by the server's user"),
        "{err}"
    );
}

#[test]
fn each_configured_site_gets_its_own_page_by_the_name_asked_for() {
    let s = TestServer::start(
        "[page]\ntitle = \"We are down\"\n\n\
         [sites.\"shop.example\"]\ntitle = \"Example Shop is down\"\ncontact = \"ops@shop.example\"\n\n\
         [sites.\"*.blog.example\"]\nreason = \"The blog is moving house.\"\n\n\
         [tls]\ndiscover = false\nself_signed = true\n",
    );
    let page = |host: &str| stdout(&curl(&["-H", &format!("Host: {host}"), &s.url("/")]));
    let shop = page("Shop.Example:80");
    assert!(
        shop.contains("<title>Example Shop is down</title>"),
        "{shop}"
    );
    assert!(shop.contains("href=\"mailto:ops@shop.example\""), "{shop}");
    let blog = page("en.blog.example");
    assert!(blog.contains("<title>We are down</title>"), "{blog}");
    assert!(blog.contains("The blog is moving house."), "{blog}");
    let other = page("other.example");
    assert!(other.contains("<title>We are down</title>"), "{other}");
    assert!(!other.contains("moving house"), "{other}");
    // An absolute-form target names the site too.
    let proxy = raw(
        s.addr(),
        b"GET http://shop.example/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        proxy.contains("<title>Example Shop is down</title>"),
        "{proxy}"
    );
    // Over HTTPS with HTTP/2, by the name in the URL (SNI and :authority).
    let port = s.https_port;
    let h2 = stdout(&curl(&[
        "-sk",
        "--http2",
        "--resolve",
        &format!("shop.example:{port}:127.0.0.1"),
        &format!("https://shop.example:{port}/"),
    ]));
    assert!(h2.contains("<title>Example Shop is down</title>"), "{h2}");
    // A window's reason applies to every site; each keeps its title.
    let until = "{\"op\":\"set_window\",\"until\":null,\"reason\":\"Database upgrade\"}";
    control(&s.socket(), until);
    let shop = page("shop.example");
    assert!(
        shop.contains("Database upgrade") && shop.contains("Example Shop is down"),
        "{shop}"
    );

    // A name that is not a host name is refused, naming it.
    let bad = TestServer::configure("[sites.\"shop example\"]\ntitle = \"x\"\n");
    let out = bad.maint(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"shop example\""),
        "{}",
        stderr(&out)
    );
}
