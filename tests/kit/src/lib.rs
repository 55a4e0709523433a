//! maint's test kit: the helpers every test binary of the workspace shares, so that each
//! exists once: one way to decide a test needs root, one kind of test host, one way to find
//! the workspace's binaries and OpenBSD's parser, one set of HTTP client helpers.
//!
//! It is a dev-dependency only; nothing in it reaches the `maint` binary.

pub mod bins;
pub mod http;
pub mod netns;
pub mod pfparse;
pub mod root;
