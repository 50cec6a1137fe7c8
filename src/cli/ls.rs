//! The arguments of `pgwarden ls` (run by [`crate::commands::ls`]).

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Lists the pgwarden instances of this user (as root: of every user): NAME (`-` for \
an unnamed one with a data directory of its own), STATE (ready, starting, …, stopped), PORT, DATA DIR, \
UPTIME and PROJECT (the pgwarden.toml it belongs to).",
    after_help = "Examples:\n  pgwarden ls\n  pgwarden ls --json | jq -r '.[] | select(.running) | .url'"
)]
pub struct LsArgs {
    /// One JSON array of objects.
    #[arg(long)]
    pub json: bool,
}
