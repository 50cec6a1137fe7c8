//! Thin entry point: parse the command line, set up logging, run, print the error once.

use clap::Parser;
use pgwarden::commands::{Cli, Command, LogFormat};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    // The one place argv is read.
    let args: Vec<OsString> = std::env::args_os().collect();
    // Before anything else: a detached helper that a server started runs idle from here on.
    pgwarden::os::background::lower_if_asked(
        &args,
        &[
            pgwarden::cluster::spare::maker::VERB,
            pgwarden::instance::abandoned::SWEEP_VERB,
        ],
    );
    // Started through a shim of `pgwarden exec`: become the installation's program.
    if let Some(error) = pgwarden::binaries::shims::run_if_shim(&args) {
        eprintln!("error: {error}");
        return ExitCode::from(pgwarden::error::EXIT_CANNOT_EXEC as u8);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args),
    };
    // Only a supervisor keeps a log file (for `pgwarden logs`): `run`, and `exec --ephemeral`,
    // which supervises its throwaway server in its own process; the other commands are
    // short-lived. It lives in the instance's state directory, so the instance is resolved
    // here, once.
    let supervises = match &cli.command {
        Command::Run(args) => Some(args.sources()),
        Command::Exec(args) if args.run.ephemeral => Some(args.run_args().sources()),
        _ => None,
    };
    let embedded = matches!(&cli.command, Command::Exec(args) if args.run.ephemeral);
    let run_instance = supervises
        .map(|sources| pgwarden::instance::resolve::resolve(cli.globals().sources(sources)));
    let log_file = run_instance
        .as_ref()
        .and_then(|resolved| resolved.as_ref().ok())
        .map(|resolved| &resolved.config)
        // A run refused for its installation's or cache's owner creates nothing, not even its log.
        .filter(|config| {
            pgwarden::binaries::check_trust(&config.source, &config.install_dir).is_ok()
        })
        .and_then(pgwarden::instance::logfile::for_run);
    let verbosity = match &cli.command {
        Command::Run(args) => args.verbosity,
        Command::Start(args) | Command::Restart(args) => args.run.verbosity,
        Command::Exec(args) => args.run.verbosity,
        _ => Default::default(),
    };
    init_tracing(cli.log_format, verbosity, log_file, embedded);
    // One thread is plenty for a supervisor, and costs least while idle; blocking work
    // (extraction, initdb) goes to tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(pgwarden::commands::dispatch(cli, run_instance)) {
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

/// clap's own message (help, version, usage errors), and the exit code
/// [`pgwarden::error::usage_exit_code`] decides.
fn usage_error(e: clap::Error, args: &[OsString]) -> ExitCode {
    let _ = e.print();
    ExitCode::from(pgwarden::commands::usage_exit_code(&e, args) as u8)
}

fn init_tracing(
    format: LogFormat,
    verbosity: pgwarden::commands::Verbosity,
    log_file: Option<pgwarden::instance::logfile::RotatingFile>,
    embedded_supervisor: bool,
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
    } else if embedded_supervisor && verbosity.verbose == 0 {
        // `exec --ephemeral`: the terminal is CMD's; the supervisor's lines go to the log file
        // (`pgwarden logs`), as those of a background `run` do; only errors are shown here.
        filter("error".to_string())
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
