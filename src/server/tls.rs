//! TLS for the HTTPS port: certificates from config or the usual ACME layouts.
//! (Being written; until then HTTPS ports are not redirected and `check` says so.)

use crate::config;
use crate::controller::Finding;

/// Whether the HTTPS port can be served; `Err` says why not, for the operator.
pub fn availability(_tls: &config::Tls) -> Result<(), String> {
    Err("HTTPS is not supported by this build yet".into())
}

pub fn check(tls: &config::Tls) -> Vec<Finding> {
    match availability(tls) {
        Ok(()) => vec![],
        Err(why) => vec![Finding::warn(format!("HTTPS: {why}"))],
    }
}
