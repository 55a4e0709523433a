//! The privileged half of a pass link: the keeper (root) answers the maintenance server's
//! "let this visitor through" on `admit.sock`, and refuses everything else.
//!
//! The server runs as an unprivileged user and may be compromised by what visitors send it,
//! so nothing it says is trusted beyond what this module checks, in this order:
//! 1. the peer is the server's user (or root), by the socket's credentials;
//! 2. one line of at most [`admission::MAX_LINE`] bytes within two seconds, well formed;
//! 3. the set is the pass set of the prefix's family, never the sources or exceptions;
//! 4. the prefix is a network address no wider than `[pass] ipv4_prefix` / `ipv6_prefix`,
//!    and holds the connection that asked;
//! 5. fewer than `[pass] admissions_per_minute` admissions in the last minute;
//! 6. maintenance is on, and a pass made for it has this token and has not ended.
//!
//! Only then is exactly that prefix added to that set, with a timeout at the pass's end (or
//! the window's), and the visitor's other connections to the maintenance server cut.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ipnet::IpNet;

use super::firewall;
use crate::admission::{self, PassSet, Refusal, Reply, Request};
use crate::audit::{self, PassEvent};
use crate::config::Config;
use crate::pass::{Admitted, Book};
use crate::state::{self, Store};
use crate::time::now_secs;

/// How long a peer may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The helper: its config, whom it answers, and the admissions of the last minute.
pub struct Helper {
    config: Config,
    server_uid: u32,
    recent: VecDeque<Instant>,
}

impl Helper {
    pub fn new(config: Config) -> anyhow::Result<Helper> {
        let server_uid = config.server.run_as()?.user.uid.as_raw();
        Ok(Helper {
            config,
            server_uid,
            recent: VecDeque::new(),
        })
    }

    /// Binds the keeper's socket ([`admission::bind`]) and answers on a thread of its own,
    /// one request at a time. Where it is a file, it belongs to the server's user, mode 0600.
    pub fn spawn(mut self) -> anyhow::Result<()> {
        let dir = &self.config.paths.runtime_dir;
        let listener = admission::bind(dir).with_context(|| {
            format!(
                "cannot create the pass socket {}",
                admission::socket_name(dir)
            )
        })?;
        if let Some(path) = listener.local_addr()?.as_pathname() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(self.server_uid)),
                None,
            )
            .with_context(|| format!("cannot hand {} to the server's user", path.display()))?;
        }
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                self.answer(stream);
            }
        });
        Ok(())
    }

    fn answer(&mut self, stream: UnixStream) {
        let reply = self.reply_to(&stream);
        match &reply {
            Reply::Admitted { .. } => {}
            // A wrong or ended link is what visitors do; anything else means the server
            // asked for what it never should.
            Reply::Refused {
                why: Refusal::Token | Refusal::Off,
                detail,
            } => tracing::info!("no pass admission: {detail}"),
            Reply::Refused { why, detail } => {
                tracing::warn!("refused a pass admission ({}): {detail}", why.word())
            }
        }
        let mut stream = stream;
        let _ = stream.write_all(reply.line().as_bytes());
    }

    fn reply_to(&mut self, stream: &UnixStream) -> Reply {
        // 1. Who asks.
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        match getsockopt(stream, PeerCredentials) {
            Ok(c) if c.uid() == 0 || c.uid() == self.server_uid => {}
            Ok(c) => {
                return Reply::refused(
                    Refusal::Peer,
                    format!("uid {} is neither root nor the server's user", c.uid()),
                )
            }
            Err(e) => return Reply::refused(Refusal::Peer, format!("no peer credentials: {e}")),
        }
        // 2. One bounded line.
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let mut line = Vec::new();
        let mut reader = BufReader::new(stream).take(admission::MAX_LINE as u64);
        match reader.read_until(b'\n', &mut line) {
            Ok(_) if line.last() == Some(&b'\n') => {
                line.pop();
            }
            _ => {
                return Reply::refused(
                    Refusal::Malformed,
                    format!("no complete line of at most {} bytes", admission::MAX_LINE),
                )
            }
        }
        let Ok(line) = std::str::from_utf8(&line) else {
            return Reply::refused(Refusal::Malformed, "not UTF-8");
        };
        let request = match Request::parse(line) {
            Ok(r) => r,
            Err((why, detail)) => return Reply::refused(why, detail),
        };
        if let Err((why, detail)) = self.check_shape(&request) {
            return Reply::refused(why, detail);
        }
        // 5. How often.
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        let limit = self.config.pass.admissions_per_minute as usize;
        if self.recent.len() >= limit {
            return Reply::refused(
                Refusal::Rate,
                format!("{limit} admissions in the last minute ([pass] admissions_per_minute)"),
            );
        }
        let reply = self.admit(&request);
        if matches!(reply, Reply::Admitted { .. }) {
            self.recent.push_back(now);
        }
        reply
    }

    /// 3. and 4.: the set, and how wide.
    fn check_shape(&self, r: &Request) -> Result<(), (Refusal, String)> {
        let family = PassSet::of(&r.net);
        if r.set != family {
            return Err((
                Refusal::Set,
                format!("{} is not the pass set of {}", r.set.name(), r.net),
            ));
        }
        let narrowest = match r.net {
            IpNet::V4(_) => self.config.pass.ipv4_prefix,
            IpNet::V6(_) => self.config.pass.ipv6_prefix,
        };
        if r.net.prefix_len() < narrowest {
            return Err((
                Refusal::Prefix,
                format!(
                    "{} is wider than the /{narrowest} a pass lets through",
                    r.net
                ),
            ));
        }
        if r.net.trunc() != r.net {
            return Err((
                Refusal::Prefix,
                format!("{} is not a network address", r.net),
            ));
        }
        if !r.net.contains(&maint_backends::unmap(r.asking.ip())) {
            return Err((
                Refusal::Prefix,
                format!("{} does not hold the asking connection {}", r.net, r.asking),
            ));
        }
        Ok(())
    }

    /// 6. and the admission itself, under the state lock.
    fn admit(&self, r: &Request) -> Reply {
        let failed = |e: anyhow::Error| Reply::refused(Refusal::Failed, format!("{e:#}"));
        let Ok(_lock) = state::lock(&self.config.paths.lock_file()) else {
            return Reply::refused(Refusal::Failed, "cannot take the state lock");
        };
        let state_dir = &self.config.paths.state_dir;
        let record = match Store::new(state_dir).load() {
            Ok(Some(r)) if !r.expired_at(SystemTime::now()) => r,
            Ok(_) => return Reply::refused(Refusal::Off, "maintenance is not on"),
            Err(e) => return failed(e),
        };
        let mut book = match Book::load(state_dir) {
            Ok(b) => b,
            Err(e) => return failed(e),
        };
        let now = now_secs();
        let Some(pass) = book.find(&r.token).filter(|p| p.usable(record.since, now)) else {
            return Reply::refused(
                Refusal::Token,
                format!(
                    "no pass for this maintenance has token {}",
                    r.token.redacted()
                ),
            );
        };
        if pass.admitted.len() >= crate::pass::MAX_ADMITTED_PER_PASS
            && !pass.admitted.iter().any(|a| a.net == r.net)
        {
            return Reply::refused(
                Refusal::Rate,
                format!(
                    "pass {} let {} addresses through already",
                    pass.id,
                    pass.admitted.len()
                ),
            );
        }
        let id = pass.id.clone();
        let note = pass.note.clone();
        let until = pass.admission_end(record.until);
        let (backend, _) = match firewall::for_record(&self.config, Some(&record)) {
            Ok(b) => b,
            Err(e) => return failed(e.into_error()),
        };
        let admission = maint_backends::Admission { net: r.net, until };
        if let Err(e) = backend.admit(&admission) {
            return failed(e.into());
        }
        if let Some(p) = book.find_mut_by_id(&id) {
            p.admitted.retain(|a| a.net != r.net);
            p.admitted.push(Admitted {
                net: r.net,
                at: now,
                until,
            });
        }
        if let Err(e) = book.save(state_dir) {
            return failed(e);
        }
        // The visitor's browser may hold more connections to the page; they go now, so
        // every request after the redirect reaches the app. The asking one still has its
        // answer to read, and closes after it.
        match backend.kill_redirected_states_of(r.net, &record.ports, Some(r.asking)) {
            Ok(n) if n > 0 => tracing::info!("cut {n} more connection(s) of {} to the page", r.net),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "{} was let through, but its other connections to the page were not cut: {e}",
                r.net
            ),
        }
        audit::pass_event(
            PassEvent::Admitted,
            &audit::maint_itself("keeper"),
            &id,
            note.as_deref(),
            Some(&r.net.to_string()),
        );
        Reply::Admitted { id, until }
    }
}

