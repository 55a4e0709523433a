//! `maint on` / `off` / `status` end to end on Linux: real namespaces, the real `maint`
//! binary, a real app on port 80, real clients (curl, and raw keep-alive sockets).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::site::{is_app, is_maintenance, Site};
use support::{have_root, maint_bin, stderr, stdout};

#[test]
fn on_redirects_public_clients_but_not_the_office_over_ipv4_and_ipv6() {
    if !have_root("on_redirects_public_clients_but_not_the_office") {
        return;
    }
    let site = Site::new();
    let host_ruleset_before = host_ruleset();
    assert!(is_app(&site.get_public(&site.pub4())));

    let on = site.maint_json(&["on", "--except", "office"]);
    assert_eq!(on["changed"], true, "{on}");
    assert_eq!(on["active"], true);
    assert!(
        on["server_started"].is_u64(),
        "no server ran, so `on` started one: {on}"
    );

    assert!(
        is_maintenance(&site.get_public(&site.pub4())),
        "public IPv4 gets the page"
    );
    assert!(
        is_maintenance(&site.get_public(&site.pub6())),
        "public IPv6 gets the page"
    );
    assert!(
        is_app(&site.get_office(&site.off4())),
        "office IPv4 still reaches the app"
    );
    assert!(
        is_app(&site.get_office(&site.off6())),
        "office IPv6 still reaches the app"
    );
    // The host itself keeps reaching the app (locally generated traffic is not redirected).
    let local = site.lab.run(
        &site.lab.server.ns,
        &["curl", "-s", "--max-time", "5", "http://198.51.100.1/"],
    );
    assert_eq!(stdout(&local), "APP OK\n");
    // JSON for API clients through the redirect too.
    let (code, body) = site.get(
        &site.lab.public.ns,
        &site.pub4(),
        &["-H", "Accept: application/json"],
    );
    assert_eq!(code, 503);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "maintenance"
    );

    // Idempotent: the same `on` again changes nothing and says so.
    let again = site.maint_json(&["on", "--except", "office"]);
    assert_eq!(again["changed"], false, "{again}");

    let status = site.maint_json(&["status"]);
    assert_eq!(status["active"], true, "{status}");
    assert_eq!(status["backend"], "nftables");
    assert_eq!(status["exceptions"], serde_json::json!(["office"]));
    assert_eq!(
        status["source_prefixes"],
        serde_json::json!(["0.0.0.0/0", "::/0"])
    );
    assert_eq!(status["server"]["healthy"], true, "{status}");
    assert!(
        status["server"]["requests"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");

    let off = site.maint_json(&["off"]);
    assert_eq!(off["changed"], true, "{off}");
    assert!(
        off["server_stopped"].is_u64(),
        "off stops the server on started: {off}"
    );
    for stale in ["run/server.pid", "run/control.sock"] {
        assert!(!site.dir.path().join(stale).exists(), "{stale} left behind");
    }
    assert!(is_app(&site.get_public(&site.pub4())));
    assert!(is_app(&site.get_public(&site.pub6())));
    let after = site.lab.ruleset();
    assert!(
        !after.contains("maint"),
        "off leaves nothing behind: {after}"
    );
    assert!(
        after.contains("table inet host_filter")
            && after.contains("ct state established,related accept"),
        "the host's own table is untouched: {after}"
    );
    assert_eq!(
        site.maint_json(&["off"])["changed"],
        false,
        "off twice changes nothing"
    );
    assert_eq!(
        host_ruleset(),
        host_ruleset_before,
        "the machine's own ruleset is untouched"
    );
}

/// The maintenance server's own port is not a way in from the network.
#[test]
fn server_port_is_not_reachable_directly() {
    if !have_root("server_port_is_not_reachable_directly") {
        return;
    }
    let site = Site::new();
    site.maint_ok(&["on", "--except", "office"]);
    for (ns, url) in [
        (&site.lab.public.ns, "http://198.51.100.1:503/"),
        (&site.lab.office.ns, "http://203.0.113.1:503/"),
        (&site.lab.office.ns, "http://[2001:db8:113::1]:503/"),
    ] {
        let (code, _) = site.get(ns, url, &["--max-time", "2"]);
        assert_eq!(code, 0, "{url} answered from {ns}");
    }
    // A server run by a service manager is used as it is, and `off` leaves it running.
    site.maint_ok(&["off"]);
    let pid = site.lab.spawn(
        &site.lab.server.ns,
        &[
            maint_bin(),
            "--config",
            site.config.to_str().unwrap(),
            "serve",
        ],
    );
    site.wait_until(|s| stdout(&s.maint(&["status"])).contains("healthy"));
    let on = site.maint_json(&["on", "--except", "office"]);
    assert!(
        on["server_started"].is_null(),
        "used the running server: {on}"
    );
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    let off = site.maint_json(&["off"]);
    assert!(off["server_stopped"].is_null(), "{off}");
    // Its port stays closed to the network with maintenance off, too.
    let (code, _) = site.get(
        &site.lab.office.ns,
        "http://203.0.113.1:503/",
        &["--max-time", "2"],
    );
    assert_eq!(
        code, 0,
        "server port answered directly with maintenance off"
    );
    let status = site.maint_json(&["status"]);
    assert!(
        status["server"]["refused_direct"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // `ip netns exec` execs in place, so the pid is the server's own: still running after off.
    assert_eq!(
        status["server"]["pid"].as_u64(),
        Some(u64::from(pid)),
        "{status}"
    );
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok());
}

#[test]
fn concurrent_invocations_are_serialised() {
    if !have_root("concurrent_invocations_are_serialised") {
        return;
    }
    let site = Site::new();
    site.maint_ok(&["on", "--except", "office"]); // server up, so the race is about the table
    let config = site.config.to_str().unwrap().to_string();
    let ns = site.lab.server.ns.clone();
    let runs: Vec<_> = [
        ["on", "198.51.100.0/24"],
        ["on", "2001:db8:100::/48"],
        ["on", "all"],
        ["on", "198.51.100.10"],
    ]
    .into_iter()
    .map(|args| {
        let (config, ns) = (config.clone(), ns.clone());
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    maint_bin(),
                    "--json",
                    "--config",
                    &config,
                ])
                .args(args)
                .output()
                .unwrap()
        })
    })
    .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Whoever ran last, the record and the kernel agree: nothing was interleaved.
    let status = site.maint_json(&["status"]);
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");
    assert_eq!(status["active"], true);
    site.maint_ok(&["off"]);
}

