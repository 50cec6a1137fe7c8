//! `pgwarden wait`: block until the instance's server accepts connections.
//!
//! Ready means: a supervisor holds the instance lock, its status file says `ready`, and a probe
//! of the address it reports is accepted. Started before `pgwarden run`, it waits for it; the
//! status file is polled (a small read), the server is probed only once it says ready, so no
//! "the database system is starting up" lines land in the server's log.

use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::config::parse_duration;
use crate::error::{Error, Result};
use crate::instance::status::State;
use crate::pg::probe::{self, PingStatus};
use clap::Args;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Blocks until pgwarden's server accepts connections, then prints \
`HOST:PORT - accepting connections` and exits 0; exits 1 when the timeout passes first. It may be \
started before `pgwarden run`: the replacement for compose's `depends_on: condition: \
service_healthy` and `docker compose up --wait`.",
    after_help = "Examples:\n  pgwarden run & pgwarden wait && ./migrate.sh\n  pgwarden wait --timeout 2m --data-dir ./pgdata"
)]
pub struct WaitArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// How long to wait: 500ms, 30s, 2m … [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,

    /// Print nothing; only the exit code tells.
    #[arg(short, long)]
    pub quiet: bool,
}

/// How often the lock and status file are looked at.
const POLL: Duration = Duration::from_millis(5);

pub async fn run(args: WaitArgs, mut instance: Instance) -> Result<i32> {
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
