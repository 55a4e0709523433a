//! maint's table as nft text: what `--dry-run` prints, and what `nft -f` would load.
//!
//! The text replaces the table the same way `apply` does (`add`, `delete`, then the full
//! definition, all in one `nft -f` transaction), so loading it is equivalent to `apply`.

use std::fmt::Write;

use ipnet::IpNet;

use super::chains::CHAINS;
use super::intervals::{self, Family};
use super::rules::{self, Ip, SetName};
use super::stamp::Stamp;
use crate::Policy;

/// Elements per line of a rendered set; keeps 100,000-prefix sets readable and diffable.
const PER_LINE: usize = 8;

/// What `clear` does, as the command an operator would type: maint's table and nothing else.
pub fn clear(table: &str) -> String {
    format!(
        "# maint off: delete table inet {table} (maint's only); nothing else is touched.\n\
         nft delete table inet {table}\n"
    )
}

/// The whole table for `policy`, as `nft -f` would load it in place of `apply`.
pub fn apply(table: &str, policy: &Policy) -> anyhow::Result<String> {
    let mut s = String::new();
    let stamp = Stamp::of(policy).text()?;
    writeln!(s, "# maint: replace table inet {table} in one transaction")?;
    writeln!(s, "add table inet {table}")?;
    writeln!(s, "delete table inet {table}")?;
    writeln!(s, "table inet {table} {{")?;
    writeln!(s, "\tcomment \"{stamp}\"")?;
    for set in SetName::ALL {
        let nets: Vec<&IpNet> = match set {
            SetName::Sources(_) => policy.sources.iter().collect(),
            SetName::Exceptions(_) => policy.exceptions.iter().collect(),
            // Admissions are added one by one while maintenance is on, never loaded whole.
            SetName::Passes(_) => Vec::new(),
        };
        write_set(&mut s, set, &nets)?;
    }
    let rules = rules::rules(policy);
    for chain in CHAINS {
        writeln!(s, "\n\tchain {} {{", chain.name)?;
        writeln!(
            s,
            "\t\ttype {} hook {} priority {}; policy accept;",
            chain.kind(),
            chain.hook_name(),
            chain.priority
        )?;
        for r in rules.iter().filter(|r| r.chain == chain.name) {
            writeln!(s, "\t\t{}", r.text())?;
        }
        writeln!(s, "\t}}")?;
    }
    writeln!(s, "}}")?;
    Ok(s)
}

fn write_set(s: &mut String, set: SetName, nets: &[&IpNet]) -> std::fmt::Result {
    let (family, ty) = match set.ip() {
        Ip::V4 => (Family::V4, "ipv4_addr"),
        Ip::V6 => (Family::V6, "ipv6_addr"),
    };
    writeln!(s, "\n\tset {} {{", set.name())?;
    writeln!(s, "\t\ttype {ty}")?;
    if set.timed() {
        writeln!(s, "\t\tflags interval, timeout")?;
    } else {
        writeln!(s, "\t\tflags interval")?;
    }
    // The prefixes as the kernel will hold them (merged ranges split back into CIDRs), which is
    // also the canonical list, even for a hand-built Policy that skipped `Policy::new`.
    let cidrs: Vec<IpNet> = intervals::ranges(family, nets.iter().copied())
        .into_iter()
        .flat_map(|r| intervals::cidrs(family, r))
        .collect();
    if !cidrs.is_empty() {
        write!(s, "\t\telements = {{")?;
        for (i, chunk) in cidrs.chunks(PER_LINE).enumerate() {
            let line: Vec<String> = chunk.iter().map(|n| n.to_string()).collect();
            let sep = if i + 1 < cidrs.len().div_ceil(PER_LINE) {
                ","
            } else {
                ""
            };
            write!(s, "\n\t\t\t{}{sep}", line.join(", "))?;
        }
        writeln!(s, "\n\t\t}}")?;
    }
    writeln!(s, "\t}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortMap;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn clear_deletes_only_our_table() {
        let t = clear("maint");
        assert!(t.contains("delete table inet maint\n"));
        assert!(!t.contains("flush"));
    }

    #[test]
    fn full_policy_renders_sets_chains_and_stamp() {
        let p = Policy::new(
            nets(&["198.51.100.0/24", "2001:db8::/32"]),
            nets(&["198.51.100.7/32"]),
            [
                PortMap {
                    public: 80,
                    server: 8503,
                },
                PortMap {
                    public: 443,
                    server: 8504,
                },
            ],
            None,
        );
        let t = apply("maint", &p).unwrap();
        let expected = "\
# maint: replace table inet maint in one transaction
add table inet maint
delete table inet maint
table inet maint {
\tcomment \"maint:1 ports=80>8503,443>8504 id=DIGEST\"

\tset src4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = {
\t\t\t198.51.100.0/24
\t\t}
\t}

\tset src6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\telements = {
\t\t\t2001:db8::/32
\t\t}
\t}

\tset exc4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = {
\t\t\t198.51.100.7/32
\t\t}
\t}

