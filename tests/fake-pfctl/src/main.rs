//! fake-pfctl: a stand-in for OpenBSD's pfctl(8), for maint's pf backend tests on Linux.
//!
//! It emulates the subset of pfctl maint uses, with pf's state kept in files, and prints what
//! the real pfctl prints (formats taken from OpenBSD's sbin/pfctl: pfctl.c, pfctl_parser.c,
//! pfctl_table.c, pf_print_state.c). Anything outside the subset exits 2 with a message, so a
//! test notices when the backend starts using something the fake does not know.
//!
//! Loads (`-f`) go through OpenBSD's own parser: `shared/pfparse` beside the checkout, or
//! `$PFPARSE`. A text OpenBSD would refuse is refused the way pfctl refuses it (its
//! `FILE:LINE: message`, then "Syntax error in config file", exit 1), and the rules are kept
//! exactly as OpenBSD prints them back, which is what `-s rules` then shows. Without pfparse
//! the fake refuses to load anything (exit 2): a fake that accepted whatever it was given is
//! how a table OpenBSD rejects once passed every test.
//!
//! State directory: `$FAKE_PFCTL_DIR`, or else the directory of the path the fake was started
//! by (argv[0]). The second form lets tests running in parallel each symlink the fake into
//! their own directory without sharing process environment. Files in it:
//!   log              every call, appended: `$ pfctl ARGS` then `< LINE` per stdin line
//!   enabled          `0` means pf is disabled (default: enabled)
//!   main.conf        the main ruleset, as `pfctl -s rules` prints it
//!   anchors/A/rules  anchor A's rules, as `pfctl -a A -s rules` prints them
//!   anchors/A/tables/T  table T's entries, one per line (`!` for negated); a first line
//!                    `# persist` marks a table that survives without rules referencing it
//!   states           one state per line: `LABEL<TAB>STATE` where STATE is a `pfctl -s states`
//!                    line and LABEL the label of the rule that created it (`-` for none)
//!   delay            `PATTERN SECONDS`: calls whose arguments contain PATTERN first sleep
//!                    that long (a slow kernel, for tests of what runs meanwhile)
//!   eperm            if present, every call fails as an unprivileged user's would
//!   limits           `NAME NUMBER` lines overriding pf's default limits (`-s memory`), as
//!                    `set limit` in pf.conf does; a load over `table-entries` fails with ENOMEM
//!   fail             a pattern (also `$FAKE_PFCTL_FAIL`): the first call whose arguments,
//!                    joined by spaces, contain it fails with a pfctl-like error and changes
//!                    nothing; `fail.fired` records that it fired.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::exit;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let dir = state_dir(&argv[0]);
    let args = &argv[1..];
    let opts = match Opts::parse(args) {
        Ok(o) => o,
        Err(msg) => die(1, &format!("pfctl: {msg}")),
    };
    let stdin = match opts.file.as_deref() {
        Some("-") => {
            let mut s = String::new();
            let _ = std::io::stdin().read_to_string(&mut s);
            Some(s)
        }
        Some(path) => match fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => die(1, &format!("pfctl: {path}: {e}")),
        },
        None => None,
    };
    log_call(&dir, args, stdin.as_deref());

    if let Some((pattern, secs)) = fs::read_to_string(dir.join("delay")).ok().and_then(|d| {
        d.trim()
            .rsplit_once(' ')
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
    }) {
        if args.join(" ").contains(&pattern) {
            let secs: f64 = secs.parse().unwrap_or(0.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        }
    }
    if dir.join("eperm").exists() {
        die(1, "pfctl: /dev/pf: Permission denied");
    }
    if let Some(pattern) = fail_pattern(&dir) {
        let joined = args.join(" ");
        if joined.contains(&pattern) && !dir.join("fail.fired").exists() {
            let _ = fs::write(dir.join("fail.fired"), &joined);
            let what = if opts.file.is_some() && opts.tblcmd.is_none() {
                "DIOCXCOMMIT"
            } else if !opts.kill.is_empty() {
                "DIOCKILLSTATES"
            } else {
                "DIOCGETRULES"
            };
            die(1, &format!("pfctl: {what}: Device busy"));
        }
    }

    let pf = Pf { dir };
    let anchor = opts.anchor.clone().unwrap_or_default();
    if let Some(show) = &opts.show {
        pf.show(show, &anchor);
    } else if let Some(flush) = &opts.flush {
        pf.flush(flush, &anchor);
    } else if let (Some(table), Some(cmd)) = (&opts.table, &opts.tblcmd) {
        pf.table(table, cmd, &anchor, &opts.addresses);
    } else if !opts.kill.is_empty() {
        pf.kill(&opts.kill);
    } else if let (Some(file), Some(text)) = (opts.file.as_deref(), &stdin) {
        pf.load(&anchor, if file == "-" { "stdin" } else { file }, text);
    } else {
        unsupported(&args.join(" "));
    }
}

