//! `pgwarden exec -- CMD…`: run CMD with `DATABASE_URL` and `PGHOST/PGPORT/PGUSER/PGPASSWORD/
//! PGDATABASE` set for the instance, and exit with CMD's exit code.
//!
//! With `--ephemeral`, a throwaway server is started first (a free port and a name of its own
//! unless given) and removed after CMD — the model of pg_virtualenv and pg_tmp. A Ctrl-C reaches
//! CMD (it shares the terminal) and this command still removes the throwaway server after it.
//!
//! The server is supervised inside this process ([`run::serve`] as a future beside CMD's, its
//! controls sent from here), not by a background `pgwarden run`: that cost a second exec of the
//! binary, its own config load and instance resolution, a poll of its output file for the
//! `ready:` line and a poll of its exit, and a fast shutdown's checkpoint of data about to be
//! removed. Here the stop is immediate; a kill -9 of this process stops the server by its
//! parent-death signal, and the next ephemeral launch sweeps the root
//! ([`crate::instance::abandoned`]).
//!
//! CMD runs as the caller: it is the caller's own command, so it gets the caller's rights, and
//! pgwarden adds the connection variables and puts the installation's programs first on PATH,
//! so that `pg_dump`, `pg_restore`, `psql`, `pgbench` are the server's version. Not its `bin/`
//! itself: a private directory of [`crate::binaries::shims`], which run each program as the installation's
//! user (the unprivileged one when pgwarden is root — nothing of an installation runs as root),
//! as the caller otherwise.

use crate::binaries;
use crate::binaries::shims::Shims;
use crate::commands::RunArgs;
use crate::commands::common::Instance;
use crate::commands::run;
use crate::commands::url::variables;
use crate::config;
use crate::error::{Error, Result};
use crate::instance::resolve::Resolved;
use crate::supervisor::signals::Control;
use clap::Args;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Runs CMD with DATABASE_URL (with the password), PGHOST, PGPORT, PGUSER, PGPASSWORD \
and PGDATABASE set for the instance, and the installation's programs (pg_dump, pg_restore, psql, \
pgbench, …) first on PATH — run as the unprivileged user when pgwarden is root —, and exits with CMD's \
exit code (128+N when a signal N ended it). \
The instance must be running, unless --ephemeral: then a throwaway server (its own free port and \
name, fsync off, in memory where /dev/shm exists) is supervised by this process for CMD and \
removed after it (an immediate stop: its data is thrown away); its log goes to the instance's log \
file (`pgwarden logs`), only errors to the terminal (-v for more). A Ctrl-C reaches CMD; the server \
is removed after CMD ends. If this process is killed, the server stops with it and the next \
--ephemeral launch removes what it left.",
    after_help = "Examples:\n  pgwarden exec -- psql -c 'select 1'\n  pgwarden exec -- pg_dump -Fc trader > trader.dump\n  pgwarden exec -- npm run migrate\n  pgwarden exec --ephemeral -- cargo test      # a fresh server for one test run"
)]
pub struct ExecArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// How long a throwaway server may take to get ready.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,

    /// The command and its arguments.
    #[arg(value_name = "CMD", last = true, required = true)]
    pub command: Vec<OsString>,
}

