//! The command line: every subcommand, flag and help text. Parsing only; `main` dispatches.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit codes are part of the interface: cron jobs and Ansible decide on them.
pub mod exit {
    /// Done (including "nothing to change").
    pub const OK: u8 = 0;
    /// Failed: the firewall or the system refused; nothing was left half-applied.
    pub const FAILED: u8 = 1;
    /// Bad usage or input: a malformed prefix, an unknown alias, a broken config. Nothing changed.
    pub const USAGE: u8 = 2;
    /// `on` refused because the maintenance server did not answer (use --force to override).
    pub const SERVER_UNHEALTHY: u8 = 3;
    /// `status` found drift: the kernel, the maintenance server and the record disagree
    /// (a table flushed away, a dead server, a changed redirect). The report says what.
    pub const DRIFT: u8 = 4;
    /// `status` could not read the firewall (not root): it reports the record's word only.
    pub const KERNEL_UNREADABLE: u8 = 5;
}

const AFTER_HELP: &str = "\
Examples:
  maint on                            everyone sees the maintenance page
  maint on --except office            everyone but the `office` alias from the config
  maint on 198.51.100.0/24 --for 30m  only these sources, ends by itself after 30 minutes
  maint on --until 2026-12-01T02:00 --reason 'Database upgrade'
  maint status --json                 machine-readable state, for Ansible and monitoring
  maint off                           everyone back to the app, at once

Exit codes: 0 done (also when nothing changed), 1 failed, 2 bad usage or input,
3 maintenance server not healthy (`on` refused; --force overrides),
4 `status` found drift (kernel, server and record disagree), 5 `status` could not read
the firewall (run it as root).";

/// Put a website into maintenance at the packet filter.
///
/// `maint on` redirects TCP ports 80 and 443 (configurable) from the matched sources to a
/// maintenance server that maint embeds, and kills the matched clients' open connections so
/// they see the maintenance page at once. `maint off` sends them back to the app at once.
/// Excepted sources and the host itself keep reaching the app, so you can test it on the real
/// ports before turning maintenance off. Nothing but the web ports is touched: SSH stays open.
#[derive(Debug, Parser)]
#[command(
    name = "maint",
    version,
    propagate_version = true,
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file. A missing file at the default path means built-in defaults.
    #[arg(
        long,
        global = true,
        env = "MAINT_CONFIG",
        value_name = "FILE",
        default_value = crate::config::DEFAULT_PATH,
        help_heading = "Global options"
    )]
    pub config: PathBuf,

    /// Print machine-readable JSON instead of text (for scripts, cron and Ansible).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// More log output (-v info, -vv debug, -vvv trace). Also: RUST_LOG.
    #[arg(
        short,
        long,
        global = true,
        action = clap::ArgAction::Count,
        conflicts_with = "quiet",
        help_heading = "Global options"
    )]
    pub verbose: u8,

    /// Print nothing but errors: no report of what was done, no warnings (for cron). With
    /// --json the JSON object is still printed; `status` and `check` still print their report
    /// (`check` only its failures).
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put the site into maintenance for the given sources (default: all).
    ///
    /// SOURCES are IPv4/IPv6 addresses, CIDR prefixes, names of aliases from the config's
    /// [aliases] table, or `all` (every IPv4 and IPv6 source). Overlapping prefixes are merged.
    /// Running the same `on` twice changes nothing the second time. If no maintenance server
    /// runs, one is started in the background on the configured defaults.
    #[command(after_help = ON_EXAMPLES)]
    On(OnArgs),
    /// End maintenance: remove maint's redirect and send clients back to the app at once.
    ///
    /// Works without a config file, with the maintenance server dead, and with a missing or
    /// corrupt state record. Removes only what maint created.
    #[command(after_help = OFF_EXAMPLES)]
    Off(OffArgs),
    /// Show whether maintenance is on, for whom, until when, who switched it, and the
    /// server's health.
    ///
    /// Compares three things: the state record (what was asked for), maint's table in the
    /// kernel (by the digest in its stamp, at the same cost for ten prefixes or a million),
    /// and the maintenance server. Where they disagree that is drift, with exit code 4; run
    /// as a user who cannot read the firewall it reports the record's word and exits 5,
    /// never "off" by mistake.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Check the config, the firewall, the maintenance server and certificates; change nothing.
    Check,
    /// Pass links: let testers through from wherever they are, without knowing their address.
    Pass(PassArgs),
    /// Run the maintenance server in the foreground (for systemd, rc.d, or by hand).
    ///
    /// Started as root, it binds its ports and reads its files, then runs as the configured
    /// unprivileged user. SIGHUP reloads the page and config; SIGTERM drains and exits.
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// Example: maint completions bash > /etc/bash_completion.d/maint
    Completions(CompletionsArgs),
    /// Print a manual page (roff): maint(1), or one command's, such as maint-on(1).
    ///
    /// Examples: `maint man | man -l -`, `maint man on | man -l -`, and for packaging
    /// `maint man --dir /usr/share/man/man1`, which writes every page.
    Man(ManArgs),
}