fn state_dir(argv0: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("FAKE_PFCTL_DIR") {
        return PathBuf::from(d);
    }
    Path::new(argv0)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| die(2, "fake-pfctl: set FAKE_PFCTL_DIR"))
}

fn fail_pattern(dir: &Path) -> Option<String> {
    std::env::var("FAKE_PFCTL_FAIL")
        .ok()
        .or_else(|| fs::read_to_string(dir.join("fail")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn log_call(dir: &Path, args: &[String], stdin: Option<&str>) {
    let mut rec = String::from("$ pfctl");
    for a in args {
        if a.is_empty() || a.contains([' ', '"', '\'', '<', '>', '!']) {
            rec.push_str(&format!(" '{a}'"));
        } else {
            rec.push(' ');
            rec.push_str(a);
        }
    }
    rec.push('\n');
    for line in stdin.unwrap_or("").lines() {
        rec.push_str("< ");
        rec.push_str(line);
        rec.push('\n');
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap_or_else(|e| die(2, &format!("fake-pfctl: cannot write log: {e}")));
    let _ = f.write_all(rec.as_bytes());
}

fn die(code: i32, msg: &str) -> ! {
    eprintln!("{msg}");
    exit(code)
}

fn unsupported(what: &str) -> ! {
    die(2, &format!("fake-pfctl: unsupported invocation: {what}"))
}

/// The options pfctl's getopt string "a:dD:eqf:F:ghi:k:K:L:Nno:Pp:R:rS:s:t:T:vV:x:z" allows,
/// reduced to those maint may use.
#[derive(Default)]
struct Opts {
    anchor: Option<String>,
    file: Option<String>,
    show: Option<String>,
    flush: Option<String>,
    table: Option<String>,
    tblcmd: Option<String>,
    kill: Vec<String>,
    /// What follows the options: the addresses of `-T add` and `-T delete`.
    addresses: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts::default();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
                // getopt stops at the first operand; pfctl reads the rest as table
                // addresses, and refuses them for anything but a table command.
                if matches!(o.tblcmd.as_deref(), Some("add" | "delete")) {
                    o.addresses = args[i..].to_vec();
                    break;
                }
                return Err(format!("unknown command line argument: {a} ..."));
            };
            for (pos, c) in flags.char_indices() {
                if "aDfFikKLoOpRSstTVx".contains(c) {
                    let rest = &flags[pos + c.len_utf8()..];
                    let val = if !rest.is_empty() {
                        rest.to_owned()
                    } else {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("option requires an argument -- {c}"))?
                    };
                    match c {
                        'a' => o.anchor = Some(val),
                        'f' => o.file = Some(val),
                        's' => o.show = Some(lookup(&val, SHOW)?),
                        'F' => o.flush = Some(lookup(&val, FLUSH)?),
                        't' => o.table = Some(val),
                        'T' => o.tblcmd = Some(lookup(&val, TBLCMD)?),
                        'k' => {
                            if o.kill.len() >= 2 {
                                return Err("can only specify -k twice".into());
                            }
                            o.kill.push(val)
                        }
                        _ => unsupported(&format!("-{c}")),
                    }
                    break;
                } else if "qvn".contains(c) {
                    if c == 'n' {
                        unsupported("-n");
                    }
                } else {
                    unsupported(&format!("-{c}"));
                }
            }
            i += 1;
        }
        Ok(o)
    }
}

