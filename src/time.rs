//! Time as maint writes it: Unix seconds inside, RFC 3339 for operators and JSON, HTTP dates
//! for headers. One place, shared by the controller, the state record and the server.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub fn timestamp(secs: u64) -> jiff::Timestamp {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// `2026-12-01T02:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    timestamp(secs).to_string()
}

/// `Tue, 01 Dec 2026 02:00:00 GMT`, for Retry-After and Date.
pub fn httpdate(secs: u64) -> String {
    timestamp(secs)
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Unix seconds kept as RFC 3339 in JSON (`#[serde(with = "crate::time::rfc3339_field")]`);
/// plain seconds are read too, as servers before 0.2 wrote them.
pub mod rfc3339_field {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*secs))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Secs(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Secs(s) => Ok(s),
            Either::Text(t) => t
                .parse::<jiff::Timestamp>()
                .ok()
                .and_then(|t| u64::try_from(t.as_second()).ok())
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not an RFC 3339 time"))),
        }
    }
}
