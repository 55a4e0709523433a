//! Pass links and drains end to end on Linux: real namespaces, the real `maint` binary (its
//! server unprivileged, its keeper root), a real app, real clients (curl, raw sockets).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::site::{is_app, is_maintenance, Site};
use support::{have_root, stderr, stdout};

/// `maint --json pass new ARGS`: (id, link path).
fn new_pass(site: &Site, args: &[&str]) -> (String, String) {
    let mut all = vec!["pass", "new"];
    all.extend_from_slice(args);
    let made = site.maint_json(&all);
    let path = made["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/.maint/pass/"), "{made}");
    assert_eq!(
        path.len(),
        "/.maint/pass/".len() + 32,
        "128-bit token: {made}"
    );
    (made["id"].as_str().unwrap().to_owned(), path)
}

/// Opens a link from `ns` with curl: (status, Location, Connection).
fn open_link(site: &Site, ns: &str, url: &str, extra: &[&str]) -> (u16, String, String) {
    let mut args = vec![
        "curl",
        "-s",
        "-g",
        "--max-time",
        "8",
        "-D",
        "-",
        "-o",
        "/dev/null",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = site.lab.run(ns, &args);
    let head = stdout(&out);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let field = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    (status, field("location"), field("connection"))
}

fn pass_set(site: &Site, set: &str) -> String {
    stdout(&site.lab.exec(
        &site.lab.server.ns,
        &["nft", "list", "set", "inet", "maint", set],
    ))
}

#[test]
fn a_pass_link_lets_one_client_through_until_it_is_revoked_or_ends() {
    if !have_root("a_pass_link_lets_one_client_through") {
        return;
    }
    let site = Site::new();
    let on = site.maint_json(&["on", "--reason", "upgrade"]);
    assert_eq!(on["active"], true);
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    assert!(is_maintenance(&site.get_office(&site.off4())));

    let (id, path) = new_pass(&site, &["--note", "QA team"]);
    // A visitor opens the link on the page: 303 to `/`, and the connection closes.
    let link = format!("http://{}{path}", site.lab.server_public_v4);
    let (status, location, connection) = open_link(&site, &site.lab.public.ns, &link, &[]);
    assert_eq!(
        (status, location.as_str(), connection.as_str()),
        (303, "/", "close")
    );
    // That visitor reaches the app; the other client still sees the page.
    assert!(
        is_app(&site.get_public(&site.pub4())),
        "the passed client reaches the app"
    );
    assert!(
        is_maintenance(&site.get_office(&site.off4())),
        "another client still sees the page"
    );
    assert!(pass_set(&site, "pass4").contains("198.51.100.10"));

    // status and pass list show the pass and whom it let through, never the token.
    let status = site.maint_json(&["status"]);
    let passes = status["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 1, "{status}");
    assert_eq!(passes[0]["id"], id.as_str());
    assert_eq!(passes[0]["note"], "QA team");
    assert_eq!(passes[0]["admitted"][0]["net"], "198.51.100.10/32");
    let token = &path["/.maint/pass/".len()..];
    let listed = stdout(&site.maint_ok(&["pass", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("198.51.100.10/32"),
        "{listed}"
    );
    assert!(!listed.contains(token));
    let text_status = stdout(&site.maint(&["status"]));
    assert!(
        text_status.contains(&format!("pass:        {id}")),
        "{text_status}"
    );
    let book = std::fs::read_to_string(site.dir.path().join("state/passes.json")).unwrap();
    assert!(
        !book.contains(token),
        "the book keeps the token's digest only"
    );

    // Revoke: within a second the client sees the page again.
    let t0 = Instant::now();
    site.maint_ok(&["pass", "revoke", &id]);
    let seen = site.get_public(&site.pub4());
    let took = t0.elapsed();
    println!("revoke took effect after {took:?}");
    assert!(is_maintenance(&seen), "after revoke: {seen:?}");
    assert!(took < Duration::from_secs(1), "revoke took {took:?}");
    assert!(!pass_set(&site, "pass4").contains("198.51.100.10"));
    // The revoked link now gets the page.
    let (status, _, _) = open_link(&site, &site.lab.public.ns, &link, &[]);
    assert_eq!(status, 503);
    assert!(is_maintenance(&site.get_public(&site.pub4())));

    // A pass with a short life ends by itself.
    let (_, short) = new_pass(&site, &["--for", "3s"]);
    let link = format!("http://{}{short}", site.lab.server_public_v4);
    assert_eq!(open_link(&site, &site.lab.public.ns, &link, &[]).0, 303);
    assert!(is_app(&site.get_public(&site.pub4())));
    std::thread::sleep(Duration::from_secs(4));
    let after = site.get_public(&site.pub4());
    assert!(is_maintenance(&after), "after its end: {after:?}");

    // A pass belongs to its maintenance: `off` ends it.
    let (_, path) = new_pass(&site, &[]);
    site.maint_ok(&["off"]);
    assert!(site.maint_json(&["status"])["passes"]
        .as_array()
        .unwrap()
        .is_empty());
    site.maint_ok(&["on"]);
    let link = format!("http://{}{path}", site.lab.server_public_v4);
    assert_eq!(open_link(&site, &site.lab.public.ns, &link, &[]).0, 503);
    site.maint_ok(&["off"]);
}

#[test]
fn an_ipv6_client_gets_its_64_through_over_https_too() {
    if !have_root("an_ipv6_client_gets_its_64_through") {
        return;
    }
    let site = Site::with_config("[tls]\nself_signed = true\n");
    site.maint_ok(&["on"]);
    // A pass made while maintenance is off belongs to the next one.
    let (_, path) = new_pass(&site, &["--for", "1h"]);
    site.maint_ok(&["off"]);
    let (_, path_off) = new_pass(&site, &[]);
    site.maint_ok(&["on"]);
    // The first pass ended with the maintenance it was made for.
    let old = format!("http://[{}]{path}", site.lab.server_public_v6);
    assert_eq!(open_link(&site, &site.lab.public.ns, &old, &[]).0, 503);

    // Over HTTPS (the built-in self-signed certificate), from IPv6.
    let link = format!("https://[{}]{path_off}", site.lab.server_public_v6);
    let (status, location, _) = open_link(&site, &site.lab.public.ns, &link, &["-k"]);
    assert_eq!((status, location.as_str()), (303, "/"));
    assert!(pass_set(&site, "pass6").contains("2001:db8:100::/64"));
    assert!(is_app(&site.get_public(&site.pub6())));
    // Another address of the same /64 gets through; the same address family elsewhere not.
    site.lab.exec(
        &site.lab.public.ns,
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:100::77/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let other = site.get(
        &site.lab.public.ns,
        &site.pub6(),
        &["--interface", "2001:db8:100::77"],
    );
    assert!(is_app(&other), "another address of the /64: {other:?}");
    assert!(is_maintenance(&site.get_office(&site.off6())));
    // IPv4 of the same client was not let through.
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    site.maint_ok(&["off"]);
}

/// Sends one request line to the keeper's socket (in the server's namespace) and returns its
/// answer.
fn ask_keeper(site: &Site, line: Vec<u8>) -> String {
    let name = format!(
        "maint-admit:{}",
        site.dir.path().join("run").to_string_lossy()
    );
    site.lab
        .in_ns(&site.lab.server.ns, move || {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            // The keeper starts with the server that `on` started a moment ago.
            let t0 = Instant::now();
            let mut s = loop {
                match std::os::unix::net::UnixStream::connect_addr(&addr) {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() > Duration::from_secs(5) => {
                        return format!("no keeper: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(&line);
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .join()
        .unwrap()
}

#[test]
fn the_keeper_refuses_every_request_but_one_visitor_with_a_valid_pass() {
    if !have_root("the_keeper_refuses_every_request") {
        return;
    }
    let site = Site::with_config("[pass]\nadmissions_per_minute = 2\n");
    site.maint_ok(&["on"]);
    let (_, path) = new_pass(&site, &[]);
    let token = path["/.maint/pass/".len()..].to_owned();
    let unknown = "0123456789abcdef".repeat(2);
    let refused: Vec<(&str, String)> = vec![
        ("malformed", "hello\n".into()),
        (
            "malformed",
            format!("admit pass4 198.51.100.10/32 {token}\n"),
        ),
        (
            "malformed",
            format!("admit pass4 198.51.100.10/32 {token} 198.51.100.10:1 extra\n"),
        ),
        (
            "malformed",
            format!(
                "admit pass4 198.51.100.10/32 {} 198.51.100.10:1\n",
                token.to_uppercase()
            ),
        ),
        (
            "malformed",
            format!("admit pass4 {} {token} 198.51.100.10:1\n", "1".repeat(300)),
        ),
        // Another set: the sources, the exceptions, or the other family's pass set.
        (
            "set",
            format!("admit src4 198.51.100.10/32 {token} 198.51.100.10:1\n"),
        ),
        (
            "set",
            format!("admit exc4 198.51.100.10/32 {token} 198.51.100.10:1\n"),
        ),
        (
            "set",
            format!("admit pass6 198.51.100.10/32 {token} 198.51.100.10:1\n"),
        ),
        // Wider than configured, not a network address, or not holding the asking client.
        (
            "prefix",
            format!("admit pass4 198.51.100.0/24 {token} 198.51.100.10:1\n"),
        ),
        (
            "prefix",
            format!("admit pass4 0.0.0.0/0 {token} 198.51.100.10:1\n"),
        ),
        (
            "prefix",
            format!("admit pass6 2001:db8::/32 {token} [2001:db8::1]:1\n"),
        ),
        (
            "prefix",
            format!("admit pass6 2001:db8:100::10/64 {token} [2001:db8:100::10]:1\n"),
        ),
        (
            "prefix",
            format!("admit pass4 198.51.100.10/32 {token} 203.0.113.10:1\n"),
        ),
        // No pass has this token.
        (
            "token",
            format!("admit pass4 198.51.100.10/32 {unknown} 198.51.100.10:1\n"),
        ),
    ];
    for (why, line) in &refused {
        let answer = ask_keeper(&site, line.clone().into_bytes());
        assert!(
            answer.starts_with(&format!("refused {why}")),
            "{line:?} → {answer:?}"
        );
    }
    // Nothing was added anywhere.
    assert!(!pass_set(&site, "pass4").contains("elements"));
    assert!(!pass_set(&site, "pass6").contains("elements"));

    // A line that never ends is cut off at its length limit.
    let endless = ask_keeper(&site, vec![b'a'; 4096]);
    assert!(endless.starts_with("refused malformed"), "{endless:?}");

    // A user that is neither root nor the server's: refused by its credentials, before the
    // keeper reads a byte (so its send may meet a closed socket; the answer is there).
    let name = format!("maint-admit:{}", site.dir.path().join("run").display());
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0{name}')\n\
         try:\n s.sendall(b'admit pass4 198.51.100.10/32 {token} 198.51.100.10:1\\n')\n\
         except BrokenPipeError:\n pass\n\
         print(s.recv(300).decode())"
    );
    let other = site.lab.run(
        &site.lab.server.ns,
        &[
            "setpriv",
            "--reuid=4242",
            "--regid=4242",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ],
    );
    assert!(
        stdout(&other).starts_with("refused peer"),
        "{} {}",
        stdout(&other),
        stderr(&other)
    );

    // Two admissions a minute are allowed here; the third is refused.
    for last in [21, 22] {
        let ok = ask_keeper(
            &site,
            format!("admit pass4 198.51.100.{last}/32 {token} 198.51.100.{last}:1\n").into_bytes(),
        );
        assert!(ok.starts_with("ok "), "{ok}");
    }
    let third = ask_keeper(
        &site,
        format!("admit pass4 198.51.100.23/32 {token} 198.51.100.23:1\n").into_bytes(),
    );
    assert!(third.starts_with("refused rate"), "{third}");
    let set = pass_set(&site, "pass4");
    assert!(
        set.contains("198.51.100.21") && set.contains("198.51.100.22"),
        "{set}"
    );
    assert!(!set.contains("198.51.100.23"), "{set}");

    // Maintenance off: nothing to let anyone through to.
    site.maint_ok(&["off"]);
    let (_, path) = new_pass(&site, &[]);
    let token = &path["/.maint/pass/".len()..];
    let off = ask_keeper(
        &site,
        format!("admit pass4 198.51.100.10/32 {token} 198.51.100.10:1\n").into_bytes(),
    );
    // With no server running the keeper is gone too: connecting fails or it says "off".
    assert!(
        off.starts_with("no keeper") || off.starts_with("refused off"),
        "{off}"
    );
}

/// Uploads `total` bytes to the app from the public client, `chunk` bytes every 100 ms, on
/// one connection opened now; returns the app's answer, or what went wrong, and when.
fn slow_upload(
    site: &Site,
    total: usize,
    chunk: usize,
) -> std::thread::JoinHandle<(Result<String, String>, Duration)> {
    let server: SocketAddr = format!("{}:80", site.lab.server_public_v4).parse().unwrap();
    site.lab.in_ns(&site.lab.public.ns, move || {
        let t0 = Instant::now();
        let result = (|| -> Result<String, String> {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            write!(
                s,
                "POST /upload HTTP/1.1\r\nHost: site\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
            )
            .map_err(|e| format!("head: {e}"))?;
            let mut sent = 0;
            while sent < total {
                let n = chunk.min(total - sent);
                s.write_all(&vec![b'x'; n])
                    .map_err(|e| format!("after {sent} bytes: {e}"))?;
                sent += n;
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut answer = String::new();
            s.read_to_string(&mut answer)
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok(answer)
        })();
        (result, t0.elapsed())
    })
}

fn drain_case(firewall: bool) {
    let site = Site::build("", firewall);
    // Two uploads open on the app: one needs about 3 s, the other about 8 s.
    let short = slow_upload(&site, 30 * 1000, 1000);
    let long = slow_upload(&site, 80 * 1000, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let on = std::process::Command::new("ip")
        .args(["netns", "exec", &site.lab.server.ns, support::maint_bin()])
        .args([
            "--config",
            site.config.to_str().unwrap(),
            "--json",
            "on",
            "--drain",
            "5s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // During the drain a new connection sees the page, and `status` shows the drain.
    std::thread::sleep(Duration::from_millis(1500));
    let during = site.get_public(&site.pub4());
    assert!(
        is_maintenance(&during),
        "a new connection during the drain: {during:?}"
    );
    let status = site.maint_json(&["status"]);
    assert!(status["drain_until"].is_string(), "{status}");

    let on = on.wait_with_output().unwrap();
    let waited = t0.elapsed();
    assert!(on.status.success(), "{}", stderr(&on));
    let report: serde_json::Value = serde_json::from_slice(&on.stdout).unwrap();
    println!("on --drain 5s returned after {waited:?}: {report}");
    assert!(
        waited >= Duration::from_secs(4),
        "on waited for the drain: {waited:?}"
    );
    assert!(report["drain_cut"].as_u64().unwrap() >= 1, "{report}");

    let (short, short_took) = short.join().unwrap();
    let (long, long_took) = long.join().unwrap();
    println!(
        "short upload: {short:?} after {short_took:?}; long upload: {long:?} after {long_took:?}"
    );
    let short = short.expect("the upload under 5 s completes");
    assert!(short.contains("UPLOAD OK 30000"), "{short}");
    let long = long.expect_err("the upload over 5 s is cut");
    assert!(
        long_took < Duration::from_millis(7500),
        "cut at the drain's end, not at its own: {long} after {long_took:?}"
    );
    // After the drain, the drain is gone from status and everyone sees the page.
    let status = site.maint_json(&["status"]);
    assert!(status["drain_until"].is_null(), "{status}");
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    site.maint_ok(&["off"]);
}

#[test]
fn a_drain_lets_open_uploads_finish_on_a_host_that_tracked_nothing_before() {
    if !have_root("a_drain_lets_open_uploads_finish_untracked") {
        return;
    }
    drain_case(false);
}

#[test]
fn a_drain_lets_open_uploads_finish_behind_a_stateful_host_firewall() {
    if !have_root("a_drain_lets_open_uploads_finish_stateful") {
        return;
    }
    drain_case(true);
}

#[test]
fn check_warns_when_the_clients_come_from_proxy_ranges() {
    if !have_root("check_warns_when_the_clients_come_from_proxy_ranges") {
        return;
    }
    // The public network plays a CDN here.
    let site = Site::with_config("[pass]\nproxies = [\"198.51.100.0/24\"]\n");
    let quiet = stdout(&site.maint(&["check"]));
    assert!(
        quiet.contains("none of the 0 client connection(s) to port(s) 80"),
        "{quiet}"
    );
    // A visitor's connection from the proxy range, kept open while `check` looks.
    let server: SocketAddr = format!("{}:80", site.lab.server_public_v4).parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = site.lab.in_ns(&site.lab.public.ns, move || {
        let mut s = TcpStream::connect(server).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        ready_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let out = site.maint(&["check"]);
    let text = stdout(&out);
    let _ = done_tx.send(());
    client.join().unwrap();
    assert!(
        text.contains("1 of 1 client connection(s) to port(s) 80 come from [pass] proxies (e.g. 198.51.100.10)"),
        "{text}"
    );
    assert!(
        text.contains("pass links cannot single out a tester"),
        "{text}"
    );
}