const SHOW: &[&str] = &[
    "queue",
    "rules",
    "Anchors",
    "Sources",
    "states",
    "info",
    "Interfaces",
    "labels",
    "timeouts",
    "memory",
    "Tables",
    "osfp",
    "all",
];
const FLUSH: &[&str] = &[
    "rules", "Sources", "states", "info", "Tables", "osfp", "Reset", "all",
];
const TBLCMD: &[&str] = &[
    "kill", "flush", "add", "delete", "replace", "show", "test", "zero", "expire",
];

/// pfctl_lookup_option(): a unique prefix selects the option.
fn lookup(arg: &str, list: &[&str]) -> Result<String, String> {
    let hits: Vec<&&str> = list.iter().filter(|o| o.starts_with(arg)).collect();
    match hits.as_slice() {
        [one] => Ok((**one).to_owned()),
        [] => Err(format!("Unknown modifier '{arg}'")),
        _ => Err(format!("{arg} is ambigious")),
    }
}

struct Pf {
    dir: PathBuf,
}

struct Table {
    persist: bool,
    entries: Vec<String>,
}

impl Pf {
    fn anchor_dir(&self, anchor: &str) -> PathBuf {
        self.dir.join("anchors").join(anchor)
    }

    fn main_rules(&self) -> String {
        fs::read_to_string(self.dir.join("main.conf")).unwrap_or_default()
    }

    /// An anchor exists in the kernel while the main ruleset calls it or it holds something.
    fn anchor_exists(&self, anchor: &str) -> bool {
        let call = format!("anchor \"{anchor}\"");
        self.main_rules().lines().any(|l| {
            l.trim_start()
                .strip_prefix(&call)
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
        }) || self.rules(anchor).is_some()
            || !self.tables(anchor).is_empty()
    }

    fn rules(&self, anchor: &str) -> Option<String> {
        fs::read_to_string(self.anchor_dir(anchor).join("rules"))
            .ok()
            .filter(|r| !r.is_empty())
    }

