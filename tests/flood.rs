//! What one remote client can make the plain-HTTP path hold, and how it treats slow, stalled
//! and pipelining clients (issue: "nothing a remote client does can take the page down").
//! Real `maint serve`, raw TCP clients on loopback; no root needed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// A server whose assets hold a 1 MB file, with the given extra [server] settings.
fn with_big_asset(server: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    // Larger than what the kernel buffers for a socket (tcp_wmem's 4 MiB), so the server
    // itself holds part of the answer while the client reads.
    std::fs::write(assets.join("huge.bin"), vec![b'y'; 8 << 20]).unwrap();
    std::fs::write(assets.join("a b.css"), "body{}").unwrap();
    let s = TestServer::start(&format!(
        "[server]\n{server}\n[page]\nassets = \"{}\"\n",
        assets.display()
    ));
    (s, dir)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_pipelining_flood_that_never_reads_holds_a_bounded_amount_per_connection() {
    let (s, _dir) = with_big_asset("idle_timeout = \"60s\"\nmax_connections = 1000");
    let pid = s.child.as_ref().unwrap().id();
    let before = rss_kib(pid);
    let request = b"GET /.maint/big.bin HTTP/1.1\r\nHost: a\r\n\r\n".repeat(5000);
    // 100 connections, each pipelining 5,000 requests for the 1 MB asset and reading nothing.
    let conns: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr()).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            // The server stops reading once its queue is full, so most of this stays in the
            // kernel's buffers or is never sent: a write that times out is expected.
            let _ = c.write_all(&request);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(pid);
    eprintln!(
        "pipelining flood: server RSS {before} KiB before, {during} KiB with 100 connections \
         each pipelining 5,000 requests for a 1 MB asset without reading ({} KiB more, \
         {} KiB per connection)",
        during.saturating_sub(before),
        during.saturating_sub(before) / 100
    );
    // The answers' bodies are the asset's own bytes, never copied; what a connection holds is
    // its queue of heads (under 64 KiB of answers) and one read of requests (16 KiB).
    assert!(
        during < before + 100 * 200,
        "RSS grew from {before} KiB to {during} KiB"
    );
    // And everyone else is still served.
    assert!(stdout(&curl(&["-i", &s.url("/")])).starts_with("HTTP/1.1 503"));
    drop(conns);
}

#[test]
fn pipelined_answers_come_back_complete_and_in_order_when_read() {
    let (s, _dir) = with_big_asset("");
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request =
        b"GET /.maint/big.bin HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n"
            .repeat(3);
    c.write_all(&request).unwrap();
    c.write_all(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    // Three assets of exactly 1 MiB, four pages, in the order asked.
    let answers = split_answers(&all);
    let statuses: Vec<&str> = answers.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["200", "503", "200", "503", "200", "503", "503"]);
    for (status, body) in &answers {
        if status == "200" {
            assert!(body.len() == 1 << 20 && body.iter().all(|b| *b == b'x'));
        }
    }
}

/// (status, body) of every answer in a byte stream of content-length framed answers.
fn split_answers(mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body = bytes[end + 4..end + 4 + len].to_vec();
        out.push((head[9..12].to_owned(), body));
        bytes = &bytes[end + 4 + len..];
    }
    out
}

#[test]
fn a_slow_reader_gets_the_whole_answer_and_a_stalled_one_is_cut_off() {
    let (s, _dir) = with_big_asset("idle_timeout = \"1s\"\nheader_timeout = \"1s\"");
    // Slow: takes 256 KiB every 100 ms, so the 8 MiB answer takes over 3 s, longer than the
    // idle timeout; every write that makes progress moves the server's deadline.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&s.addr().into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET /.maint/huge.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut chunk = 0;
        while chunk < buf.len() {
            match slow.read(&mut buf[chunk..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => chunk += n,
            }
        }
        if chunk == 0 {
            break;
        }
        got.extend_from_slice(&buf[..chunk]);
    }
    eprintln!(
        "slow reader: {} bytes in {:?}",
        got.len(),
        started.elapsed()
    );
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - body_at, 8 << 20, "the whole asset arrived");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "slower than the idle timeout"
    );

    // Stalled: asks and never reads; cut off about one idle timeout after the socket filled.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&s.addr().into()).unwrap();
    let mut stalled: TcpStream = sock.into();
    stalled
        .write_all(b"GET /.maint/huge.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut total = 0;
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < 8 << 20,
        "a stalled reader was cut off before the end: {total}"
    );
}

