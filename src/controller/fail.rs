//! How a command fails, which decides its exit code: cron, monitoring and Ansible act on it.

use maint_backends::BackendError;

/// A failure, with the exit code the caller should see.
#[derive(Debug)]
pub enum Fail {
    /// Bad usage or input, or a firewall not set up for maint (exit 2). Nothing was changed.
    Input(anyhow::Error),
    /// The maintenance server did not answer (exit 3). Nothing was changed.
    Unhealthy(anyhow::Error),
    /// The firewall or the system refused (exit 1); nothing was left half-applied.
    System(anyhow::Error),
}

impl Fail {
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Fail::Input(e) | Fail::Unhealthy(e) | Fail::System(e) => e,
        }
    }

    pub fn into_error(self) -> anyhow::Error {
        match self {
            Fail::Input(e) | Fail::Unhealthy(e) | Fail::System(e) => e,
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail::System(e)
    }
}

impl From<BackendError> for Fail {
    /// A firewall that is not set up for maint (pf disabled, no anchor line, a table over pf's
    /// limit) is the operator's to fix, like bad input, and nothing was changed: exit 2.
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotReady { .. } => Fail::Input(e.into()),
            e => Fail::System(e.into()),
        }
    }
}

pub type Result<T, E = Fail> = std::result::Result<T, E>;