    fn tables(&self, anchor: &str) -> BTreeMap<String, Table> {
        let mut out = BTreeMap::new();
        let Ok(rd) = fs::read_dir(self.anchor_dir(anchor).join("tables")) else {
            return out;
        };
        for e in rd.flatten() {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let persist = text.starts_with("# persist");
            let entries = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(str::to_owned)
                .collect();
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                Table { persist, entries },
            );
        }
        out
    }

    fn write_tables(&self, anchor: &str, tables: &BTreeMap<String, Table>) {
        let tdir = self.anchor_dir(anchor).join("tables");
        let _ = fs::remove_dir_all(&tdir);
        if tables.is_empty() {
            return;
        }
        fs::create_dir_all(&tdir).expect("create tables dir");
        for (name, t) in tables {
            let mut text = String::new();
            if t.persist {
                text.push_str("# persist\n");
            }
            for e in &t.entries {
                text.push_str(e);
                text.push('\n');
            }
            fs::write(tdir.join(name), text).expect("write table");
        }
    }

    fn show(&self, what: &str, anchor: &str) {
        match what {
            "rules" if anchor.is_empty() => print!("{}", self.main_rules()),
            "rules" => match self.rules(anchor) {
                Some(r) => print!("{r}"),
                // pfctl_show_rules() warns and returns -1, which main() ignores: exit 0.
                None if !self.anchor_exists(anchor) => eprintln!("pfctl: Anchor does not exist"),
                None => {}
            },
            "info" => {
                let enabled = fs::read_to_string(self.dir.join("enabled"))
                    .map(|s| s.trim() != "0")
                    .unwrap_or(true);
                let status = format!(
                    "Status: {} for 0 days 01:02:03",
                    if enabled { "Enabled" } else { "Disabled" }
                );
                println!("{status:<44}{:>15}\n", "Debug: err");
                println!("{:<27} {:>14} {:>16}", "State Table", "Total", "Rate");
                println!(
                    "  {:<25} {:>14} {:>14}",
                    "current entries",
                    self.states().len(),
                    ""
                );
            }
            "memory" => {
                // pfctl_show_limits(): `%-13s hard limit %8u`.
                for (name, _) in LIMITS {
                    println!("{name:<13} hard limit {:>8}", self.limit(name));
                }
            }
            "states" => {
                for (_, line) in self.states() {
                    println!("{line}");
                }
            }
            "Tables" => {
                for name in self.tables(anchor).keys() {
                    if anchor.is_empty() {
                        println!("{name}");
                    } else {
                        println!("{name}@{anchor}");
                    }
                }
            }
            other => unsupported(&format!("-s {other}")),
        }
    }

    fn flush(&self, what: &str, anchor: &str) {
        match what {
            "rules" => {
                if anchor.is_empty() {
                    // The disaster maint must never cause; recorded so a test would see it.
                    let _ = fs::write(self.dir.join("main.conf"), "");
                } else {
                    let _ = fs::remove_file(self.anchor_dir(anchor).join("rules"));
                    // Tables nothing refers to any more and that are not persist go away.
                    let mut tables = self.tables(anchor);
                    tables.retain(|_, t| t.persist);
                    self.write_tables(anchor, &tables);
                }
                eprintln!("rules cleared");
            }
            "Tables" => {
                let n = self.tables(anchor).len();
                self.write_tables(anchor, &BTreeMap::new());
                eprintln!("{n} tables deleted.");
            }
            other => unsupported(&format!("-F {other}")),
        }
    }

    fn table(&self, name: &str, cmd: &str, anchor: &str, addresses: &[String]) {
        match cmd {
            // pfctl_table(): `-T add` / `-T delete` with the addresses as operands; it
            // reports "N/M addresses added." on stderr. maint only changes tables its anchor
            // defined, so a missing one is an error here (pfctl would create it).
            "add" | "delete" => {
                let mut tables = self.tables(anchor);
                let Some(t) = tables.get_mut(name) else {
                    die(255, "pfctl: Table does not exist.");
                };
                let mut changed = 0;
                for a in addresses {
                    let printed = match normalize_net(a) {
                        Ok(p) => p,
                        Err(m) => die(1, &format!("pfctl: {m}")),
                    };
                    let had = t.entries.iter().position(|e| *e == printed);
                    match (cmd, had) {
                        ("add", None) => {
                            t.entries.push(printed);
                            changed += 1;
                        }
                        ("delete", Some(i)) => {
                            t.entries.remove(i);
                            changed += 1;
                        }
                        _ => {}
                    }
                }
                self.write_tables(anchor, &tables);
                let verb = if cmd == "add" { "added" } else { "deleted" };
                eprintln!("{changed}/{} addresses {verb}.", addresses.len());
            }
            "show" => {
                let tables = self.tables(anchor);
                let Some(t) = tables.get(name) else {
                    die(255, "pfctl: Table does not exist");
                };
                for e in &t.entries {
                    // print_addrx(): feedback char, space, '!' or space, address.
                    match e.strip_prefix('!') {
                        Some(a) => println!("  !{a}"),
                        None => println!("   {e}"),
                    }
                }
            }
            other => unsupported(&format!("-T {other}")),
        }
    }

    fn states(&self) -> Vec<(String, String)> {
        fs::read_to_string(self.dir.join("states"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('\t') {
                Some((label, state)) => (label.to_owned(), state.to_owned()),
                None => ("-".to_owned(), l.to_owned()),
            })
            .collect()
    }

    fn kill(&self, kill: &[String]) {
        let states = self.states();
        let keep: Vec<&(String, String)> = match kill.first().map(String::as_str) {
            Some("label") => {
                let Some(label) = kill.get(1).filter(|l| !l.is_empty()) else {
                    die(1, "pfctl: no label specified");
                };
                states.iter().filter(|(l, _)| l != label).collect()
            }
            Some("key") => {
                let Some(key) = kill.get(1) else {
                    die(1, "pfctl: no key specified");
                };
                let Some(want) = parse_key(key) else {
                    die(
                        1,
                        "pfctl: pfctl_key_kill_states: key must be \"protocol host1:port1 direction host2:port2\" format",
                    );
                };
                states
                    .iter()
                    .filter(|(_, s)| wire_key(s).as_ref() != Some(&want))
                    .collect()
            }
            _ => unsupported("-k host/network, id or gateway kills"),
        };
        let killed = states.len() - keep.len();
        let text: String = keep.iter().map(|(l, s)| format!("{l}\t{s}\n")).collect();
        fs::write(self.dir.join("states"), text).expect("write states");
        eprintln!("killed {killed} states");
    }

    /// `pfctl [-a ANCHOR] -f FILE`: OpenBSD's own parser (pfparse) decides whether the text is
    /// accepted, exactly as pfctl's would; then the rules (as pfctl prints them back) and the
    /// tables the text defines replace the anchor's in one go, as the kernel transaction does.
    fn load(&self, anchor: &str, file: &str, text: &str) {
        let parsed = openbsd_parse(anchor, file, text);
        if anchor.is_empty() {
            // The main ruleset: what `pfctl -s rules` prints. Its own tables are not kept;
            // maint never reads or writes them.
            let rules: String = parsed.rules.iter().map(|r| format!("{r}\n")).collect();
            let _ = fs::write(self.dir.join("main.conf"), rules);
            return;
        }
        // While a load replaces a table the kernel holds its old and new entries together,
        // against the one `table-entries` limit shared by every table on the host.
        let held: usize = self.all_table_entries();
        for (name, t, line) in &parsed.tables {
            let limit = self.limit("table-entries");
            if held + t.entries.len() > limit {
                eprintln!("{file}:{line}: cannot define table {name}: Cannot allocate memory");
                die(1, "pfctl: Syntax error in config file: pf rules not loaded");
            }
        }
        let mut tables = self.tables(anchor);
        for (name, t, _) in parsed.tables {
            tables.insert(name, t);
        }
        // Tables the rules refer to but the text does not define are created empty.
        for r in &parsed.table_refs {
            tables.entry(r.clone()).or_insert(Table {
                persist: false,
                entries: Vec::new(),
            });
        }
        tables.retain(|name, t| t.persist || parsed.table_refs.contains(name));
        fs::create_dir_all(self.anchor_dir(anchor)).expect("create anchor dir");
        let rules: String = parsed.rules.iter().map(|r| format!("{r}\n")).collect();
        fs::write(self.anchor_dir(anchor).join("rules"), rules).expect("write rules");
        self.write_tables(anchor, &tables);
    }

    /// Entries in every table of every anchor, for the `table-entries` limit.
    fn all_table_entries(&self) -> usize {
        let Ok(rd) = fs::read_dir(self.dir.join("anchors")) else {
            return 0;
        };
        let mut stack: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        let mut n = 0;
        while let Some(p) = stack.pop() {
            if p.file_name().is_some_and(|f| f == "tables") {
                for t in fs::read_dir(&p).into_iter().flatten().flatten() {
                    let text = fs::read_to_string(t.path()).unwrap_or_default();
                    n += text
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.is_empty())
                        .count();
                }
            } else if p.is_dir() {
                stack.extend(
                    fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            }
        }
        n
    }

    /// A limit as `pfctl -s memory` shows it: the file `limits` holds `NAME NUMBER` lines
    /// (set by tests, as `set limit` in pf.conf would); otherwise pf's defaults (pfvar.h).
    fn limit(&self, name: &str) -> usize {
        let set = fs::read_to_string(self.dir.join("limits")).unwrap_or_default();
        set.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| {
                LIMITS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, v)| *v)
            })
    }
}

