//! `pgwarden restore FILE`: a backup into a data directory — missing, empty (a mount point
//! too), left unfinished by a killed restore, or, with `--force`, holding a cluster that is
//! kept aside — then start it ([`crate::backup::restore`]). Everything is checked before the
//! running server (if any) is stopped; the instance lock is held while the directory is
//! written.

use crate::backup::in_place::{self, Found};
use crate::backup::relaunch::Relaunch;
use crate::backup::restore::{self, Job};
use crate::backup::tablespaces;
use crate::cli::LogFormat;
pub use crate::cli::restore::RestoreArgs;
use crate::commands::common::Instance;
use crate::commands::stop;
use crate::config::ShutdownMode;
use crate::error::{Error, Result};
use crate::instance::InstanceLock;
use crate::privilege::RunAs;

pub async fn run(args: RestoreArgs, log_format: LogFormat) -> Result<i32> {
    let instance = Instance::resolve(args.run.sources())?;
    let config = instance.config.clone();
    if config.ephemeral {
        return Err(Error::Backup {
            what: "restore needs a persistent data directory, not --ephemeral".into(),
        });
    }
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
    let run_as = RunAs::resolve(config.run_as.as_deref())?;
    run_as.check_traversable(&data_dir)?;
    let found = in_place::examine(&data_dir)?;
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
    } else if found == Found::Occupied && !args.force {
        return Err(Error::Backup {
            what: format!(
                "{} holds a cluster (or other files) already; restoring over it would replace its data\n\
                 help: restore into another directory (--data-dir DIR), or pass --force to keep the old one aside",
                data_dir.display()
            ),
        });
    }
    let leftovers = restore::leftovers(&instance.state_dir, &found);
    let placements = tablespaces::plan(
        &manifest.tablespaces,
        &args.tablespaces,
        &data_dir,
        &leftovers,
        &run_as,
    )?;
    let job = Job {
        archive: archive.clone(),
        manifest,
        data_dir: data_dir.clone(),
        found,
        placements,
        recovery,
        run_as,
        state_dir: instance.state_dir.clone(),
    };
    restore::check_space(&job)?;

    if instance.supervisor.is_some() {
        println!(
            "{}",
            stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
        );
    }
    // Held while the data directory is written: no `run` may start on it meanwhile.
    let lock = InstanceLock::acquire(&instance.state_dir, &data_dir)?;
    let written = {
        let job = job.clone();
        tokio::task::spawn_blocking(move || restore::write(&job))
            .await
            .expect("the restore thread does not panic")
    };
    drop(lock);
    let aside = match written {
        Ok(aside) => aside,
        Err(e) => {
            // The old cluster is back in place (or the error says where it is): started again.
            if let Some(relaunch) = &relaunch
                && crate::cluster::is_initialised(&data_dir)
                && let Err(again) = relaunch.start().await
            {
                eprintln!("pgwarden: the old cluster did not start again: {again}");
            }
            return Err(e);
        }
    };
    eprintln!(
        "restored: {} into {}{}",
        archive.display(),
        data_dir.display(),
        aside
            .map(|a| format!(
                " (the old cluster is kept in {}{})",
                a.path.display(),
                if a.copied {
                    ", copied there: the data directory is a mount point"
                } else {
                    ""
                }
            ))
            .unwrap_or_default()
    );
    for p in &job.placements {
        eprintln!(
            "restored: tablespace {} (was {}) into {}",
            p.oid,
            p.from,
            p.to.display()
        );
    }
    if args.no_start {
        return Ok(0);
    }
    let relaunch = relaunch.unwrap_or_else(|| {
        Relaunch::of_command_line(args.run.command_line(
            "start",
            log_format,
            config.project_file.as_deref(),
        ))
    });
    relaunch.start().await?;
    Ok(0)
}