/// A client with an open keep-alive connection to the app moves to the maintenance page on
/// its next request, and back on `off`, whatever nf_conntrack_tcp_loose says.
#[test]
fn open_keepalive_connections_move_over_at_once() {
    if !have_root("open_keepalive_connections_move_over_at_once") {
        return;
    }
    for (loose, firewall) in [("1", true), ("0", true), ("1", false)] {
        let site = Site::build("", firewall);
        // The sysctl is per namespace: this sets the test server's, not the machine's.
        site.lab.exec(
            &site.lab.server.ns,
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_tcp_loose={loose}"),
            ],
        );
        let client = KeptAliveClient::start(&site);
        assert_eq!(client.first, "APP", "loose={loose} firewall={firewall}");
        let on = site.maint_json(&["on"]);
        if firewall {
            assert!(
                on["states_killed"].as_u64().unwrap() >= 1,
                "loose={loose}: the open connection's state was killed: {on}"
            );
        }
        assert_eq!(
            client.next(),
            "MAINTENANCE",
            "loose={loose} firewall={firewall}: the kept-alive client must not linger on the app"
        );
        let off = site.maint_json(&["off"]);
        assert!(
            off["states_killed"].as_u64().unwrap() >= 1,
            "loose={loose} firewall={firewall}: {off}"
        );
        assert_eq!(
            client.next(),
            "APP",
            "loose={loose} firewall={firewall}: back to the app at once after off"
        );
    }
}

#[test]
fn an_added_exception_moves_that_clients_open_connections_back_at_once() {
    if !have_root("an_added_exception_moves_that_clients_open_connections_back_at_once") {
        return;
    }
    let site = Site::new();
    site.maint_ok(&["on"]);
    let client = KeptAliveClient::start(&site);
    assert_eq!(client.first, "MAINTENANCE");
    // The public client (198.51.100.10) is excepted now: its kept-alive connection to the
    // maintenance server must not keep it on the page.
    let on = site.maint_json(&["on", "--except", "198.51.100.10"]);
    assert_eq!(on["changed"], true, "{on}");
    assert!(on["states_killed"].as_u64().unwrap() >= 1, "{on}");
    assert_eq!(client.next(), "APP", "back on the app at once");
    site.maint_ok(&["off"]);
}