/// pf's default limits, in `pfctl -s memory` order (pfctl.c `pf_limits[]`, pfvar.h); frags
/// depends on the host's clusters, so a plausible value stands in.
const LIMITS: &[(&str, usize)] = &[
    ("states", 100_000),
    ("src-nodes", 10_000),
    ("frags", 65_536),
    ("tables", 1_000),
    ("table-entries", 200_000),
    ("pktdelay-pkts", 10_000),
    ("anchors", 512),
];

/// What OpenBSD's parser made of a ruleset.
struct Ruleset {
    /// Tables the text defines: name, entries, and the line the definition ends on.
    tables: Vec<(String, Table, usize)>,
    /// Tables the rules refer to.
    table_refs: Vec<String>,
    /// Rules as `pfctl -s rules` prints them.
    rules: Vec<String>,
}

/// Runs the text through OpenBSD's parser (`pfctl -n -v`): on rejection, fails as pfctl does
/// (its `FILE:LINE: message` lines, then "Syntax error in config file", exit 1); on
/// acceptance, returns the rules as pfctl prints them and the tables as the text defines them.
fn openbsd_parse(anchor: &str, file: &str, text: &str) -> Ruleset {
    use maint_testkit::pfparse;
    if let Err(why) = pfparse::locate() {
        die(
            2,
            &format!("fake-pfctl: {why}; the fake never loads a ruleset OpenBSD has not accepted"),
        );
    }
    let verdict = pfparse::parse(Some(anchor).filter(|a| !a.is_empty()), text);
    if !verdict.accepted {
        // pfparse names standard input "stdin", as pfctl does; a file keeps its own name.
        for line in verdict.said.lines() {
            eprintln!("{}", line.replacen("stdin:", &format!("{file}:"), 1));
        }
        die(1, "pfctl: Syntax error in config file: pf rules not loaded");
    }
    let mut rs = Ruleset {
        tables: table_defs(text),
        table_refs: Vec::new(),
        rules: Vec::new(),
    };
    let mut printed_tables = Vec::new();
    for line in verdict.printed.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("table <") {
            printed_tables.push(line.to_owned());
        } else if !line.starts_with("set ") {
            for name in line.split('<').skip(1).filter_map(|r| r.split_once('>')) {
                if !rs.table_refs.contains(&name.0.to_owned()) {
                    rs.table_refs.push(name.0.to_owned());
                }
            }
            rs.rules.push(line.to_owned());
        }
    }
    // The fake reads table entries itself (pf prints both /0 networks as `any`, losing the
    // family); it must agree with OpenBSD's reading of every one.
    if rs.tables.len() != printed_tables.len() {
        die(
            2,
            "fake-pfctl: found a different number of tables than OpenBSD did",
        );
    }
    for ((name, t, _), line) in rs.tables.iter().zip(&printed_tables) {
        let ours: Vec<String> = t
            .entries
            .iter()
            .map(|e| e.replace("0.0.0.0/0", "any").replace("::/0", "any"))
            .collect();
        let theirs: Vec<&str> = line
            .split_once('{')
            .and_then(|(_, r)| r.rsplit_once('}'))
            .map(|(body, _)| body.split_whitespace().collect())
            .unwrap_or_default();
        if ours != theirs || !line.starts_with(&format!("table <{name}>")) {
            die(
                2,
                &format!("fake-pfctl: read table <{name}> as {ours:?}, OpenBSD as {line}"),
            );
        }
    }
    rs
}

