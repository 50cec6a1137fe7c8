//! The arguments of `pgwarden reload` (run by [`crate::commands::reload`]).

use crate::cli::InstanceArgs;
use crate::config::parse_duration;
use clap::Args;
use std::time::Duration;

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
