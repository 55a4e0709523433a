//! `maint`: put a website into maintenance at the packet filter.
//!
//! This file only wires things together: parse the command line, set up logging, load the
//! config, hand the command to the controller or the server, and turn the result into output
//! and an exit code.

mod admission;
mod audit;
mod certs;
mod cli;
mod config;
mod control;
mod controller;
mod finding;
mod metrics;
mod output;
mod pass;
mod request;
mod server;
mod sources;
mod state;
mod time;

use std::process::ExitCode;

use cli::{exit, Cli, Command};
use config::Config;
use controller::{Controller, Fail};
use request::{OffRequest, OnRequest};

fn main() -> ExitCode {
    let cli = Cli::from_env();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_stdout();
    }
    init_logging(&cli);
    let result = run(&cli);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fail) => {
            let code = match &fail {
                Fail::Input(_) => exit::USAGE,
                Fail::Unhealthy(_) => exit::SERVER_UNHEALTHY,
                Fail::System(_) => exit::FAILED,
            };
            let err = fail.error();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "changed": false, "error": format!("{err:#}"), "exit": code })
                );
            }
            eprintln!("maint: error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Fail> {
    // Documentation needs no config.
    match &cli.command {
        Command::Completions(args) => {
            let mut cmd = cli::command();
            clap_complete::generate(args.shell, &mut cmd, "maint", &mut std::io::stdout());
            return Ok(exit::OK);
        }
        Command::Man(args) => {
            man(args).map_err(Fail::Input)?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let style = output::Style {
        json: cli.json,
        quiet: cli.quiet,
    };
    // `off` must work with a broken config: it falls back to defaults and the state record.
    let config = match (Config::load(&cli.config), &cli.command) {
        (Ok(c), _) => c,
        (Err(e), Command::Off(_)) => {
            if !cli.quiet {
                eprintln!("maint: warning: {e:#}; using built-in defaults and the state record");
            }
            Config::default()
        }
        (Err(e), _) => return Err(Fail::Input(e)),
    };
    match &cli.command {
        Command::Serve(args) => {
            // The keeper is the controller's, the server only holds its link: the server
            // never reaches into the firewall.
            let startup = server::Startup {
                window: controller::keeper::recorded_window(&config),
                after_bind: {
                    let (config, path, background) =
                        (config.clone(), cli.config.clone(), args.background);
                    Box::new(move || {
                        controller::keeper::restore(&config);
                        if !nix::unistd::Uid::effective().is_root() {
                            tracing::info!("not root: maint's firewall state is not kept");
                            return Ok(None);
                        }
                        controller::keeper::spawn(&config, &path, background).map(Some)
                    })
                },
            };
            server::run(config, cli.config.clone(), args.background, startup)?;
            Ok(exit::OK)
        }
        Command::On(args) => {
            let request =
                OnRequest::new(args, &config, std::time::SystemTime::now()).map_err(Fail::Input)?;
            let dry_run = request.dry_run;
            let controller = Controller::new(config, cli.config.clone());
            let mut outcome = controller.on(request)?;
            let drain_end = outcome.drain_end;
            if let (Some(until), false) = (drain_end, dry_run) {
                if !style.quiet && !style.json {
                    output::outcome(style, "on", &outcome);
                    outcome.warnings.clear();
                }
                controller.finish_drain(&mut outcome, until)?;
                if style.quiet || style.json {
                    output::outcome(style, "on", &outcome);
                } else if let Some(cut) = outcome.drain_cut {
                    println!("drain over: {cut} connection(s) still open on the app were cut");
                }
                return Ok(exit::OK);
            }
            output::outcome(style, "on", &outcome);
            Ok(exit::OK)
        }
        Command::Off(args) => {
            let outcome =
                Controller::new(config, cli.config.clone()).off(OffRequest::from(args))?;
            output::outcome(style, "off", &outcome);
            Ok(exit::OK)
        }
        Command::Status(args) => {
            let controller = Controller::new(config, cli.config.clone());
            if args.format == cli::StatusFormat::Prometheus {
                let text = controller.metrics()?;
                output::to_file_or_stdout(args.output.as_deref(), &text).map_err(Fail::System)?;
                return Ok(exit::OK);
            }
            let report = controller.status()?;
            let text = if cli.json || args.format == cli::StatusFormat::Json {
                output::json_text(&report)
            } else {
                output::status_text(&report)
            };
            output::to_file_or_stdout(args.output.as_deref(), &text).map_err(Fail::System)?;
            Ok(if !report.kernel_readable {
                exit::KERNEL_UNREADABLE
            } else if !report.drift.is_empty() {
                exit::DRIFT
            } else {
                exit::OK
            })
        }
        Command::Check => {
            let findings = Controller::new(config, cli.config.clone()).check()?;
            output::findings(style, &findings);
            Ok(if findings.iter().any(|f| f.failed()) {
                exit::FAILED
            } else {
                exit::OK
            })
        }
        Command::Pass(args) => {
            let controller = Controller::new(config, cli.config.clone());
            match &args.action {
                cli::PassAction::New(a) => {
                    let until =
                        sources::window_end(a.for_.as_deref(), None, std::time::SystemTime::now())
                            .map_err(|e| Fail::Input(e.into()))?;
                    let made = controller.pass_new(until, a.note.clone())?;
                    output::pass_made(style, &made);
                }
                cli::PassAction::List => output::pass_list(style, &controller.pass_list()),
                cli::PassAction::Revoke(a) => {
                    let revoked = controller.pass_revoke(&a.ids, a.all)?;
                    output::pass_revoked(style, &revoked);
                }
            }
            Ok(exit::OK)
        }
        Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
    }
}

/// A command line tool whose reader went away (`maint --json status | head -1`) ends quietly,
/// as Unix tools do, instead of failing on the write: the default action of SIGPIPE, which
/// Rust's runtime sets to "ignore". The server keeps ignoring it: a client closing a socket
/// must not end it.
fn quiet_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in signal context; this
    // runs before any thread is started.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// `maint man`: maint(1), one command's page, or every page into a directory.
fn man(args: &cli::ManArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = cli::command();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // A page per command, and per subcommand of those that have them (`maint pass new`).
        let visible = |c: &clap::Command| {
            c.get_subcommands()
                .filter(|s| s.get_name() != "help" && !s.is_hide_set())
                .cloned()
                .collect::<Vec<_>>()
        };
        let pages = visible(&cmd)
            .into_iter()
            .flat_map(|c| {
                let mut all = visible(&c);
                all.insert(0, c);
                all
            })
            .chain([cmd.clone()]);
        for page in pages {
            clap_mangen::Man::new(page)
                .generate_to(dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
        }
        return Ok(());
    }
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .filter(|n| n != "help")
                .collect();
            cmd.find_subcommand(name).cloned().with_context(|| {
                format!("no command {name:?}; pages exist for: {}", names.join(", "))
            })?
        }
    };
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(())
}

/// The human log on stderr, filtered by `-v`/`-q` and `RUST_LOG`; audit entries go to the
/// journal or syslog where there is one (see [`audit`]), else through the same filter (the
/// server logs at info, so its log keeps them).
fn init_logging(cli: &Cli) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
    use tracing_subscriber::prelude::*;
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 if matches!(cli.command, Command::Serve(_)) => "info",
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let audit = audit::layer();
    let to_sink = audit.is_some();
    let human = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(env.and(filter_fn(move |meta| !(to_sink && audit::is_entry(meta)))));
    tracing_subscriber::registry()
        .with(human)
        .with(audit)
        .init();
}
