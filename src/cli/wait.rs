//! The arguments of `pgwarden wait` (run by [`crate::commands::wait`]).

use crate::cli::InstanceArgs;
use crate::config::parse_duration;
use clap::Args;
use std::time::Duration;

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
