//! Finding the workspace's binaries from a test (the fake pfctl, maint itself), one way.

use std::path::PathBuf;

/// `target/<profile>/NAME`: where cargo puts every workspace binary, one level above the test
/// executables in `target/<profile>/deps`. `cargo test --workspace` builds them all.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .expect("target dir layout");
    assert!(
        bin.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build \
         --workspace` first)",
        bin.display()
    );
    bin
}

/// The fake pfctl (tests/fake-pfctl).
pub fn fake_pfctl() -> PathBuf {
    workspace_bin("fake-pfctl")
}
