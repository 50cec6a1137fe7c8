//! The arguments of `pgwarden reset` (run by [`crate::commands::reset`]).

use crate::cli::InstanceArgs;
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Stops the instance if it runs, then deletes its data directory (the cluster) and \
pgwarden's state beside it (lock, status, remembered settings, logs). The next `pgwarden start` \
creates a fresh cluster, with the init scripts run again. Asks for confirmation on a terminal; \
elsewhere --yes is required. A data directory that pgwarden did not create is refused unless --force.",
    after_help = "Examples:\n  pgwarden reset            # in a project directory: its instance\n  pgwarden reset --yes && pgwarden start\n  pgwarden reset --name ci-7 --yes"
)]
pub struct ResetArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Do not ask.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Also delete a data directory that pgwarden did not create.
    #[arg(long)]
    pub force: bool,
}
