//! The arguments of `pgwarden logs` (run by [`crate::commands::logs`]).

use crate::cli::InstanceArgs;
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Shows the log pgwarden keeps beside the data directory (<data dir>.pgwarden/pgwarden.log, \
rotated at 10 MiB): the supervisor's events and every server log line. Works while pgwarden runs and \
after it stopped.",
    after_help = "Examples:\n  pgwarden logs -n 50\n  pgwarden logs -f"
)]
pub struct LogsArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Keep printing new lines as they are written (until Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,

    /// Only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
}
