//! `pgwarden start`: `pgwarden run` in the background, returning once the server is ready.
//!
//! The background pgwarden is this same binary running `run` with the command line
//! [`RunArgs::command_line`](crate::commands::RunArgs::command_line) builds from the parsed flags (never
//! a filtered copy of this process's argv), in a session of its own, its stdout and its warnings and errors appended to
//! `<state dir>/pgwarden.out` (the full log goes to the rotated `pgwarden.log`). This
//! command follows that file until the `ready:` line appears (then prints the URL and exits 0)
//! or the background pgwarden exits (then prints its error and exits non-zero).

use crate::commands::common::Instance;
use crate::commands::{Globals, RunArgs};
use crate::config::{self, Config};
use crate::error::{Error, IoContext, Result};
use crate::instance::resolve::Resolved;
use clap::Args;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// How long to wait for the server to accept connections.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,

    /// Put the password into the printed DATABASE_URL.
    #[arg(long)]
    pub with_password: bool,
}

/// `start` (and `up`), or the start half of `restart`.
pub async fn start(args: StartArgs, resolved: Resolved, globals: &Globals) -> Result<i32> {
    let mut instance = resolved.observe();
    let config = instance.config.clone();
    let timeout = config::parse_duration(&args.timeout).map_err(|e| Error::Config {
        problems: vec![format!("--timeout: {e}")],
    })?;
    let deadline = Instant::now() + timeout;
    if instance.running() {
        // Like compose's `up -d`: nothing to do, unless what runs is not what is asked for.
        if let Some(running) = instance.running_settings() {
            let differences = running.differences(&config);
            if !differences.is_empty() {
                return Err(Error::Server {
                    what: format!(
                        "instance {:?} already runs ({}) with other settings: {}\n\
                         help: `pgwarden restart` with the new settings applies them; or drop the flags to use it as it runs",
                        config.name,
                        instance.config.data_dir.display(),
                        differences.join(", ")
                    ),
                });
            }
        }
        wait_until_ready(&mut instance, deadline).await?;
        eprintln!("running: {}", instance.url(false)?);
    } else {
        // Refused here, before a background run is launched that would create the state dir.
        crate::binaries::check_trust(&config.source, &config.install_dir)?;
        crate::binaries::locked::check(&config.source, &config.version, &config.lock)?;
        let run_args = args.run.command_line("run", globals);
        let launched = launch(&config, run_args, deadline, timeout).await?;
        // The instance just started, not the one its name pointed at before (a stopped one of
        // the same name, with another port).
        instance = Instance::at(config, launched.state_dir);
    }
    println!("DATABASE_URL={}", instance.url(args.with_password)?);
    Ok(0)
}

/// Waits until the running instance's status says ready (it may still be starting).
async fn wait_until_ready(instance: &mut Instance, deadline: Instant) -> Result<()> {
    loop {
        instance.refresh();
        match &instance.status {
            Some(status) if status.state == crate::instance::status::State::Ready => return Ok(()),
            _ if !instance.running() => return Err(instance.not_running()),
            Some(status) if Instant::now() > deadline => {
                return Err(Error::Server {
                    what: format!(
                        "the running instance is {} ({}), not ready\nhelp: `pgwarden logs` shows why",
                        status.state, status.cause
                    ),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// A background pgwarden whose server is ready.
pub(crate) struct Launched {
    /// Its instance's state directory (where its status file says the port it listens on).
    pub state_dir: PathBuf,
}

/// Puts `pgwarden RUN_ARGS` in the background for `config`'s instance and returns once its
/// `ready:` line is out (printed on stderr).
pub(crate) async fn launch(
    config: &Config,
    run_args: Vec<OsString>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Launched> {
    // `config` is resolved: its registered data directory adopted, whose state directory the
    // background run claims.
    let state_dir = crate::os::paths::state_dir(&config.data_dir);
    crate::instance::private_dir::prepare_state_dir(config)?;
    let out_path = state_dir.join("pgwarden.out");
    let out = crate::instance::private_dir::open_append(&out_path).io("cannot open", &out_path)?;
    let offset = out.metadata().io("cannot read", &out_path)?.len();
    // Read through our own handle: a throwaway instance's directory, this file included, is
    // removed when the background pgwarden exits, and its last words are what we must show.
    let mut reader = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&out_path)
        .io("cannot open", &out_path)?;
    reader
        .seek(SeekFrom::Start(offset))
        .io("cannot read", &out_path)?;
    let mut output = String::new();

    let exe = std::env::current_exe().io("cannot find the pgwarden binary", "/proc/self/exe")?;
    let mut command = Command::new(exe);
    command
        .args(run_args)
        .env(super::BACKGROUND_ENV, "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().io("cannot open", &out_path)?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe. A session of its own: no terminal's signals reach it,
    // and it outlives this command.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(|e| Error::Server {
        what: format!("cannot start pgwarden in the background: {e}"),
    })?;
    tracing::debug!(pid = child.id(), log = %out_path.display(), "pgwarden runs in the background");

    loop {
        let _ = reader.read_to_string(&mut output);
        if let Some(line) = output.lines().find(|l| l.starts_with("ready: ")) {
            eprintln!("{line}");
            return Ok(Launched { state_dir });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = reader.read_to_string(&mut output);
            // Its own last words are the error: shown once, as it printed them, not again
            // inside a tail of its log.
            let what = match final_error(&output) {
                Some(error) => format!("{error}\n(full log: {})", out_path.display()),
                None => format!(
                    "the background pgwarden exited ({status}) before the server was ready:\n{}\n(full log: {})",
                    tail(&output, 15),
                    out_path.display()
                ),
            };
            // Exit 2 is an invalid setting, whichever process found it.
            if status.code() == Some(2) {
                return Err(Error::BackgroundRefused { what });
            }
            return Err(Error::Server { what });
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            return Err(Error::Server {
                what: format!(
                    "the server was not ready within {}s; stopped it\n{}\nhelp: raise --timeout, or see {}",
                    timeout.as_secs(),
                    tail(&output, 15),
                    out_path.display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The error a pgwarden printed last (`error: …` to the end of its output), without the prefix.
fn final_error(output: &str) -> Option<String> {
    let start = output
        .match_indices("error: ")
        .map(|(i, _)| i)
        .filter(|i| *i == 0 || output.as_bytes()[i - 1] == b'\n')
        .last()?;
    Some(output[start + "error: ".len()..].trim_end().to_string())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_error_is_shown_once() {
        let out = "2026-01-01T00:00:00Z ERROR x: failed\nerror: port busy\nhelp: use another\n";
        assert_eq!(
            final_error(out).as_deref(),
            Some("port busy\nhelp: use another")
        );
        assert_eq!(final_error("INFO ready\n"), None);
    }
}
