//! The arguments of `pgwarden status` (run by [`crate::commands::status`]).

use crate::cli::InstanceArgs;
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Shows what the running pgwarden reports about its server: state (starting, ready, \
restarting, stopping), supervisor and postmaster pids, uptime, restarts and failed starts, the last exit \
(its code or signal, and whether the signal came from outside or from the kernel's OOM killer), why it gave \
up if it did, PostgreSQL \
version, data directory and address. Exits 0 while a supervisor runs, 3 when none does (`running: \
false` in JSON).",
    after_help = "Examples:\n  pgwarden status\n  pgwarden status --json | jq -r .state"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}
