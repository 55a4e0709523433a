//! One line of `maint check`: a level and a sentence for the operator. Its own module because
//! both the controller and the certificate checks produce them.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Finding {
    pub level: &'static str,
    pub message: String,
}

impl Finding {
    pub fn ok(message: String) -> Self {
        Finding {
            level: "ok",
            message,
        }
    }

    pub fn warn(message: String) -> Self {
        Finding {
            level: "warn",
            message,
        }
    }

    pub fn fail(message: String) -> Self {
        Finding {
            level: "fail",
            message,
        }
    }

    pub fn failed(&self) -> bool {
        self.level == "fail"
    }
}