const ON_EXAMPLES: &str = "\
Examples:
  maint on                                  everyone sees the maintenance page
  maint on --except office                  everyone but the `office` alias from the config
  maint on 198.51.100.0/24 2001:db8::/32    only these sources
  maint on --for 30m --reason 'Database upgrade'
                                            ends by itself after 30 minutes
  maint on --until 2026-12-01T02:00         ends by itself at that local time
  maint on --dry-run --except office        print the firewall text, change nothing
  maint --json on --except office           for scripts: one JSON object with `changed`";

const OFF_EXAMPLES: &str = "\
Examples:
  maint off                 everyone back to the app, at once
  maint off --dry-run       print what would be removed, change nothing
  maint --json off          for scripts: one JSON object with `changed`";

const STATUS_EXAMPLES: &str = "\
Examples:
  maint status              a few lines for a person
  maint --json status       every field, for scripts, Ansible and monitoring
  maint status || alert     exit 0: as recorded; 4: drift (the report says what); 5: not root
  maint status --format prometheus --output /var/lib/prometheus/node-exporter/maint.prom
                            metrics for node_exporter's textfile collector (from cron)";

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (on, off, status, check, serve, completions).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,

    /// Write every page (maint.1, maint-on.1, ...) into this directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The command line as it is parsed and documented: clap's derive, plus what the derive cannot
/// say. The global options mean nothing to `completions` and `man`, so those two are rebuilt
/// without them: their help, manual pages and completions do not offer options they ignore
/// (clap propagates global options to every subcommand and cannot leave one out).
pub fn command() -> clap::Command {
    let mut cmd = <Cli as CommandFactory>::command();
    cmd.build();
    let bare = [
        (
            "completions",
            CompletionsArgs::augment_args(clap::Command::new("completions")),
        ),
        ("man", ManArgs::augment_args(clap::Command::new("man"))),
    ];
    for (name, mut fresh) in bare {
        let built = cmd.find_subcommand(name).expect("defined above").clone();
        if let Some(about) = built.get_about() {
            fresh = fresh.about(about.clone());
        }
        if let Some(long) = built.get_long_about() {
            fresh = fresh.long_about(long.clone());
        }
        if let Some(name) = built.get_display_name() {
            fresh = fresh.display_name(name.to_owned());
        }
        if let Some(bin) = built.get_bin_name() {
            fresh = fresh.bin_name(bin.to_owned());
        }
        fresh = fresh.version(env!("CARGO_PKG_VERSION"));
        fresh.build();
        cmd = cmd.mut_subcommand(name, |_| fresh);
    }
    cmd
}

impl Cli {
    /// Parses the process's arguments; prints help or a usage error and exits as clap does.
    /// Under `--json` a usage error is also one JSON object on stdout, as every other failure
    /// is, so a script parsing stdout always gets one.
    pub fn from_env() -> Cli {
        let parsed = command()
            .try_get_matches()
            .and_then(|m| Cli::from_arg_matches(&m));
        parsed.unwrap_or_else(|e| {
            if wants_json(std::env::args_os()) && e.use_stderr() {
                println!("{}", usage_error_json(&e));
            }
            e.exit()
        })
    }
}

