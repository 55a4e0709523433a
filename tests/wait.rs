//! The held request (`/.maint/wait`) against the real server: held until maintenance ends and
//! then answered "off" with a close, at once once it is over, "still on" after
//! `wait_timeout`, "off" at the window's end; never cut by the idle timeout; connections from
//! before the end closed unanswered; the same over HTTPS with HTTP/2. And the page's script as
//! the server injects it, with its logic run in Node.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// Sends `GET /.maint/wait` on `stream` and reads the answer's head (a 204 has no body).
/// Returns the head and how long it took.
fn ask_wait(stream: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    stream
        .write_all(b"GET /.maint/wait HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), start.elapsed())
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

fn end(s: &TestServer) -> serde_json::Value {
    control(&s.socket(), r#"{"op":"end"}"#)
}

fn set_window(s: &TestServer, until: Option<u64>) {
    let until = until.map_or("null".into(), |u| u.to_string());
    let v = control(
        &s.socket(),
        &format!(r#"{{"op":"set_window","until":{until},"reason":null}}"#),
    );
    assert!(v.get("status").is_some(), "{v}");
}

fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

#[test]
fn a_held_request_is_answered_off_the_moment_maintenance_ends() {
    let s = TestServer::start("[server]\nidle_timeout = \"1s\"\n");
    let addr = s.addr();
    let held = std::thread::spawn(move || {
        let mut c = connect(addr);
        let answer = ask_wait(&mut c);
        (answer, closed(&mut c))
    });
    // Held past the idle timeout: a held request is not an idle connection.
    std::thread::sleep(Duration::from_millis(1500));
    let status = control(&s.socket(), r#"{"op":"status"}"#);
    assert_eq!(status["status"]["held_requests"], 1, "{status}");
    let asked = Instant::now();
    let reply = end(&s);
    let end_took = asked.elapsed();
    assert!(reply.get("status").is_some(), "{reply}");
    let ((head, waited), closed_after) = held.join().unwrap();
    eprintln!("held {waited:?}; `end` replied after {end_took:?}");
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(head.contains("x-maintenance: off"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_after, "the connection closes after the answer");
    assert!(
        waited >= Duration::from_millis(1400),
        "held, not answered early"
    );
    // Once over, a wait is answered at once.
    let (head, took) = ask_wait(&mut connect(addr));
    assert!(head.contains("x-maintenance: off"), "{head}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // A new window: held again.
    set_window(&s, None);
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.write_all(b"GET /.maint/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(c.read(&mut buf).is_err(), "held while on again");
}

#[test]
fn a_held_request_is_answered_still_on_after_the_wait_timeout_and_the_connection_stays() {
    let s = TestServer::start("[server]\nwait_timeout = \"1s\"\nidle_timeout = \"10s\"\n");
    let mut c = connect(s.addr());
    let (head, took) = ask_wait(&mut c);
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(head.contains("x-maintenance: on"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Kept alive: the same connection asks again and is held again.
    let (head, _) = ask_wait(&mut c);
    assert!(head.contains("x-maintenance: on"), "{head}");
}

#[test]
fn the_windows_end_answers_held_requests_off() {
    let s = TestServer::start("");
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    set_window(&s, Some(until));
    let (head, took) = ask_wait(&mut connect(s.addr()));
    assert!(head.contains("x-maintenance: off"), "{head}");
    assert!(
        took < Duration::from_secs(4),
        "answered at the window's end: {took:?}"
    );
    eprintln!("answered off {took:?} after asking, at the window's end");
}

#[test]
fn reused_connections_from_before_the_end_are_closed_unanswered() {
    let s = TestServer::start("");
    let mut old = connect(s.addr());
    old.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let page = read_response(&mut old);
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    // Accepted before the end, its first request after it: a client would not send that
    // one again, so it is answered, and the connection closed.
    let mut fresh = connect(s.addr());
    wait_until(Duration::from_secs(5), "both connections accepted", || {
        control(&s.socket(), r#"{"op":"status"}"#)["status"]["connections"] == 2
    });
    end(&s);
    fresh
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut fresh);
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert!(first.contains("connection: close"), "{first}");
    // The browser's next request on its old connection meets a close (and is sent again on a
    // new one); a new connection is answered as usual (`maint on`'s health check is one).
    old.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        closed(&mut old),
        "answered on a connection from before the end"
    );
    let mut new = connect(s.addr());
    new.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut new).starts_with("HTTP/1.1 503"));
}

#[test]
fn over_https_with_http2_the_held_stream_is_answered_off_and_the_connection_finished() {
    let s = TestServer::start("[tls]\ndiscover = false\nself_signed = true\n");
    let url = format!("https://127.0.0.1:{}/.maint/wait", s.https_port);
    let held = std::thread::spawn(move || {
        let start = Instant::now();
        let out = curl(&[
            "-sk",
            "--http2",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "20",
            "-w",
            "%{http_version}",
            &url,
        ]);
        (stdout(&out), start.elapsed())
    });
    wait_until(Duration::from_secs(10), "the request held", || {
        control(&s.socket(), r#"{"op":"status"}"#)["status"]["held_requests"] == 1
    });
    end(&s);
    let (head, took) = held.join().unwrap();
    eprintln!("HTTP/2 held request answered after {took:?}");
    assert!(head.starts_with("HTTP/2 204"), "{head}");
    assert!(head.contains("x-maintenance: off"), "{head}");
    assert!(head.trim_end().ends_with('2'), "spoke HTTP/2: {head}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn the_page_carries_its_script_with_the_window_and_the_wait_path() {
    let s = TestServer::start("[page]\ncontact = \"ops@shop.example\"\n");
    let script = include_str!("../src/server/page.js");
    let page = stdout(&curl(&[&s.url("/")]));
    let expected =
        script
            .replacen("UNTIL_MS", "null", 1)
            .replacen("WAIT_PATH", "\"/.maint/wait\"", 1);
    assert!(page.contains(&expected), "the script as injected: {page}");
    assert!(!page.contains("UNTIL_MS") && !page.contains("WAIT_PATH"));
    assert!(
        page.contains("<a href=\"mailto:ops@shop.example\">ops@shop.example</a>"),
        "the contact is a link: {page}"
    );
    // Without script the window's end shows in UTC, rounded up to the minute.
    set_window(&s, Some(1_796_090_401)); // 2026-12-01 02:00:01 UTC
    let page = stdout(&curl(&[&s.url("/")]));
    assert!(page.contains("var until = 1796090401000;"), "{page}");
    assert!(page.contains("2026-12-01 02:01 UTC"), "{page}");
    // The script's return logic and ETA text, every branch, in Node on a simulated clock.
    let logic = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/page_logic.js"
        ))
        .output()
        .expect("node is installed");
    let out = stdout(&logic);
    assert!(logic.status.success(), "{out}{}", stderr(&logic));
    assert!(out.contains(" passed, 0 failed"), "{out}");
}