/// After `on` kills a matched client's state, the *app's* next segment can win the race and
/// recreate the state in the reverse direction (loose pickup); the client's segments are then
/// replies that NAT never sees. The test builds that state by hand, both before `on` (kill
/// must take it) and after (the firewall must reset the client), and the client must still
/// end up on the maintenance page.
#[test]
fn a_state_picked_up_from_the_apps_side_does_not_keep_the_client_on_the_app() {
    if !have_root("a_state_picked_up_from_the_apps_side") {
        return;
    }
    for when in ["before on", "after on"] {
        let site = Site::new();
        let target = format!("{}:80", site.lab.server_public_v4);
        let (to_client, from_test) = std::sync::mpsc::channel::<()>();
        let (to_test, from_client) = std::sync::mpsc::channel::<(String, u16)>();
        let client = site.lab.in_ns(&site.lab.public.ns, move || {
            let mut conn = KeepAlive::connect(&target);
            let port = conn.conn.local_addr().unwrap().port();
            to_test
                .send((conn.get_retrying_once(&target), port))
                .unwrap();
            from_test.recv().unwrap();
            conn.get_retrying_once(&target)
        });
        let (first, port) = from_client.recv().unwrap();
        assert_eq!(first, "APP");
        let reverse = |site: &Site| {
            let port = port.to_string();
            // (After `on` the kill has already removed it; then there is nothing to delete.)
            site.lab.run(
                &site.lab.server.ns,
                &[
                    "conntrack",
                    "-D",
                    "-p",
                    "tcp",
                    "-s",
                    "198.51.100.10",
                    "--sport",
                    &port,
                ],
            );
            site.lab.exec(
                &site.lab.server.ns,
                &[
                    "conntrack",
                    "-I",
                    "-p",
                    "tcp",
                    "-s",
                    "198.51.100.1",
                    "-d",
                    "198.51.100.10",
                    "--sport",
                    "80",
                    "--dport",
                    &port,
                    "--state",
                    "ESTABLISHED",
                    "-u",
                    "SEEN_REPLY,ASSURED",
                    "-t",
                    "120",
                ],
            );
        };
        if when == "before on" {
            reverse(&site);
            let on = site.maint_json(&["on"]);
            assert!(
                on["states_killed"].as_u64().unwrap() >= 1,
                "{when}: the reversed state is killed: {on}"
            );
        } else {
            site.maint_ok(&["on"]);
            reverse(&site);
        }
        to_client.send(()).unwrap();
        assert_eq!(client.join().unwrap(), "MAINTENANCE", "{when}");
        site.maint_ok(&["off"]);
    }
}

/// A browser-like keep-alive client: one connection, reused; on a reset it reconnects and
/// retries the (idempotent) GET once, as browsers do.
struct KeepAlive {
    conn: TcpStream,
}

impl KeepAlive {
    fn connect(target: &str) -> KeepAlive {
        let conn = TcpStream::connect(target).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        KeepAlive { conn }
    }

    fn get(&mut self) -> std::io::Result<String> {
        self.conn
            .write_all(b"GET /cart HTTP/1.1\r\nHost: shop.example\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = self.conn.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::ConnectionReset.into());
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    return Ok(if body.starts_with("APP OK") {
                        "APP".into()
                    } else if head.contains(" 503 ") {
                        "MAINTENANCE".into()
                    } else {
                        text
                    });
                }
            }
        }
    }

    fn get_retrying_once(&mut self, target: &str) -> String {
        match self.get() {
            Ok(answer) => answer,
            Err(_) => {
                *self = KeepAlive::connect(target);
                self.get().unwrap_or_else(|e| format!("FAILED: {e}"))
            }
        }
    }
}

/// The public client with one kept-alive connection to the site, on a thread in its
/// namespace: it asks once at start (`first`) and once more on each `next`, reconnecting once
/// if the connection was cut.
struct KeptAliveClient {
    first: String,
    go: std::sync::mpsc::Sender<()>,
    answers: std::sync::mpsc::Receiver<String>,
}

impl KeptAliveClient {
    fn start(site: &Site) -> KeptAliveClient {
        let (go, asked) = std::sync::mpsc::channel::<()>();
        let (answer, answers) = std::sync::mpsc::channel::<String>();
        let target = format!("{}:80", site.lab.server_public_v4);
        // Detached: it ends when `go` is dropped with the client.
        drop(site.lab.in_ns(&site.lab.public.ns, move || {
            let mut conn = KeepAlive::connect(&target);
            while answer.send(conn.get_retrying_once(&target)).is_ok() {
                if asked.recv().is_err() {
                    break;
                }
            }
        }));
        let first = answers.recv().unwrap();
        KeptAliveClient { first, go, answers }
    }

    fn next(&self) -> String {
        self.go.send(()).unwrap();
        self.answers.recv().unwrap()
    }
}

