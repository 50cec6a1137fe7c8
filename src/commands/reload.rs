//! `pgwarden reload`: the server rereads its configuration (SIGHUP), and this command waits
//! until it has.
//!
//! The supervisor is sent SIGHUP (it rewrites the `[server]` settings file, then signals
//! postgres, see [`crate::supervisor`]); applied means the server's `pg_conf_load_time()`
//! moved past the value read before the signal.

use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::config::parse_duration;
use crate::error::{Error, Result};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Makes the running server reread its configuration: pgwarden rewrites the [server] \
settings from the config and project files and sends the server SIGHUP, and this command returns \
once the server has reloaded (pg_conf_load_time() moved). Settings that need a restart are named \
in the log; apply them with `pgwarden restart`.",
    after_help = "Examples:\n  pgwarden reload\n  pgwarden reload --name shop"
)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// How long to wait until the reload is applied.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

pub async fn run(args: ReloadArgs, instance: Instance) -> Result<i32> {
    let pid = instance.require_running()?;
    let client = crate::commands::db::connect(&instance).await?;
    let loaded = || async {
        client
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .map(|row| row.get::<_, String>(0))
            .map_err(|e| Error::Server {
                what: format!("cannot read pg_conf_load_time(): {e}"),
            })
    };
    let before = loaded().await?;
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).map_err(|e| Error::Privilege {
        what: format!(
            "cannot signal pgwarden (pid {pid}): {e}\nhelp: run `pgwarden reload` as the user that started it"
        ),
    })?;
    let deadline = Instant::now() + args.timeout;
    loop {
        // Postgres takes a SIGHUP between two commands; a new load time is the proof.
        let now = loaded().await?;
        if now != before {
            println!("reloaded: the server applied its configuration (at {now})");
            return Ok(0);
        }
        if Instant::now() >= deadline {
            return Err(Error::Server {
                what: format!(
                    "the server has not reloaded its configuration within {}s of the SIGHUP\n\
                     help: `pgwarden logs` shows what pgwarden and the server did",
                    args.timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
