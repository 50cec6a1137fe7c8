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
file (`pgwarden logs`), only errors to the terminal (-v for more). A Ctrl-C reaches CMD; a SIGTERM \
or SIGHUP sent to pgwarden (by `timeout`, a service manager) is passed on to CMD; the server is \
removed after CMD ends. If this process is killed (SIGKILL), the server stops with it and the next \
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
    // Caught from here on: one that arrives while CMD runs is passed on to it.
    let mut passed_on = PassedOn::install();
    if !args.run.ephemeral {
        let instance = resolved.observe();
        instance.require_running()?;
        let shims = installation_programs(&instance.config)?;
        return run_command(&instance, &args.command, shims, &mut passed_on, || {}).await;
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
    // CMD's PATH is made while the server starts (on another core, where there is one).
    let shims = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || installation_programs(&config))
    };
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
        signal = passed_on.next() => {
            let _ = controls.send(Control::Immediate);
            let _ = server.await;
            return Ok(128 + signal as i32);
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
    let command = async {
        let shims = match shims.await {
            Ok(Ok(Some(shims))) => Some(shims),
            // Not installed before this launch: it is now.
            Ok(Ok(None)) => installation_programs(&instance.config)?,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(Error::Server {
                    what: format!("cannot make CMD's PATH: {e}"),
                });
            }
        };
        run_command(&instance, &args.command, shims, &mut passed_on, stop).await
    };
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

/// SIGTERM and SIGHUP, caught for exec's whole life. Sent to exec alone (by `timeout`, a
/// service manager, `kill`), they would end it and leave CMD running on without its server
/// (and a throwaway root for the next launch to sweep): exec passes them on to CMD instead,
/// then waits for it and cleans up as after any end of CMD; before CMD runs, they stop the
/// throwaway server and exec exits with 128+N. A Ctrl-C reaches CMD from the terminal itself.
struct PassedOn {
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl PassedOn {
    fn install() -> Self {
        Self {
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next of them to arrive (never, for one that could not be caught).
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = interrupted(self.terminate.as_mut()) => Signal::SIGTERM,
            _ = interrupted(self.hangup.as_mut()) => Signal::SIGHUP,
        }
    }
}

/// The error of a supervisor that ended before its server was ready.
fn ended_before_ready(done: Result<()>) -> Error {
    done.err().unwrap_or_else(|| Error::Server {
        what: "the throwaway server stopped before it was ready\nhelp: run with -v to see why"
            .into(),
    })
}

/// Resolves on the next arrival of `signal` (never when its handler could not be installed).
async fn interrupted(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
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

/// Runs `command` with the instance's connection variables and `shims` first on its PATH (kept
/// until it has ended), passing on to it what arrives of `passed_on`; its exit code. `ended`
/// is called as soon as it has ended.
async fn run_command(
    instance: &Instance,
    command: &[OsString],
    shims: Option<Shims>,
    passed_on: &mut PassedOn,
    ended: impl FnOnce(),
) -> Result<i32> {
    let (program, rest) = command.split_first().ok_or_else(|| Error::Config {
        problems: vec!["exec needs a command after `--`".into()],
    })?;
    let mut environment: Vec<(OsString, OsString)> = variables(instance, true)?
        .into_iter()
        .map(|(key, value)| (key.into(), value.into()))
        .collect();
    match &shims {
        Some(shims) => environment.extend(
            shims
                .environment(std::env::var_os("PATH"))
                .into_iter()
                .map(|(key, value)| (key.into(), value)),
        ),
        None => {
            tracing::warn!("the installation's programs are not found; CMD runs with your PATH")
        }
    }
    let path = environment
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .or_else(|| std::env::var_os("PATH"));
    // Found here as the child would find it: a command without a PATH search of its own is
    // started without a copy of this process (posix_spawn). argv[0] stays as typed.
    let mut child = match found_on(program, path.as_deref()) {
        Some(found) => {
            let mut child = tokio::process::Command::new(found);
            child.arg0(program);
            child
        }
        None => tokio::process::Command::new(program),
    };
    child.args(rest).envs(environment);
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
            _ = interrupted(interrupt.as_mut()) => {}
            signal = passed_on.next() => {
                // `id` is `None` once CMD is reaped: its pid is never signalled after reuse.
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
                }
            }
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

/// Shims of the installation's programs ([`Shims`]: first on CMD's PATH); `None` when the
/// installation cannot be found (CMD then runs with the caller's PATH).
fn installation_programs(config: &config::Config) -> Result<Option<Shims>> {
    let install = match binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    ) {
        Ok(Some(install)) => install,
        Ok(None) | Err(_) => return Ok(None),
    };
    Shims::create(&install, binaries::program_user(&config.install_policy)).map(Some)
}

/// Where `execvp` would find `program` on `path`: the first regular file of that name with an
/// execute bit that this process may execute, when it starts as a program (`\x7fELF`) or a
/// script with its interpreter (`#!`); `None` for a name with a `/` (not searched), one found
/// nowhere, or a file without either — the spawn then searches as before (glibc's `execvp`
/// runs such a file with `/bin/sh`; a spawn by its path would fail).
fn found_on(
    program: &std::ffi::OsStr,
    path: Option<&std::ffi::OsStr>,
) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() || program.as_bytes().contains(&b'/') {
        return None;
    }
    std::env::split_paths(path?)
        .map(|dir| {
            // An empty entry is the working directory, as for execvp.
            if dir.as_os_str().is_empty() {
                std::path::PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                && nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
        .filter(|found| starts_as_a_program(found))
}

/// Whether `path` begins as an ELF program or a `#!` script.
fn starts_as_a_program(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"\x7fELF" || head.starts_with(b"#!"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// As `execvp` searches: the first regular file with an execute bit, in PATH order;
    /// directories and files without one are passed over; a name with a `/` is not searched.
    #[test]
    fn a_command_is_found_on_path_as_execvp_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let [plain, subdir, first, second] = ["plain", "subdir", "first", "second"].map(|d| {
            let path = dir.path().join(d);
            std::fs::create_dir(&path).unwrap();
            path
        });
        let write = |path: std::path::PathBuf, mode: u32| {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        write(plain.join("tool"), 0o644);
        std::fs::create_dir(subdir.join("tool")).unwrap();
        let wanted = write(first.join("tool"), 0o755);
        write(second.join("tool"), 0o755);
        let path = std::env::join_paths([&plain, &subdir, &first, &second]).unwrap();
        assert_eq!(found_on("tool".as_ref(), Some(&path)), Some(wanted));
        assert_eq!(found_on("nothing".as_ref(), Some(&path)), None);
        assert_eq!(found_on("./tool".as_ref(), Some(&path)), None);
        assert_eq!(found_on("".as_ref(), Some(&path)), None);
        assert_eq!(found_on("tool".as_ref(), None), None);
        // Without `#!` (execvp would run it with /bin/sh): left to the spawn's own search.
        std::fs::write(first.join("tool"), "echo hi\n").unwrap();
        assert_eq!(found_on("tool".as_ref(), Some(&path)), None);
        assert_eq!(
            found_on("true".as_ref(), Some("/usr/bin:/bin".as_ref())),
            Some(std::path::PathBuf::from("/usr/bin/true"))
        );
    }
}
