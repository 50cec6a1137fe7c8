//! The arguments of `pgwarden init` (run by [`crate::commands::init`]).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Writes pgwarden.toml, the project file, into DIR (default: the current directory): \
the seed's service (127.0.0.1:5433, user, password and database `trader`), every key commented. \
Every pgwarden command run in that directory or below it then uses it, like compose.yaml. An \
existing file is never overwritten.",
    after_help = "Examples:\n  pgwarden init && pgwarden start\n  pgwarden init ./services/api"
)]
pub struct InitArgs {
    /// The project directory [default: the current directory].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