/// `resolved`: the instance of [`ExecArgs::run_args`].
pub async fn run(args: ExecArgs, resolved: Resolved) -> Result<i32> {
    if !args.run.ephemeral {
        let instance = resolved.observe();
        instance.require_running()?;
        return run_command(&instance, &args.command, || {}).await;
    }
    let timeout = config::parse_duration(&args.timeout).map_err(|e| Error::Config {
        problems: vec![format!("--timeout: {e}")],
    })?;
    let config = resolved.config.clone();
    let run_args = args.run_args();
    // The supervisor runs here, as a future of this task: its controls come from this command.
    let (controls, events) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    // Before the server starts: a Ctrl-C while it starts stops it (after, it reaches CMD).
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    // `snapshot restore` asks the supervisor — this process — to swap clusters by SIGUSR1.
    if let Ok(mut swap) = signal(SignalKind::user_defined1()) {
        let controls = controls.clone();
        tokio::spawn(async move {
            while swap.recv().await.is_some() && controls.send(Control::Swap).is_ok() {}
        });
    }
    let server = run::serve(&run_args, resolved, events, Some(ready_tx));
    tokio::pin!(server);
    let line = tokio::select! {
        done = &mut server => return Err(ended_before_ready(done)),
        line = ready_rx => match line {
            Ok(line) => line,
            // The supervisor is gone without a ready line: its result says why.
            Err(_) => return Err(ended_before_ready(server.await)),
        },
        _ = tokio::time::sleep(timeout) => {
            let _ = controls.send(Control::Immediate);
            let _ = server.await;
            return Err(Error::Server {
                what: format!(
                    "the throwaway server was not ready within {}s; stopped it\nhelp: raise --timeout, or run with -v to see why",
                    timeout.as_secs()
                ),
            });
        }
        _ = interrupted(interrupt.as_mut()) => {
            let _ = controls.send(Control::Immediate);
            let _ = server.await;
            return Ok(128 + Signal::SIGINT as i32);
        }
    };
    eprintln!("{line}");
    let state_dir = crate::os::paths::state_dir(&config.data_dir);
    let instance = Instance::at(config, state_dir);
    // A throwaway's data is removed: no checkpoint, an immediate stop — sent as soon as CMD
    // has ended (before the cleanup of its PATH), once.
    let stopped = std::cell::Cell::new(false);
    let stop = || {
        if !stopped.replace(true) {
            let _ = controls.send(Control::Immediate);
        }
    };
    let command = run_command(&instance, &args.command, stop);
    tokio::pin!(command);
    // The server is kept (supervised) while CMD runs; if it ends first, CMD still runs on.
    let mut ended = None;
    let result = loop {
        tokio::select! {
            result = &mut command => break result,
            done = &mut server, if ended.is_none() => ended = Some(done),
        }
    };
    stop();
    let done = match ended {
        Some(done) => done,
        None => server.await,
    };
    if let Err(e) = done {
        tracing::error!("the throwaway server: {}", e.with_causes());
    }
    result
}

/// The error of a supervisor that ended before its server was ready.
fn ended_before_ready(done: Result<()>) -> Error {
    done.err().unwrap_or_else(|| Error::Server {
        what: "the throwaway server stopped before it was ready\nhelp: run with -v to see why"
            .into(),
    })
}

/// Resolves on the next SIGINT (never when its handler could not be installed).
async fn interrupted(interrupt: Option<&mut tokio::signal::unix::Signal>) {
    match interrupt {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl ExecArgs {
    /// The settings of the instance: with `--ephemeral`, a throwaway server of its own (a name
    /// of its own and a free port unless given): two `exec --ephemeral` side by side must not
    /// meet.
    pub fn run_args(&self) -> RunArgs {
        let mut run = self.run.clone();
        if run.ephemeral {
            let instance = &mut run.instance;
            instance
                .name
                .get_or_insert_with(|| crate::instance::abandoned::exec_name(std::process::id()));
            instance.port.get_or_insert(0);
        }
        run
    }
}

/// Runs `command` with the instance's connection variables; its exit code. `ended` is called
/// as soon as it has ended.
async fn run_command(
    instance: &Instance,
    command: &[OsString],
    ended: impl FnOnce(),
) -> Result<i32> {
    let (program, rest) = command.split_first().ok_or_else(|| Error::Config {
        problems: vec!["exec needs a command after `--`".into()],
    })?;
    let mut child = tokio::process::Command::new(program);
    child.args(rest);
    for (key, value) in variables(instance, true)? {
        child.env(key, value);
    }
    // Kept until CMD has ended: its programs are found through it.
    let shims = installation_first_on_path(instance, &mut child)?;
    // Ctrl-C goes to CMD (same terminal); this process outlives it to clean up.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut child = child.spawn().map_err(|e| Error::Server {
        what: format!(
            "cannot run {}: {e}\nhelp: check the command's name and that it is on PATH",
            program.to_string_lossy()
        ),
    })?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = async { match interrupt.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    ended();
    // Off this thread: removing a directory can wait on the filesystem's journal (90 ms seen
    // under load), and an `exec --ephemeral`'s server is stopped on this thread meanwhile.
    let _ = tokio::task::spawn_blocking(move || drop(shims)).await;
    let status = status.map_err(|e| Error::Server {
        what: format!("cannot wait for {}: {e}", program.to_string_lossy()),
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Puts shims of the instance's installation's programs first on `child`'s PATH (the caller's
/// PATH after them); `None` when the installation cannot be found, PATH then left as it is.
fn installation_first_on_path(
    instance: &Instance,
    child: &mut tokio::process::Command,
) -> Result<Option<Shims>> {
    let config = &instance.config;
    let install = match binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    ) {
        Ok(Some(install)) => install,
        Ok(None) | Err(_) => {
            tracing::warn!("the installation's programs are not found; CMD runs with your PATH");
            return Ok(None);
        }
    };
    let shims = Shims::create(&install, binaries::program_user(&config.install_policy))?;
    for (key, value) in shims.environment(std::env::var_os("PATH")) {
        child.env(key, value);
    }
    Ok(Some(shims))
}