const T: Duration = Duration::from_secs(3);

fn heads_server() -> (TestServer, tempfile::TempDir) {
    with_big_asset("header_timeout = \"1s\"\nmax_header_bytes = 8192")
}

#[test]
fn a_complete_head_over_max_header_bytes_is_refused() {
    let (s, _dir) = heads_server();
    let t = T;
    // A complete head over max_header_bytes, arriving in one read, is refused.
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'p', 8300));
    big.extend_from_slice(b"\r\n\r\n");
    assert!(raw(s.addr(), &big, t).starts_with("HTTP/1.1 431"));
}

#[test]
fn http10_keep_alive_is_confirmed() {
    let (s, _dir) = heads_server();
    let t = T;
    // HTTP/1.0 keep-alive is confirmed, and the connection carries a second request.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(t)).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let first = read_answer(&mut c);
    assert!(
        first
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{first}"
    );
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(read_answer(&mut c).starts_with("HTTP/1.1 503"));
}

#[test]
fn absolute_form_targets_and_percent_encoded_asset_names_reach_the_asset() {
    let (s, _dir) = heads_server();
    let t = T;
    let abs = raw(
        s.addr(),
        b"GET http://shop.example/.maint/a%20b.css HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        t,
    );
    assert!(abs.starts_with("HTTP/1.1 200"), "{abs}");
    assert!(abs.ends_with("body{}"), "{abs}");
}

#[test]
fn the_header_clock_restarts_for_each_request() {
    let (s, _dir) = heads_server();
    let t = T;
    // The header clock restarts for each request: the second head starts 0.7 s into the
    // first one's second and finishes 0.7 s later, 1.4 s after the first byte overall.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(t)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    c.write_all(b"st: a\r\n\r\nGET / HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    c.write_all(b"st: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut both = String::new();
    let _ = c.read_to_string(&mut both);
    assert_eq!(both.matches("HTTP/1.1 503").count(), 2, "{both}");
}

/// One answer (head and content-length body) from a keep-alive connection.
fn read_answer(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    head
}

#[test]
fn an_endless_control_line_is_cut_not_buffered() {
    let s = TestServer::start("");
    let pid = s.child.as_ref().unwrap().id();
    let before = rss_kib(pid);
    let mut c = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    // Up to 200 MiB without a newline; the server stops reading long before.
    while sent < 200 << 20 {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let after = rss_kib(pid);
    eprintln!("endless control line: {sent} bytes sent, server RSS {before} -> {after} KiB");
    assert!(sent < 200 << 20, "the server kept reading");
    assert!(after < before + 10 * 1024, "{before} -> {after} KiB");
    // It still answers its operator.
    let v = control(&s.socket(), r#"{"op":"status"}"#);
    assert!(v["status"]["pid"].is_number(), "{v}");
}

#[test]
fn one_source_cannot_hold_every_connection_slot() {
    let s = TestServer::start(
        "[server]\nmax_connections = 300\nmax_connections_per_source = 50\nidle_timeout = \"30s\"",
    );
    // One source opens 60 keep-alive connections: 50 are served, 10 are closed at once.
    let mut hog = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        if c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err() {
            refused += 1;
            continue;
        }
        let mut buf = [0u8; 12];
        match c.read_exact(&mut buf) {
            Ok(()) if &buf == b"HTTP/1.1 503" => hog.push(c),
            _ => refused += 1,
        }
    }
    assert_eq!((hog.len(), refused), (50, 10));
    // Another source is still served while the first one holds its 50.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    other.connect(&s.addr().into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The server counts what it refused (`maint status` shows it).
    let v = control(&s.socket(), r#"{"op":"status"}"#);
    assert_eq!(v["status"]["refused_per_source"], 10, "{v}");
}
