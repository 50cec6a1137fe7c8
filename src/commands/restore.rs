//! `pgwarden restore FILE`: a backup into a new data directory, then start it
//! ([`crate::backup::restore`]).

use crate::backup::relaunch::{RUN_BOOLEAN_FLAGS, Relaunch};
use crate::backup::restore::{self, Staging};
pub use crate::cli::restore::RestoreArgs;
use crate::commands::common::Instance;
use crate::commands::stop::{self, StopArgs};
use crate::config::Config;
use crate::config::ShutdownMode;
use crate::error::{Error, Result};
use crate::privilege::RunAs;

pub async fn run(args: RestoreArgs) -> Result<i32> {
    let config = Config::load(&args.run.sources())?;
    if config.ephemeral {
        return Err(Error::Backup {
            what: "restore needs a persistent data directory, not --ephemeral".into(),
        });
    }
    let instance = Instance::from_config(config.clone())?;
    let data_dir = instance
        .status
        .as_ref()
        .map(|s| s.data_dir.clone())
        .unwrap_or_else(|| config.data_dir.clone());
    let archive = crate::paths::absolute(&args.file);
    let recovery = match &args.to {
        None => None,
        Some(time) => Some(crate::backup::wal_archive::recovery_for(&config, time)?),
    };

    // Checked before anything changes.
    let verify_path = archive.clone();
    let manifest = tokio::task::spawn_blocking(move || restore::verify(&verify_path))
        .await
        .expect("the verify thread does not panic")?;
    eprintln!(
        "verified: {} ({} files, backup ended {})",
        archive.display(),
        manifest.files.len(),
        manifest.stop_time
    );
    let mut relaunch = None;
    if let Some(pid) = instance.supervisor {
        if !args.force {
            return Err(Error::Backup {
                what: format!(
                    "the cluster in {} is running (pgwarden pid {pid}); restoring over it would replace its data\n\
                     help: restore into another directory (--data-dir DIR, --port N), or pass --force to stop it \
                     and keep its data aside",
                    data_dir.display()
                ),
            });
        }
        relaunch = Some(Relaunch::of_supervisor(pid)?);
    } else if restore::non_empty(&data_dir) && !args.force {
        return Err(Error::Backup {
            what: format!(
                "{} holds a cluster already; restoring over it would replace its data\n\
                 help: restore into another directory (--data-dir DIR), or pass --force to keep the old one aside",
                data_dir.display()
            ),
        });
    }
    let run_as = RunAs::resolve(config.run_as.as_deref())?;
    run_as.check_traversable(&data_dir)?;

    // Unpacked and checked while the old server still runs; stopped only for the swap.
    let staging = {
        let (archive, manifest, data_dir, run_as, recovery) = (
            archive.clone(),
            manifest.clone(),
            data_dir.clone(),
            run_as.clone(),
            recovery.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<Staging> {
            let staging = Staging::create(&data_dir, "restore", &run_as)?;
            restore::unpack(&archive, &manifest, &staging.path, &run_as)?;
            if let Some(recovery) = &recovery {
                restore::configure_recovery(&staging.path, recovery, &run_as)?;
            }
            Ok(staging)
        })
        .await
        .expect("the restore thread does not panic")?
    };
    if instance.supervisor.is_some() {
        stop::run(StopArgs {
            instance: args.run.instance.clone(),
            mode: ShutdownMode::Fast,
            timeout: None,
        })
        .await?;
    }
    let target = data_dir.clone();
    let aside = tokio::task::spawn_blocking(move || restore::install(staging, &target))
        .await
        .expect("the restore thread does not panic")?;
    eprintln!(
        "restored: {} into {}{}",
        archive.display(),
        data_dir.display(),
        aside
            .map(|a| format!(" (the old cluster is in {})", a.display()))
            .unwrap_or_default()
    );
    if args.no_start {
        return Ok(0);
    }
    let relaunch = relaunch.unwrap_or_else(|| {
        Relaunch::from_own_args(
            std::env::args_os().skip(1),
            "restore",
            1,
            &RUN_BOOLEAN_FLAGS,
            &["--force", "--no-start"],
            &["--to"],
        )
    });
    relaunch.start().await?;
    Ok(0)
}