/// The tables a ruleset defines, in order, with the line each definition ends on. The text
/// has passed OpenBSD's parser, so only the shape maint writes needs reading here.
fn table_defs(text: &str) -> Vec<(String, Table, usize)> {
    let mut out = Vec::new();
    let mut stmt = String::new();
    let mut depth = 0i32;
    for (no, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        stmt.push(' ');
        stmt.push_str(line);
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        if depth > 0 {
            continue;
        }
        let s = std::mem::take(&mut stmt);
        let s = s.trim();
        if s.starts_with("table") {
            match parse_table_def(s) {
                Ok((name, t)) => out.push((name, t, no + 1)),
                Err(m) => die(
                    2,
                    &format!("fake-pfctl: cannot read a table OpenBSD accepted: {m}"),
                ),
            }
        }
    }
    out
}

fn parse_table_def(s: &str) -> Result<(String, Table), String> {
    let rest = s.strip_prefix("table").unwrap_or(s).trim_start();
    let (name, rest) = rest
        .strip_prefix('<')
        .and_then(|r| r.split_once('>'))
        .ok_or("no <name>")?;
    let mut rest = rest.trim();
    let mut persist = false;
    loop {
        if let Some(r) = rest.strip_prefix("persist") {
            persist = true;
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix("counters") {
            rest = r.trim_start();
        } else {
            break;
        }
    }
    let body = rest
        .strip_prefix('{')
        .and_then(|r| r.trim_end().strip_suffix('}'))
        .unwrap_or("");
    let mut entries = Vec::new();
    for tok in body.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
        let (neg, addr) = match tok.strip_prefix('!') {
            Some(a) => (true, a),
            None => (false, tok),
        };
        let printed = normalize_net(addr)?;
        entries.push(if neg { format!("!{printed}") } else { printed });
    }
    Ok((name.to_owned(), Table { persist, entries }))
}