/// Whether `--json` is among the options of a command line clap could not parse.
fn wants_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The JSON object for a usage error: clap's message without its "error: " and usage lines.
fn usage_error_json(e: &clap::Error) -> serde_json::Value {
    let text = e.render().to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    serde_json::json!({ "changed": false, "error": message, "exit": exit::USAGE })
}

#[derive(Debug, Args)]
pub struct OnArgs {
    /// Sources to redirect: addresses, CIDR prefixes, alias names, or `all` (the default).
    #[arg(value_name = "SOURCES")]
    pub sources: Vec<String>,

    /// Sources that keep reaching the app (same forms as SOURCES; repeat or separate by commas).
    #[arg(long, short = 'x', value_name = "SOURCE", value_delimiter = ',')]
    pub except: Vec<String>,

    /// End maintenance by itself after this long (e.g. 30m, 2h, 1h30m).
    #[arg(
        long = "for",
        value_name = "DURATION",
        conflicts_with = "until",
        allow_hyphen_values = true
    )]
    pub for_: Option<String>,

    /// End maintenance by itself at this time (e.g. 2026-12-01T02:00 local, or RFC 3339).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Why the site is down; shown on the maintenance page and in `status`.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Print what would be loaded into the firewall and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Apply even if the maintenance server does not answer (visitors may see errors).
    #[arg(long)]
    pub force: bool,

    /// Let connections already open on the app finish for up to DURATION (e.g. 30s): new
    /// connections see the page at once; those still open at the end are cut. `on` waits
    /// for the end (an interrupted `on` leaves it to the keeper). While draining, nftables
    /// redirects only connection-opening SYNs, so hosts that tracked no connections before
    /// keep theirs on the app too.
    #[arg(long, value_name = "DURATION")]
    pub drain: Option<String>,
}

#[derive(Debug, Args)]
pub struct PassArgs {
    #[command(subcommand)]
    pub action: PassAction,
}

#[derive(Debug, Subcommand)]
pub enum PassAction {
    /// Make a pass link: a visitor who opens it on the maintenance page reaches the app.
    ///
    /// Prints the link once (maint keeps only its SHA-256). Opening it while maintenance is
    /// on lets the visitor's own address through (IPv4: the address; IPv6: its /64, see
    /// [pass] in the config) until the pass ends: at --for, or with the maintenance it was
    /// made for (made while maintenance is off: the next one). Everyone behind the same
    /// address (NAT) gets through too; behind a CDN or proxy passes cannot work.
    #[command(after_help = PASS_NEW_EXAMPLES)]
    New(PassNewArgs),
    /// List passes and the addresses they let through (never their links).
    List,
    /// End passes now: the addresses they let through see the page again at once.
    Revoke(PassRevokeArgs),
}

const PASS_NEW_EXAMPLES: &str = "\
Examples:
  maint pass new --for 2h --note 'QA team'   a link that works for two hours
  maint --json pass new                      {id, url, until, note} for scripts";

#[derive(Debug, Args)]
pub struct PassNewArgs {
    /// End the pass after this long (e.g. 30m, 2h); without it, it ends with maintenance.
    #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
    pub for_: Option<String>,

    /// Who or what it is for, shown by `pass list` and `status` and in the audit trail.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

#[derive(Debug, Args)]
pub struct PassRevokeArgs {
    /// Ids of the passes to end, as `maint pass list` shows them.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,

    /// End every pass.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to report: `text` for a person, `json` (as `--json`), or `prometheus` for the
    /// Prometheus text format: the same metrics as the server's `[metrics] listen`, with the
    /// kernel checked by this command. With `prometheus` the exit code is 0 once the metrics
    /// are written: drift is in them (`maint_kernel_in_sync`), not in the exit code.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,

    /// Write the report to FILE instead of stdout, atomically (a temporary file renamed over
    /// it, mode 0644), as node_exporter's textfile collector needs: it never reads half a file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct OffArgs {
    /// Print what would be removed and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// (internal) end maintenance at this Unix time if the window is still the same; used to
    /// close windows on firewalls that cannot expire rules by themselves.
    #[arg(long, hide = true, value_name = "UNIX_TIME")]
    pub scheduled: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// (internal) started by `maint on`: write a pid file and log to the state directory.
    #[arg(long, hide = true)]
    pub background: bool,
}