#[test]
fn window_expires_by_itself() {
    if !have_root("window_expires_by_itself") {
        return;
    }
    let site = Site::new();
    let on = site.maint_json(&["on", "--for", "2s", "--reason", "Quick restart"]);
    assert!(on["until"].is_string(), "{on}");
    let (code, body) = site.get_public(&site.pub4());
    assert_eq!(code, 503);
    assert!(body.contains("Quick restart"), "the reason is on the page");
    let head = site.lab.run(
        &site.lab.public.ns,
        &["curl", "-sI", "--max-time", "5", &site.pub4()],
    );
    let retry = stdout(&head)
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .unwrap_or("")
        .to_string();
    assert!(
        retry.contains("GMT"),
        "the window's end drives Retry-After: {retry}"
    );
    // Kill the server: the kernel alone must end the window.
    let pid = on["server_started"].as_i64().expect("on started a server") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    site.wait_until(|s| is_app(&s.get_public(&s.pub4())));
    let status = site.maint_json(&["status"]);
    assert_eq!(status["active"], false, "{status}");
    assert_eq!(status["expired"], true, "{status}");
    site.maint_ok(&["off"]);
}

#[test]
fn off_works_with_the_server_dead_and_the_record_corrupt() {
    if !have_root("off_works_with_the_server_dead_and_the_record_corrupt") {
        return;
    }
    let site = Site::new();
    let on = site.maint_json(&["on", "198.51.100.0/24", "2001:db8:100::/48"]);
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    let pid = on["server_started"].as_u64().expect("a server was started") as i32;
    // The server and its keeper together, so nothing starts it again.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::fs::write(site.dir.path().join("state/maintenance.json"), "{ not json").unwrap();
    let out = site.maint(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(4), "drift has its exit code");
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(status["drift"].to_string().contains("corrupt"), "{status}");
    assert!(status["server"].is_null(), "{status}");

    let off = site.maint(&["off"]);
    assert!(off.status.success(), "{}", stderr(&off));
    assert!(
        stderr(&off).contains("corrupt"),
        "says what it stepped over: {}",
        stderr(&off)
    );
    assert!(is_app(&site.get_public(&site.pub4())));
    assert!(is_app(&site.get_public(&site.pub6())));

    // And without any config file at all (maint's table has the default name). Without a
    // config maint uses its default directories, /run/maint and /var/lib/maint: this `off`
    // gets fresh ones in a private mount namespace, so the machine's own are never touched.
    site.maint_ok(&["on", "--force"]);
    let off = format!(
        "mount -t tmpfs maint-test /run && mount -t tmpfs maint-test /var/lib && \
         exec {} --config /nonexistent/maint.toml off",
        maint_bin()
    );
    let out = site.lab.run(
        &site.lab.server.ns,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &off,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!site.lab.ruleset().contains("table inet maint"));
}

