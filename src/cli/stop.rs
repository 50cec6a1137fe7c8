//! The arguments of `pgwarden stop` (run by [`crate::commands::stop`]).

use crate::cli::InstanceArgs;
use crate::config::{ShutdownMode, parse_duration};
use clap::Args;
use std::time::Duration;

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
