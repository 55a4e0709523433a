//! The held request, `/.maint/wait`: how a visitor's page learns at once that maintenance is
//! over, at the cost of one idle request per open tab.
//!
//! The page (`page.js`) keeps one request to [`WAIT_PATH`] open. The server answers it
//! `204` with `x-maintenance: on` after `server.wait_timeout` (the page then asks again, at
//! most twice a minute), or `x-maintenance: off` with `connection: close` the moment
//! maintenance ends: when `maint off` says so ([`Ending::end`]), or at the window's end. The
//! page then fetches its own URL and goes back only when the site itself answers.
//!
//! `maint off` removes the redirect for new connections first, keeping the translation of
//! the ones already redirected, then calls [`Ending::end`], which returns once every held
//! answer has been written; only then are the table and the states removed. Removed first,
//! the answers would leave untranslated and be lost, and pages would wait for their own
//! timeout (25 to 45 s measured) instead of about 0.1 s.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the page holds its request.
pub const WAIT_PATH: &str = "/.maint/wait";

/// How long `end` waits for held answers to be written before it reports back anyway.
const END_WAIT_MAX: Duration = Duration::from_secs(2);
/// hyper writes an HTTPS answer after its handler returns; this is the time it gets to leave.
const HTTPS_FLUSH: Duration = Duration::from_millis(100);

/// What a held request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Maintenance goes on: ask again.
    On,
    /// Maintenance is over: go back to the site.
    Off,
}

impl Verdict {
    pub fn header(self) -> &'static str {
        match self {
            Verdict::On => "on",
            Verdict::Off => "off",
        }
    }
}

/// Whether and when maintenance ends, as held requests see it.
pub struct Ending {
    /// `maint off` said maintenance is over (until the next window is set).
    over: watch::Sender<bool>,
    /// How many times maintenance was ended: a connection opened before the latest end
    /// belongs to maintenance that is over.
    ends: watch::Sender<u64>,
    /// The window's end in Unix milliseconds; 0 for none.
    until_ms: AtomicU64,
    /// Requests held, or answered "off" and not yet written.
    held: watch::Sender<usize>,
    /// An HTTPS held request was answered since the last end.
    https_answered: AtomicBool,
    pub hold_for: Duration,
}

impl Ending {
    pub fn new(hold_for: Duration) -> Ending {
        Ending {
            over: watch::Sender::new(false),
            ends: watch::Sender::new(0),
            until_ms: AtomicU64::new(0),
            held: watch::Sender::new(0),
            https_answered: AtomicBool::new(false),
            hold_for,
        }
    }

    /// A new window (maintenance on, again): held requests wait for it to end.
    pub fn set_window(&self, until: Option<u64>) {
        self.until_ms.store(
            until.map_or(0, |u| u.saturating_mul(1000)),
            Ordering::Relaxed,
        );
        self.over.send_replace(false);
    }

    /// Whether maintenance is over: ended by `maint off`, or past the window's end.
    pub fn is_over(&self) -> bool {
        *self.over.borrow() || self.until_ms().is_some_and(|u| now_ms() >= u)
    }

    fn until_ms(&self) -> Option<u64> {
        Some(self.until_ms.load(Ordering::Relaxed)).filter(|&u| u != 0)
    }

    /// How many times maintenance has ended so far; see [`Ending::ended_since`].
    pub fn ends(&self) -> u64 {
        *self.ends.borrow()
    }

    /// Whether maintenance ended after `ends` was read (the connection is from before).
    pub fn ended_since(&self, ends: u64) -> bool {
        self.ends() != ends
    }

    /// Resolves once maintenance ends after `ends` was read.
    pub fn end_after(&self, ends: u64) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.ends.subscribe();
        async move {
            let _ = rx.wait_for(|&e| e != ends).await;
        }
    }

    /// Maintenance is over: answers every held request "off", and returns once those
    /// answers are written (at most [`END_WAIT_MAX`]), with how many were still unwritten.
    pub async fn end(&self) -> usize {
        let mut held = self.held.subscribe();
        self.https_answered.store(false, Ordering::Relaxed);
        self.over.send_replace(true);
        self.ends.send_modify(|e| *e += 1);
        let left = match tokio::time::timeout(END_WAIT_MAX, held.wait_for(|&n| n == 0)).await {
            Ok(_) => 0,
            Err(_) => *self.held.borrow(),
        };
        if self.https_answered.load(Ordering::Relaxed) {
            tokio::time::sleep(HTTPS_FLUSH).await;
        }
        left
    }

    /// When a request held now is answered "on" at the latest: after `hold_for`, or at the
    /// window's end if that comes first (then it is answered "off").
    pub fn hold_deadline(&self) -> Instant {
        let mut at = Instant::now() + self.hold_for;
        if let Some(u) = self.until_ms() {
            let left = Duration::from_millis(u.saturating_sub(now_ms()));
            at = at.min(Instant::now() + left);
        }
        at
    }

    /// The verdict for a held request whose hold ended (by signal or deadline).
    pub fn verdict(&self) -> Verdict {
        if self.is_over() {
            Verdict::Off
        } else {
            Verdict::On
        }
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    pub fn note_https_answer(&self) {
        self.https_answered.store(true, Ordering::Relaxed);
    }
}

/// One held request, counted from the moment it is held until its answer is out (dropped).
pub struct Held {
    /// Resolves when maintenance ends or `stopped` does (the server stops); never polled
    /// after that.
    pub signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ending: Arc<Ending>,
}

impl Held {
    pub fn new(ending: Arc<Ending>, stopped: impl Future<Output = ()> + Send + 'static) -> Held {
        ending.held.send_modify(|n| *n += 1);
        let mut over = ending.over.subscribe();
        let signal = Box::pin(async move {
            tokio::select! {
                _ = over.wait_for(|&o| o) => {}
                () = stopped => {}
            }
        });
        Held { signal, ending }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.ending.held.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_end_in_the_past_is_over_and_a_new_window_is_not() {
        let e = Ending::new(Duration::from_secs(50));
        assert!(!e.is_over());
        e.set_window(Some(1));
        assert!(e.is_over(), "1970 is over");
        assert_eq!(e.verdict(), Verdict::Off);
        e.set_window(None);
        assert!(!e.is_over());
        let far = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        e.set_window(Some(far));
        assert!(!e.is_over());
        assert!(e.hold_deadline() <= Instant::now() + Duration::from_secs(50));
    }

    #[tokio::test]
    async fn end_returns_at_once_with_nothing_held_and_marks_earlier_connections() {
        let e = Ending::new(Duration::from_secs(50));
        let before = e.ends();
        assert!(!e.ended_since(before));
        assert_eq!(e.end().await, 0);
        assert!(e.is_over() && e.ended_since(before));
        e.set_window(None);
        assert!(!e.is_over(), "on again");
    }
}
