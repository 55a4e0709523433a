//! Maintenance holds through what real operations do to a host (issue 16): a reboot, a
//! firewall reload, a crashed server, and an unprivileged monitor asking. Real namespaces,
//! the real binary, the real app, real clients; every time measured is printed.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::site::{is_app, is_maintenance, Site, HOST_FIREWALL as HOST_RULES};
use support::{have_root, maint_bin, stdout};

/// `maint serve` in the server's namespace as the systemd unit starts it (in the
/// foreground), logging to a file the test reads.
fn serve(site: &Site, log: &std::path::Path) -> Child {
    serve_in(&site.lab.server.ns, &site.config, log)
}

/// The same, by namespace and config, appending to `log` (a restarted server adds to it).
fn serve_in(ns: &str, config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, maint_bin(), "--config"])
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_for_server(site: &Site) {
    support::wait_until(
        Duration::from_secs(10),
        "the server's control socket",
        || {
            std::os::unix::net::UnixStream::connect(site.dir.path().join("run/control.sock"))
                .is_ok()
        },
    );
}

/// Everything a reboot takes away: every maint process (server, keeper, key helper), the
/// kernel's tables and connection states, the runtime directory. Then the host firewall
/// comes back, as nftables.service loads it before maint's unit starts.
fn reboot(site: &Site, server_pid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(server_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    support::wait_until(Duration::from_secs(5), "maint's processes gone", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server_pid), None).is_err()
    });
    support::site::nft(&site.lab.server.ns, "flush ruleset\n");
    let _ = site.lab.run(&site.lab.server.ns, &["conntrack", "-F"]);
    std::fs::remove_dir_all(site.dir.path().join("run")).unwrap();
    support::site::nft(&site.lab.server.ns, HOST_RULES);
    assert!(
        is_app(&site.get_public(&site.pub4())),
        "after the reboot, before maint starts"
    );
}