/// After `apply` replaced maint's table, which empties its pass sets: puts back every
/// admission still running, and returns the prefixes let through, which a state kill must
/// spare. The caller holds the lock.
pub fn put_back(config: &Config, backend: &dyn maint_backends::Backend) -> Vec<IpNet> {
    let now = now_secs();
    let book = Book::load(&config.paths.state_dir).unwrap_or_else(|e| {
        tracing::warn!("{e:#}; passes are not put back");
        Book::default()
    });
    let mut nets = Vec::new();
    for a in book.passes.iter().flat_map(|p| &p.admitted) {
        if a.ended_at(now) {
            continue;
        }
        let admission = maint_backends::Admission {
            net: a.net,
            until: a.until,
        };
        match backend.admit(&admission) {
            Ok(()) => nets.push(a.net),
            Err(e) => tracing::warn!("could not let {} through again: {e}", a.net),
        }
    }
    nets
}

/// What the keeper does for passes each time it wakes: admissions that ended leave the pass
/// set where the kernel cannot end them itself (pf), and the book forgets them. The caller
/// holds no lock; this takes it only when something ended.
pub fn expire(config: &Config) {
    let state_dir = &config.paths.state_dir;
    let now = now_secs();
    let due = Book::load(state_dir).is_ok_and(|b| {
        b.passes.iter().any(|p| {
            p.until.is_some_and(|u| now >= u) || p.admitted.iter().any(|a| a.ended_at(now))
        })
    });
    if !due {
        return;
    }
    let Ok(_lock) = state::lock(&config.paths.lock_file()) else {
        return;
    };
    let Ok(mut book) = Book::load(state_dir) else {
        return;
    };
    let gone = book.expire(now);
    if let Err(e) = book.save(state_dir) {
        tracing::warn!("cannot write the pass book: {e:#}");
    }
    if gone.is_empty() {
        return;
    }
    let store = Store::new(state_dir);
    let Some(record) = store.load().ok().flatten() else {
        return;
    };
    let Ok((backend, _)) = firewall::for_record(config, Some(&record)) else {
        return;
    };
    if !backend.admissions_expire_by_itself() {
        if let Err(e) = backend.withdraw(&gone) {
            tracing::warn!("cannot take ended passes out of the firewall: {e}");
        }
    }
    // Their connections to the app follow the policy again, like everyone else's.
    if let Ok(policy) = store.policy(&record) {
        let policy = policy.with_passes(&book.admitted_now(now));
        let _ = backend.kill_disagreeing_states(&policy, &policy.ports);
    }
    tracing::info!(
        "pass admission(s) ended: {}",
        gone.iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}
