//! Tests that need root (network namespaces, nftables, conntrack) say so in one way: without
//! root they are skipped with a message, and under CI, where a skip would be a silent pass,
//! they fail.

/// Whether `test` may run: true as root; false (skipped, with a message) without root; a
/// failure without root when `CI` is set.
pub fn have_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root (network namespaces, nftables); CI must run the tests as root");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}
