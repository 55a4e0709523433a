//! pf backend (OpenBSD): an anchor and a table owned by maint, driven through pfctl(8).
//! (Being written; see issue 5.)
use crate::{Backend, Options, Policy, Result, StateTarget};

pub struct Pf {
    #[allow(dead_code)]
    options: Options,
}

impl Pf {
    pub fn new(options: Options) -> Self {
        Pf { options }
    }
}

impl Backend for Pf {
    fn name(&self) -> &'static str { "pf" }
    fn preflight(&self) -> Result<Vec<String>> { Err(anyhow::anyhow!("pf backend not built yet").into()) }
    fn apply(&self, _: &Policy) -> Result<()> { Err(anyhow::anyhow!("pf backend not built yet").into()) }
    fn current(&self) -> Result<Option<Policy>> { Err(anyhow::anyhow!("pf backend not built yet").into()) }
    fn render(&self, _: Option<&Policy>) -> String { String::new() }
    fn clear(&self) -> Result<bool> { Err(anyhow::anyhow!("pf backend not built yet").into()) }
    fn kill_states(&self, _: &Policy, _: StateTarget) -> Result<usize> { Err(anyhow::anyhow!("pf backend not built yet").into()) }
    fn expires_by_itself(&self) -> bool { false }
}
