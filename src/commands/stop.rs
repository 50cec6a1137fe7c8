//! `pgwarden stop [--mode smart|fast|immediate]`: stop the running supervisor and wait for it.
//!
//! The supervisor is found through the instance lock (its holder's pid), signalled the way a
//! terminal or systemd would (SIGTERM: shutdown; a second signal: immediate shutdown, see
//! [`crate::supervisor::signals`]), and waited for until it has released the lock, which it does only
//! after its postgres is gone. `smart` is requested through the state directory's stop-request
//! file, which the supervisor reads when the SIGTERM arrives.

use crate::commands::InstanceArgs;
use crate::commands::common::{Instance, human_duration};
use crate::config::{ShutdownMode, parse_duration};
use crate::error::{Error, IoContext, Result};
use crate::instance::lock;
use crate::instance::status::STOP_REQUEST;
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Stops the pgwarden supervising this data directory, and its PostgreSQL server, then \
waits until both have exited. fast (the default) rolls back open transactions and disconnects \
clients; smart waits for clients to disconnect first (up to the shutdown timeout); immediate quits \
at once without a checkpoint (crash recovery at the next start). Like compose's `down`, an \
instance that does not run is no error: it says so and exits 0.",
    after_help = "Examples:\n  pgwarden stop\n  pgwarden stop --mode smart --timeout 5m\n  pgwarden stop --data-dir ./pgdata --mode immediate"
)]
pub struct StopArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// How the server shuts down.
    #[arg(long, value_enum, default_value_t = ShutdownMode::Fast)]
    pub mode: ShutdownMode,

    /// How long to wait for pgwarden to exit [default: the shutdown timeout plus 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

pub async fn run(args: StopArgs, instance: Instance) -> Result<i32> {
    println!(
        "{}",
        stop_instance(&instance, args.mode, args.timeout).await?
    );
    Ok(0)
}

/// Stops `instance` if it runs; like compose's `down`, an instance that does not run is no
/// error. Returns the line that says what happened.
pub async fn stop_instance(
    instance: &Instance,
    mode: ShutdownMode,
    timeout: Option<Duration>,
) -> Result<String> {
    let Some(pid) = instance.supervisor else {
        return Ok(format!(
            "not running: {} (nothing to stop)",
            instance.config.data_dir.display()
        ));
    };
    let args = StopRequest { mode, timeout };
    let started = Instant::now();
    let target = Pid::from_raw(pid as i32);
    if args.mode != ShutdownMode::Immediate {
        // Read by the supervisor when the signal arrives (it overrides `shutdown_mode`).
        let path = instance.state_dir.join(STOP_REQUEST);
        std::fs::write(&path, format!("{}\n", args.mode.name()))
            .io("cannot write the stop request", &path)?;
    }
    send(target, Signal::SIGTERM)?;
    if args.mode == ShutdownMode::Immediate {
        // The second stop request (a different signal, so that the two are not merged).
        send(target, Signal::SIGINT)?;
    }
    let limit = args
        .timeout
        .unwrap_or(instance.config.shutdown_timeout + Duration::from_secs(30));
    let deadline = started + limit;
    // Woken by the supervisor's exit itself (a pidfd); the lock is checked after, as before.
    if let Some(pidfd) = crate::os::pidfd::PidFd::open(pid) {
        let _ = tokio::task::spawn_blocking(move || pidfd.wait(limit)).await;
    }
    while lock::holder(&instance.state_dir) == Some(pid) {
        if Instant::now() >= deadline {
            return Err(Error::Server {
                what: format!(
                    "pgwarden (pid {pid}) has not exited {} after the {} stop request\n\
                     help: `pgwarden logs` shows what it is waiting for; `pgwarden stop --mode immediate` stops it at once",
                    human_duration(limit.as_millis() as u64),
                    args.mode.name()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(format!(
        "stopped: pgwarden (pid {pid}) and its server ({} shutdown, {})",
        args.mode.name(),
        human_duration(started.elapsed().as_millis() as u64)
    ))
}

struct StopRequest {
    mode: ShutdownMode,
    timeout: Option<Duration>,
}

fn send(pid: Pid, signal: Signal) -> Result<()> {
    match kill(pid, signal) {
        Ok(()) => Ok(()),
        // Exited meanwhile: that is what we wanted.
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::Privilege {
            what: format!(
                "cannot signal pgwarden (pid {pid}): {e}\nhelp: run `pgwarden stop` as the user that started it (e.g. with sudo)"
            ),
        }),
    }
}
