//! `pgwarden reset`: compose's `down -v` — stop the instance, delete its cluster and its state,
//! so that the next `start` makes a fresh one (init scripts run again).
//!
//! It asks first on a terminal (`--yes` otherwise), and refuses a data directory pgwarden did
//! not create (no `pgwarden.json` marker in it: an existing cluster someone pointed pgwarden at)
//! unless `--force`.
//!
//! The cluster is deleted in the background ([`crate::os::deletion`]), so that `reset` returns at
//! once and the next `start` (which copies the template cluster the background fill made:
//! [`crate::cluster::template_fill`]) does not wait for it.

use crate::cluster::MARKER;
use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::commands::stop;
use crate::config::ShutdownMode;
use crate::error::{Error, Result};
use clap::Args;
use std::path::Path;

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

pub async fn run(args: ResetArgs, instance: Instance) -> Result<i32> {
    let data_dir = instance
        .remembered
        .as_ref()
        .map(|r| r.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone());
    let exists = data_dir.exists();
    if exists && !data_dir.join(MARKER).is_file() && !args.force {
        return Err(Error::Cluster {
            what: format!(
                "{} was not created by pgwarden (no {MARKER} in it); reset deletes only clusters pgwarden made\n\
                 help: if you mean to delete it and everything in it, add --force",
                data_dir.display()
            ),
        });
    }
    if !args.yes {
        confirm(&data_dir, &instance.config.name)?;
    }
    eprintln!(
        "{}",
        stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
    );
    if exists {
        crate::os::deletion::delete_cluster(&data_dir)?;
    }
    let state_dir = crate::os::paths::state_dir(&data_dir);
    if state_dir.exists() {
        crate::os::deletion::remove(&state_dir)?;
    }
    println!(
        "reset: deleted {}{}; `pgwarden start` makes a fresh cluster",
        data_dir.display(),
        if exists { "" } else { " (it did not exist)" }
    );
    Ok(0)
}

/// Asks on the terminal; anything but `y`/`yes` stops here.
fn confirm(data_dir: &Path, name: &str) -> Result<()> {
    match super::common::ask_yes_no(&format!(
        "Delete instance {name:?}'s cluster {} and all its data?",
        data_dir.display()
    )) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::Cluster {
            what: "reset cancelled; nothing was changed".into(),
        }),
        None => Err(Error::Config {
            problems: vec![format!(
                "reset deletes {} and stdin is not a terminal to ask on\n    help: add --yes",
                data_dir.display()
            )],
        }),
    }
}
