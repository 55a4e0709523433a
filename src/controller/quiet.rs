//! The keeper's quiet socket: `on` (and the end of a drain) ask the keeper not to listen to
//! the firewall while they load a policy, so the kernel does not announce every prefix of it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// What `on` writes to the keeper's socket.
pub const QUIET: &[u8; 6] = b"quiet\n";

pub fn quiet_socket(config: &Config) -> PathBuf {
    config.paths.runtime_dir.join("keeper.sock")
}

/// Called by `on` (holding the lock) before it loads a policy: asks a running keeper to stop
/// listening to the firewall until the lock is free again, so the kernel does not announce
/// every prefix of the load. Without a keeper this does nothing.
pub fn ask_quiet(config: &Config) {
    let Ok(mut stream) = UnixStream::connect(quiet_socket(config)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 3];
    if stream.write_all(QUIET).is_ok() && stream.read_exact(&mut answer).is_ok() {
        tracing::debug!("the keeper stopped listening while this policy loads");
    }
}
