//! maint's two base chains, defined once: the batch creates them from this table, the
//! read-back checks a table it finds against it, and `--dry-run` spells it as nft text.
//!
//! ```text
//! chain prerouting { type nat hook prerouting priority -110; policy accept; }
//! chain input      { type filter hook input priority -10; policy accept; }
//! ```

use nftnl::{ChainType, Hook};

pub const PREROUTING: &str = "prerouting";
pub const INPUT: &str = "input";

/// One base chain: its name, type, hook and priority; the policy is always accept.
#[derive(Clone, Copy, Debug)]
pub struct BaseChain {
    pub name: &'static str,
    pub nat: bool,
    pub hook: Hook,
    pub priority: i32,
}

/// In the order they are created and printed.
pub const CHAINS: [BaseChain; 2] = [
    BaseChain {
        name: PREROUTING,
        nat: true,
        hook: Hook::PreRouting,
        // Before Docker's and the usual `dstnat` (-100), so maint's redirect wins over a DNAT.
        priority: -110,
    },
    BaseChain {
        name: INPUT,
        nat: false,
        hook: Hook::In,
        // Before the usual `filter` (0), so the server ports are guarded whatever else is
        // loaded.
        priority: -10,
    },
];

impl BaseChain {
    pub fn named(name: &str) -> Option<BaseChain> {
        CHAINS.into_iter().find(|c| c.name == name)
    }

    /// The chain type as nft writes it and the kernel reports it.
    pub fn kind(&self) -> &'static str {
        if self.nat {
            "nat"
        } else {
            "filter"
        }
    }

    pub fn chain_type(&self) -> ChainType {
        if self.nat {
            ChainType::Nat
        } else {
            ChainType::Filter
        }
    }

    /// The hook as nft writes it.
    pub fn hook_name(&self) -> &'static str {
        match self.hook {
            Hook::PreRouting => "prerouting",
            Hook::In => "input",
            Hook::Forward => "forward",
            Hook::Out => "output",
            Hook::PostRouting => "postrouting",
            Hook::Ingress => "ingress",
        }
    }

    /// The hook number the kernel reports (NF_INET_*).
    pub fn hook_number(&self) -> u32 {
        self.hook as u32
    }
}
