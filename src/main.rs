//! Thin entry point: parse the command line, set up logging, run, print the error once.

use clap::Parser;
use pgwarden::cli::{Cli, Command, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    // Started through a shim of `pgwarden exec`: become the installation's program.
    if let Some(error) = pgwarden::binaries::shims::run_if_shim() {
        eprintln!("error: {error}");
        return ExitCode::from(127);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    pgwarden::config::project::choose(cli.project_choice());
    // Only `run` keeps a log file (for `pgwarden logs`); the other commands are short-lived.
    // It lives in the instance's state directory, so `run`'s config is loaded here, once.
    let run_config = match &cli.command {
        Command::Run(args) => Some(
            pgwarden::instance::registry::with_remembered_flags(args.sources())
                .and_then(|sources| pgwarden::config::Config::load(&sources)),
        ),
        _ => None,
    };
    let log_file = run_config
        .as_ref()
        .and_then(|loaded| loaded.as_ref().ok())
        // A run refused for its installation's owner creates nothing, not even its log.
        .filter(|config| pgwarden::binaries::check_source(&config.source).is_ok())
        .and_then(pgwarden::instance::logfile::for_run);
    let verbosity = match &cli.command {
        Command::Run(args) => args.verbosity,
        Command::Start(args) | Command::Restart(args) => args.run.verbosity,
        Command::Exec(args) => args.run.verbosity,
        _ => Default::default(),
    };
    init_tracing(cli.log_format, verbosity, log_file);
    // One thread is plenty for a supervisor, and costs least while idle; blocking work
    // (extraction, initdb) goes to tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(pgwarden::commands::dispatch(cli, run_config)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

/// clap's own exit (help, version, usage errors), except that `check` exits 3 on a usage error
/// as pg_isready does ("no attempt"), so that 1 is never mistaken for "rejecting".
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    let is_check = std::env::args().nth(1).as_deref() == Some("check");
    let code = if is_check && e.use_stderr() {
        3
    } else {
        e.exit_code()
    };
    ExitCode::from(code as u8)
}

fn init_tracing(
    format: LogFormat,
    verbosity: pgwarden::cli::Verbosity,
    log_file: Option<pgwarden::instance::logfile::RotatingFile>,
) {
    use pgwarden::log_lines;
    // RUST_LOG, when set, decides for stderr and the file alike.
    let filter = |default: String| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let stderr = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    };
    // A `run` that `pgwarden start` put in the background has its stderr in a file that is not
    // rotated: only warnings and errors go there; the rotated log file gets everything.
    let background = std::env::var_os(pgwarden::commands::BACKGROUND_ENV).is_some();
    let stderr_filter = if background {
        EnvFilter::new(log_lines::stderr_filter(0, false))
            .add_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
    } else {
        filter(log_lines::stderr_filter(verbosity.verbose, verbosity.quiet))
    };
    let stderr = stderr.with_filter(stderr_filter);
    let file = log_file.map(|file| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_filter(filter(log_lines::file_filter()))
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
}
