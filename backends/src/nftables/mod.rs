//! nftables backend (Linux): one `inet` table owned by maint, loaded in one netlink batch.
//! (Being written; see issue 3.)
use crate::{Backend, Options, Policy, Result, StateTarget};

pub struct Nftables {
    #[allow(dead_code)]
    options: Options,
}

impl Nftables {
    pub fn new(options: Options) -> Self {
        Nftables { options }
    }
}

impl Backend for Nftables {
    fn name(&self) -> &'static str { "nftables" }
    fn preflight(&self) -> Result<Vec<String>> { Err(anyhow::anyhow!("nftables backend not built yet").into()) }
    fn apply(&self, _: &Policy) -> Result<()> { Err(anyhow::anyhow!("nftables backend not built yet").into()) }
    fn current(&self) -> Result<Option<Policy>> { Err(anyhow::anyhow!("nftables backend not built yet").into()) }
    fn render(&self, _: Option<&Policy>) -> String { String::new() }
    fn clear(&self) -> Result<bool> { Err(anyhow::anyhow!("nftables backend not built yet").into()) }
    fn kill_states(&self, _: &Policy, _: StateTarget) -> Result<usize> { Err(anyhow::anyhow!("nftables backend not built yet").into()) }
    fn expires_by_itself(&self) -> bool { true }
}