#[test]
fn bad_input_changes_nothing() {
    if !have_root("bad_input_changes_nothing") {
        return;
    }
    let site = Site::new();
    site.maint_ok(&["on", "198.51.100.0/24"]);
    let before = site.lab.ruleset();
    for (args, token) in [
        (vec!["on", "198.51.100.0/33"], "198.51.100.0/33"),
        (vec!["on", "offce"], "offce"),
        (
            vec!["on", "all", "--except", "2001:db8::zz"],
            "2001:db8::zz",
        ),
        (vec!["on", "--for", "-5m"], "-5m"),
        (vec!["on", "--for", "soon"], "soon"),
        (
            vec!["on", "--until", "2001-01-01T00:00"],
            "2001-01-01T00:00",
        ),
        (vec!["on", "--frobnicate"], "--frobnicate"),
    ] {
        let out = site.maint(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(token),
            "{args:?} must name {token}: {}",
            stderr(&out)
        );
        assert_eq!(site.lab.ruleset(), before, "{args:?} changed the ruleset");
    }
    // A broken config is bad input too.
    std::fs::write(&site.config, "[firewall]\nhttp_ports = [80, \"x\"]\n").unwrap();
    let out = site.maint(&["on"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    assert_eq!(site.lab.ruleset(), before);
}

#[test]
fn dry_run_prints_nft_syntax_and_changes_nothing() {
    if !have_root("dry_run_prints_nft_syntax_and_changes_nothing") {
        return;
    }
    let site = Site::new();
    let before = site.lab.ruleset();
    let out = site.maint_ok(&["on", "--except", "office", "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("table inet maint") && text.contains("redirect to :503"),
        "{text}"
    );
    assert!(text.contains("203.0.113.0/24"), "{text}");
    assert_eq!(site.lab.ruleset(), before);
    assert!(is_app(&site.get_public(&site.pub4())));
    // What --dry-run prints is what nft itself would load.
    let rules = site.dir.path().join("dry.nft");
    std::fs::write(
        &rules,
        text.lines()
            .filter(|l| !l.starts_with("# maint"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    site.lab.exec(
        &site.lab.server.ns,
        &["nft", "-c", "-f", rules.to_str().unwrap()],
    );
}

#[test]
fn unhealthy_server_blocks_on_unless_forced() {
    if !have_root("unhealthy_server_blocks_on_unless_forced") {
        return;
    }
    // Something else holds the server's port, so no maintenance server can start.
    let site = Site::with_config("[server]\nhttp_port = 600\n");
    site.lab.spawn(
        &site.lab.server.ns,
        &["python3", "-m", "http.server", "600", "--bind", "127.0.0.1"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = site.maint(&["on"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("600"), "{}", stderr(&out));
    assert!(!site.lab.ruleset().contains("maint"), "nothing applied");
    assert!(is_app(&site.get_public(&site.pub4())));
    let forced = site.maint(&["on", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(site.lab.ruleset().contains("table inet maint"));
    site.maint_ok(&["off"]);
}

#[test]
fn the_redirect_target_is_a_port_only_root_can_bind() {
    if !have_root("the_redirect_target_is_a_port_only_root_can_bind") {
        return;
    }
    // An unprivileged port: any local user could bind it once the server stopped.
    let site = Site::with_config("[server]\nhttp_port = 8503\n");
    let out = site.maint(&["on"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("8503") && stderr(&out).contains("any local user"),
        "{}",
        stderr(&out)
    );
    assert!(!site.lab.ruleset().contains("maint"), "nothing applied");
    let dry = site.maint(&["on", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(2), "a dry run says so too");

    // The default port is privileged: a user (nobody) cannot bind it, even with the server
    // gone, so redirected visitors cannot be captured.
    let site = Site::new();
    site.maint_ok(&["on"]);
    site.maint_ok(&["off"]);
    let bind = site.lab.run(
        &site.lab.server.ns,
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            "import socket; s = socket.socket(); s.bind(('0.0.0.0', 503))",
        ],
    );
    assert!(
        stderr(&bind).contains("PermissionError"),
        "nobody bound port 503: {}",
        stderr(&bind)
    );

    // A namespace where every port is unprivileged: `on` says which sysctl to fix.
    site.lab.exec(
        &site.lab.server.ns,
        &["sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0"],
    );
    let out = site.maint(&["on"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ip_unprivileged_port_start is 0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn on_refuses_a_target_port_shared_with_another_listener() {
    if !have_root("on_refuses_a_target_port_shared_with_another_listener") {
        return;
    }
    // maint's server listens on IPv4 only; another process holds the same port on IPv6 (a
    // separate socket the kernel allows), so redirected IPv6 visitors would reach it.
    let site = Site::with_config("[server]\nlisten = [\"0.0.0.0\"]\n");
    let squatter = site.lab.spawn(
        &site.lab.server.ns,
        &[
            "python3",
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET6)\n\
             s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
             s.bind(('::', 503)); s.listen(); time.sleep(600)",
        ],
    );
    site.wait_until(|s| {
        !s.lab
            .run(&s.lab.server.ns, &["ss", "-Hltn", "sport = :503"])
            .stdout
            .is_empty()
    });
    let out = site.maint(&["on"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("port 503 is held by process")
            && stderr(&out).contains("not by maint's maintenance server"),
        "{}",
        stderr(&out)
    );
    assert!(!site.lab.ruleset().contains("maint"), "nothing applied");
    assert!(is_app(&site.get_public(&site.pub6())));
    let _ = squatter;
}

#[test]
fn warns_when_the_operators_ssh_address_is_covered() {
    if !have_root("warns_when_the_operators_ssh_address_is_covered") {
        return;
    }
    let site = Site::new();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.lab.server.ns,
            maint_bin(),
            "--config",
            site.config.to_str().unwrap(),
            "on",
            "--dry-run",
        ])
        .env("SSH_CONNECTION", "198.51.100.10 51234 198.51.100.1 22")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("SSH client address 198.51.100.10 is covered"),
        "{}",
        stderr(&out)
    );
    let excepted = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.lab.server.ns,
            maint_bin(),
            "--config",
            site.config.to_str().unwrap(),
            "on",
            "--dry-run",
            "--except",
            "198.51.100.10",
        ])
        .env("SSH_CONNECTION", "198.51.100.10 51234 198.51.100.1 22")
        .output()
        .unwrap();
    assert!(
        !stderr(&excepted).contains("SSH client"),
        "{}",
        stderr(&excepted)
    );
}

/// The machine's own nftables ruleset, read (never written) to prove tests leave it alone.
fn host_ruleset() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
