//! `pgwarden wait`: block until the instance's server accepts connections.
//!
//! Ready means: a supervisor holds the instance lock, its status file says `ready`, and a probe
//! of the address it reports is accepted. Started before `pgwarden run`, it waits for it; the
//! status file is polled (a small read), the server is probed only once it says ready, so no
//! "the database system is starting up" lines land in the server's log.

use crate::cli::Globals;
pub use crate::cli::wait::WaitArgs;
use crate::commands::common::Instance;
use crate::error::{Error, Result};
use crate::instance::status::State;
use crate::pg::probe::{self, PingStatus};
use std::time::Duration;
use tokio::time::Instant;

/// How often the lock and status file are looked at.
const POLL: Duration = Duration::from_millis(5);

pub async fn run(args: WaitArgs, globals: &Globals) -> Result<i32> {
    let mut instance = Instance::load(globals, &args.instance)?;
    let deadline = Instant::now() + args.timeout;
    loop {
        instance.refresh();
        if let Some(status) = instance.status.as_ref().filter(|s| s.state == State::Ready) {
            let address = instance.address();
            let answer = probe::ping(
                address,
                &status.user,
                &status.database,
                Duration::from_secs(2),
            )
            .await;
            if answer == PingStatus::Accepting {
                if !args.quiet {
                    println!("{address} - accepting connections");
                }
                return Ok(0);
            }
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&instance, args.timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn timed_out(instance: &Instance, timeout: Duration) -> Error {
    let waited = format!("timed out after {}", humantime(timeout));
    match (&instance.supervisor, &instance.status) {
        (None, _) => Error::Server {
            what: format!(
                "{waited}: no pgwarden is running for data directory {}\n\
                 help: start it with `pgwarden run` (with the same --data-dir / --config), or wait longer with --timeout",
                instance.config.data_dir.display()
            ),
        },
        (Some(pid), None) => Error::Server {
            what: format!(
                "{waited}: pgwarden (pid {pid}) is still preparing (installing binaries or initialising the cluster)\n\
                 help: wait longer with --timeout; `pgwarden logs` shows what it is doing"
            ),
        },
        (Some(pid), Some(status)) => Error::Server {
            what: format!(
                "{waited}: pgwarden (pid {pid}) reports the server as {} ({})\n\
                 help: `pgwarden logs` shows why; wait longer with --timeout",
                status.state, status.cause
            ),
        },
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