\tset exc6 {
\t\ttype ipv6_addr
\t\tflags interval
\t}

\tset pass4 {
\t\ttype ipv4_addr
\t\tflags interval, timeout
\t}

\tset pass6 {
\t\ttype ipv6_addr
\t\tflags interval, timeout
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority -110; policy accept;
\t\tip saddr @exc4 return
\t\tip6 saddr @exc6 return
\t\tip saddr @pass4 return
\t\tip6 saddr @pass6 return
\t\tip saddr @src4 tcp dport 80 redirect to :8503
\t\tip6 saddr @src6 tcp dport 80 redirect to :8503
\t\tip saddr @src4 tcp dport 443 redirect to :8504
\t\tip6 saddr @src6 tcp dport 443 redirect to :8504
\t}

\tchain input {
\t\ttype filter hook input priority -10; policy accept;
\t\ttcp dport 8503 ct status dnat accept
\t\ttcp dport 8504 ct status dnat accept
\t\tiif \"lo\" accept
\t\ttcp dport 8503 drop
\t\ttcp dport 8504 drop
\t\ttcp dport 80 ct state invalid ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 reject with tcp reset
\t\ttcp dport 80 ct state invalid ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 reject with tcp reset
\t\ttcp dport 443 ct state invalid ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 reject with tcp reset
\t\ttcp dport 443 ct state invalid ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 reject with tcp reset
\t\ttcp dport 80 ct direction reply ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 reject with tcp reset
\t\ttcp dport 80 ct direction reply ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 reject with tcp reset
\t\ttcp dport 443 ct direction reply ip saddr != @exc4 ip saddr != @pass4 ip saddr @src4 reject with tcp reset
\t\ttcp dport 443 ct direction reply ip6 saddr != @exc6 ip6 saddr != @pass6 ip6 saddr @src6 reject with tcp reset
\t}
}
";
        assert_eq!(t, expected.replace("DIGEST", &p.digest()));
    }

    #[test]
    fn long_sets_wrap_and_adjacent_prefixes_are_not_repeated() {
        let many: Vec<IpNet> = (0..20u32)
            .map(|i| format!("198.51.{}.0/24", i * 2).parse().unwrap())
            .chain(nets(&["10.0.0.0/8", "11.0.0.0/8"]))
            .collect();
        let p = Policy::new(many, [], [], None);
        let t = apply("maint", &p).unwrap();
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("\t\t\t")).collect();
        assert_eq!(lines.len(), 3); // 21 prefixes (10/7 is one), 8 per line
        assert!(lines[0].starts_with("\t\t\t10.0.0.0/7, 198.51.0.0/24,"));
        assert!(lines[0].ends_with(','));
        assert!(!lines[2].ends_with(','));
    }
}