#[test]
fn a_reboot_brings_maintenance_back_before_anyone_reaches_the_app() {
    if !have_root("a_reboot_brings_maintenance_back_before_anyone_reaches_the_app") {
        return;
    }
    let site = Site::new();
    let on = site.maint_json(&[
        "on",
        "--except",
        "office",
        "--for",
        "1h",
        "--reason",
        "Kernel upgrade",
    ]);
    let pid = on["server_started"].as_u64().unwrap() as i32;
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    reboot(&site, pid);

    let log = site.dir.path().join("serve.log");
    let started = Instant::now();
    let mut server = serve(&site, &log);
    support::wait_until(Duration::from_secs(10), "the page again", || {
        is_maintenance(&site.get_public(&site.pub4()))
    });
    println!(
        "reboot: the page is back {:?} after `maint serve` started",
        started.elapsed()
    );
    assert!(is_maintenance(&site.get_public(&site.pub6())));
    assert!(
        is_app(&site.get_office(&site.off4())),
        "the exception holds too"
    );
    let (_, page) = site.get_public(&site.pub4());
    assert!(
        page.contains("Kernel upgrade"),
        "the page tells the recorded reason: {page}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("restored maintenance"), "{text}");
    let status = site.maint(&["--json", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["active"], true, "{status}");
    assert_eq!(status["reason"], "Kernel upgrade", "{status}");

    site.maint_ok(&["off"]);
    assert!(is_app(&site.get_public(&site.pub4())));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_reboot_after_the_window_ended_restores_nothing_and_says_why() {
    if !have_root("a_reboot_after_the_window_ended_restores_nothing_and_says_why") {
        return;
    }
    let site = Site::new();
    let on = site.maint_json(&["on", "--for", "2s"]);
    let pid = on["server_started"].as_u64().unwrap() as i32;
    std::thread::sleep(Duration::from_secs(3));
    reboot(&site, pid);

    let log = site.dir.path().join("serve.log");
    let mut server = serve(&site, &log);
    wait_for_server(&site);
    assert!(is_app(&site.get_public(&site.pub4())));
    assert!(
        !site.lab.ruleset().contains("table inet maint"),
        "nothing restored"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("not restoring maintenance: its window ended at"),
        "{text}"
    );
    let _ = server.kill();
    let _ = server.wait();
    site.maint_ok(&["off"]);
}

/// Requests the page every 100 ms until `f` holds for an answer; returns how long it took.
fn time_until(site: &Site, what: &str, f: impl Fn(&(u16, String)) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let answer = site.get(&site.lab.public.ns, &site.pub4(), &["--max-time", "1"]);
        if f(&answer) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: last answer {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_flushed_ruleset_is_put_back_within_a_second_and_a_reload_keeps_its_own_rules() {
    if !have_root("a_flushed_ruleset_is_put_back_within_a_second") {
        return;
    }
    let site = Site::new();
    let log = site.dir.path().join("serve.log");
    let mut server = serve(&site, &log);
    wait_for_server(&site);
    site.maint_ok(&["on", "--except", "office"]);
    assert!(is_maintenance(&site.get_public(&site.pub4())));

    // `nft flush ruleset` by hand.
    support::site::nft(&site.lab.server.ns, "flush ruleset\n");
    let back = time_until(&site, "the page after a flush", is_maintenance);
    println!("nft flush ruleset: visitors see the page again after {back:?}");
    let status = site.maint(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));

    // What `systemctl reload nftables` does: one transaction that flushes and loads the
    // host's own rules. Those stay as loaded; maint's table comes back beside them.
    let foreign = format!("flush ruleset\n{HOST_RULES}table ip other_tool {{\n chain c {{\n  type filter hook forward priority 0; policy accept;\n  ip saddr 192.0.2.99 drop\n }}\n}}\n");
    support::site::nft(&site.lab.server.ns, &foreign);
    let back = time_until(&site, "the page after a reload", is_maintenance);
    println!("a reload of the host's rules (flush ruleset + its own tables): the page is back after {back:?}");
    let ruleset = site.lab.ruleset();
    assert!(ruleset.contains("table ip other_tool"), "{ruleset}");
    assert!(ruleset.contains("ip saddr 192.0.2.99 drop"), "{ruleset}");
    assert!(
        ruleset.contains("tcp dport { 22, 80, 443 } accept"),
        "{ruleset}"
    );
    assert!(ruleset.contains("table inet maint"), "{ruleset}");

    // Someone deletes one exception element by hand: the stamp still matches, the
    // announcement tells the keeper to read the table back, and the office returns.
    support::site::nft(
        &site.lab.server.ns,
        "delete element inet maint exc4 { 203.0.113.0/24 }\n",
    );
    support::wait_until(Duration::from_secs(5), "the exception back", || {
        site.lab.ruleset().contains("203.0.113.0/24")
    });
    assert!(is_app(&site.get_office(&site.off4())));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("removed or changed by another program"),
        "{text}"
    );

    // Off: nothing is put back.
    site.maint_ok(&["off"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!site.lab.ruleset().contains("table inet maint"));
    assert!(is_app(&site.get_public(&site.pub4())));
    let _ = server.kill();
    let _ = server.wait();
}

/// Requests the page every 20 ms from the moment `kill` runs; returns how long visitors got
/// no answer (connection refused) before the page came back.
fn refused_for(site: &Site, kill: impl FnOnce()) -> Duration {
    kill();
    let start = Instant::now();
    let mut first_refused = None;
    loop {
        let answer = site.get(&site.lab.public.ns, &site.pub4(), &["--max-time", "1"]);
        if answer.0 == 0 {
            first_refused.get_or_insert_with(Instant::now);
        } else if is_maintenance(&answer) && first_refused.is_some() {
            return first_refused.unwrap().elapsed();
        } else if is_maintenance(&answer) && start.elapsed() > Duration::from_secs(2) {
            return Duration::ZERO;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no page: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_server_comes_back_under_the_unit_and_in_the_background() {
    if !have_root("a_killed_server_comes_back_under_the_unit_and_in_the_background") {
        return;
    }
    let site = Site::new();
    // The shipped unit's semantics: Restart=always, RestartSec=100ms (conf/maint.service).
    let unit = conf_restart_sec();
    let log = site.dir.path().join("serve.log");
    let server = std::sync::Arc::new(std::sync::Mutex::new(serve(&site, &log)));
    wait_for_server(&site);
    site.maint_ok(&["on"]);
    assert!(is_maintenance(&site.get_public(&site.pub4())));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restarter = {
        let (server, stop) = (server.clone(), stop.clone());
        let (ns, config, log) = (site.lab.server.ns.clone(), site.config.clone(), log.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let exited = server.lock().unwrap().try_wait().unwrap().is_some();
                if exited {
                    std::thread::sleep(unit);
                    *server.lock().unwrap() = serve_in(&ns, &config, &log);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let pid = server.lock().unwrap().id() as i32;
    let refused = refused_for(&site, || {
        // systemd kills the whole unit's cgroup when its main process dies.
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .or_else(|_| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            })
            .unwrap();
    });
    println!(
        "SIGKILL under the unit's restart (RestartSec={unit:?}): visitors refused for {refused:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    restarter.join().unwrap();
    {
        let mut s = server.lock().unwrap();
        let _ = s.kill();
        let _ = s.wait();
    }
    site.maint_ok(&["off"]);

    // A server `on` started in the background: its keeper starts it again.
    let on = site.maint_json(&["on"]);
    let pid = on["server_started"].as_u64().unwrap() as i32;
    let killed = Instant::now();
    let refused = refused_for(&site, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    });
    let answering = site.maint_json(&["status"])["server"]["pid"].as_u64();
    assert!(
        answering.is_some_and(|p| p != pid as u64),
        "a new server: {answering:?}"
    );
    let restarted = std::fs::metadata(site.dir.path().join("run/server.pid"))
        .unwrap()
        .modified()
        .unwrap();
    println!(
        "SIGKILL of a background server: visitors refused for {refused:?} (requests every 20 ms); \
         the keeper's new server wrote its pid file {:?} after the kill",
        restarted
            .duration_since(std::time::SystemTime::now() - killed.elapsed())
            .unwrap_or_default()
    );
    let again = site.maint_json(&["on"]);
    assert_eq!(
        again["changed"], false,
        "the keeper already repaired it: {again}"
    );
    let off = site.maint_json(&["off"]);
    assert!(
        off["server_stopped"].is_u64(),
        "off stops the restarted server: {off}"
    );
}

/// RestartSec= of the shipped unit.
fn conf_restart_sec() -> Duration {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/maint.service"))
        .unwrap();
    let value = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartSec="))
        .expect("the unit sets RestartSec=")
        .trim();
    humantime::parse_duration(value).unwrap_or_else(|_| {
        Duration::from_secs_f64(value.parse().expect("RestartSec in seconds or a duration"))
    })
}

#[test]
fn an_unprivileged_status_never_says_off_while_maintenance_is_on() {
    if !have_root("an_unprivileged_status_never_says_off_while_maintenance_is_on") {
        return;
    }
    let site = Site::new();
    site.maint_ok(&["on", "--reason", "Upgrade"]);
    // A monitor running as nobody can read the config and the record, not the kernel.
    use std::os::unix::fs::PermissionsExt;
    for dir in [site.dir.path().to_path_buf(), site.dir.path().join("state")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let as_nobody = |args: &[&str]| {
        let mut all = vec![
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            maint_bin(),
            "--config",
            site.config.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        site.lab.run(&site.lab.server.ns, &all)
    };
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("maintenance: ON, by the state record"),
        "{text}"
    );
    assert!(text.contains("run as root"), "{text}");
    let out = as_nobody(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(5));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["active"], true, "{json}");
    assert_eq!(json["kernel_readable"], false, "{json}");
    assert_eq!(json["reason"], "Upgrade", "{json}");
    site.maint_ok(&["off"]);
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stdout(&out).contains("maintenance: off, by the state record"));
}
