//! How maint's keeper learns that the firewall may have changed under its feet: the
//! [`Watch`] each backend offers (nftables: the kernel's announcements; pf: a poll), and the
//! [`Ears`] that stop and restart it while maint itself loads a policy.

use std::time::Duration;

use crate::Result;

/// What a [`Watch`] saw while it waited, weakest first: of two observations, the keeper
/// acts on the stronger (`max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    /// Nothing that concerns maint.
    Nothing,
    /// The ruleset may have changed (or the firewall cannot tell): compare the digest in the
    /// kernel with the record's.
    Changed,
    /// Another program changed maint's own rules or sets: the digest may still match, so the
    /// whole policy must be read back and compared.
    EditedByOthers,
}

/// Tells maint's keeper when the firewall may have changed under its feet.
pub trait Watch {
    /// Waits up to `timeout` and says what happened meanwhile.
    fn wait(&mut self, timeout: Duration) -> Result<Seen>;
    /// A handle another thread can use to stop and restart the announcements, or `None`
    /// when the watch has none to stop.
    fn ears(&self) -> Option<Box<dyn Ears>> {
        None
    }
}

/// Stops and restarts a watch's announcements. The kernel builds an announcement for every
/// element of a transaction while anyone listens: with a million prefixes that made `maint
/// on` take 23 s instead of 4 s. So the keeper stops listening while maint itself loads a
/// policy, and compares the stamp once it listens again.
pub trait Ears: Send {
    fn deafen(&self) -> Result<()>;
    fn listen(&self) -> Result<()>;
}

/// A watch for firewalls that cannot report changes: every wait says "check".
pub struct Periodic;

impl Watch for Periodic {
    fn wait(&mut self, timeout: Duration) -> Result<Seen> {
        std::thread::sleep(timeout);
        Ok(Seen::Changed)
    }
}
