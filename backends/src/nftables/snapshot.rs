//! What maint reads back from the kernel, as plain data: one consistent snapshot of its table
//! (taken by `read`) and the expressions of a rule as the kernel encodes them (which `verify`
//! compares with what maint would load).

use super::nla::Attrs;
use super::rules::SetName;
use super::stamp;
use super::uapi::{NFTA_EXPR_DATA, NFTA_EXPR_NAME};

#[derive(Debug)]
pub(super) struct ChainInfo {
    pub name: String,
    pub kind: Option<String>,
    pub hook: Option<(u32, i32)>,
    pub policy: Option<u32>,
}

#[derive(Debug)]
pub(super) struct SetInfo {
    pub name: String,
    pub flags: u32,
    pub key_len: u32,
    pub has_data: bool,
}

/// One expression: its name and attributes (type, payload) as the kernel encodes them.
pub(super) type Expr = (String, Vec<(u16, Vec<u8>)>);

#[derive(Debug)]
pub(super) struct RuleInfo {
    pub chain: String,
    pub exprs: Vec<Expr>,
}

pub(super) fn parse_exprs(list: Attrs<'_>) -> Vec<Expr> {
    list.filter(|(ty, _)| *ty == 1) // NFTA_LIST_ELEM
        .map(|(_, e)| {
            let e = Attrs::new(e);
            let name = e.str(NFTA_EXPR_NAME).unwrap_or("").to_owned();
            let data = e
                .get(NFTA_EXPR_DATA)
                .map(|d| Attrs::new(d).map(|(t, v)| (t, v.to_vec())).collect())
                .unwrap_or_default();
            (name, data)
        })
        .collect()
}

/// Everything the kernel holds under our table, taken as one snapshot.
pub(super) struct Snapshot {
    pub info: TableInfo,
    pub chains: Vec<ChainInfo>,
    pub sets: Vec<SetInfo>,
    pub elements: Vec<(SetName, Vec<(u128, bool)>)>,
    pub rules: Vec<RuleInfo>,
}

/// What a GETTABLE says about a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub comment: Option<String>,
    pub flags: u32,
}

impl TableInfo {
    /// Whether maint created the table (any stamp version, so an older maint's table can still
    /// be cleared).
    pub fn is_ours(&self) -> bool {
        self.comment
            .as_deref()
            .is_some_and(|c| c.starts_with(stamp::MARK))
    }
}
