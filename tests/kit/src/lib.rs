//! maint's test kit: the helpers every test binary of the workspace shares, so that each
//! exists once (one way to find OpenBSD's parser, one way to decide a test needs root, ...).
//!
//! It is a dev-dependency only; nothing in it reaches the `maint` binary.

pub mod pfparse;