/// An address or network as print_addrx() shows it: no `/32` or `/128` for hosts. Host bits
/// set under the mask are refused, which is stricter than pfctl and catches sloppy callers.
fn normalize_net(s: &str) -> Result<String, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("illegal address {s}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        Some(l) => l.parse().map_err(|_| format!("illegal netmask {s}"))?,
        None => max,
    };
    if len > max {
        return Err(format!("illegal netmask {s}"));
    }
    let bits: u128 = match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    };
    let host_mask = if len == max {
        0
    } else {
        u128::MAX >> (128 - (max - len))
    };
    if bits & host_mask != 0 {
        return Err(format!("{s}: host bits set"));
    }
    Ok(if len == max {
        ip.to_string()
    } else {
        format!("{ip}/{len}")
    })
}

/// `tcp A <- B` as pfctl_key_kill_states() reads it: (proto, source, destination).
fn parse_key(key: &str) -> Option<(String, String, String)> {
    let t: Vec<&str> = key.split_whitespace().collect();
    let [proto, h1, dir, h2] = t.as_slice() else {
        return None;
    };
    match *dir {
        "->" => Some((proto.to_string(), h1.to_string(), h2.to_string())),
        "<-" => Some((proto.to_string(), h2.to_string(), h1.to_string())),
        _ => None,
    }
}

/// The wire key of a `pfctl -s states` line, which is what DIOCKILLSTATES compares.
fn wire_key(state: &str) -> Option<(String, String, String)> {
    let mut t = state.split_whitespace().peekable();
    let _ifname = t.next()?;
    let proto = t.next()?.to_owned();
    let mut h1 = t.next()?.to_owned();
    if let Some(w) = t.next_if(|x| x.starts_with('(')) {
        h1 = w.trim_matches(|c| c == '(' || c == ')').to_owned();
    }
    let dir = t.next()?;
    let mut h2 = t.next()?.to_owned();
    if let Some(w) = t.next_if(|x| x.starts_with('(')) {
        h2 = w.trim_matches(|c| c == '(' || c == ')').to_owned();
    }
    match dir {
        "->" => Some((proto, h1, h2)),
        "<-" => Some((proto, h2, h1)),
        _ => None,
    }
}
