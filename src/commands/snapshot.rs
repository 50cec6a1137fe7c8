//! `pgwarden snapshot save|restore|ls|rm NAME`: dev snapshots of the whole cluster
//! ([`crate::backup::snapshot`]).
//!
//! For a save, the server is stopped (fast) through `pgwarden stop`'s own path for the copy,
//! and started again with the arguments and environment it had ([`crate::backup::relaunch`]).
//! A restore stages the copy while the server runs; a running supervisor then swaps it in
//! itself and starts its server again ([`crate::backup::snapshot_swap`]); a stopped instance
//! (or `--no-start`) is swapped here and started through `pgwarden start`.

use crate::backup::relaunch::Relaunch;
use crate::backup::snapshot::{self, RemoveOnDrop, StagingLock};
use crate::backup::snapshot_swap;
use crate::backup::{human_bytes, rfc3339};
use crate::commands::common::{Instance, human_duration};
use crate::commands::stop;
use crate::commands::{Globals, RunArgs};
use crate::config::ShutdownMode;
use crate::error::{Error, Result};
use crate::instance::lock::InstanceLock;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Stop the server, copy the whole cluster aside as NAME, start it again.
    ///
    /// Files are cloned (copy-on-write) on btrfs/XFS, else copied. The snapshot lives in
    /// <data dir>.snapshots/NAME. A cluster with tablespaces is refused (a snapshot holds only
    /// the data directory): use `pgwarden backup` / `restore` for it.
    #[command(
        after_help = "Examples:\n  pgwarden snapshot save before-migration\n  pgwarden snapshot save seeded --data-dir ./pgdata"
    )]
    Save(SnapshotArgs),
    /// Put snapshot NAME back: the cluster as it was, swapped in atomically, started again.
    ///
    /// Everything written since the snapshot is gone. Takes the same flags as `run` (used to
    /// start the server when none was running).
    #[command(after_help = "Examples:\n  pgwarden snapshot restore before-migration")]
    Restore(SnapshotArgs),
    /// List the snapshots of the cluster.
    Ls(SnapshotListArgs),
    /// Remove snapshot NAME.
    Rm(SnapshotArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// The snapshot's name: letters, digits, '.', '_', '-'.
    pub snapshot: String,

    /// Leave the server stopped afterwards.
    #[arg(long)]
    pub no_start: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotListArgs {
    #[command(flatten)]
    pub instance: crate::commands::InstanceArgs,
}

pub async fn run(command: SnapshotCommand, instance: Instance, globals: &Globals) -> Result<i32> {
    match command {
        SnapshotCommand::Save(args) => save(args, instance).await,
        SnapshotCommand::Restore(args) => restore(args, instance, globals).await,
        SnapshotCommand::Ls(_) => ls(instance),
        SnapshotCommand::Rm(args) => rm(args, instance),
    }
}

/// The instance and its data directory (the running supervisor's, else the configured one).
fn locate(instance: Instance) -> Result<(Instance, PathBuf)> {
    if instance.config.ephemeral {
        return Err(Error::Backup {
            what: "snapshots need a persistent data directory, not --ephemeral".into(),
        });
    }
    let data_dir = instance
        .status
        .as_ref()
        .map(|s| s.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone());
    Ok((instance, data_dir))
}

/// Stops the running supervisor (if any) and says how to start it again.
async fn stop_for(instance: &Instance) -> Result<Option<Relaunch>> {
    let Some(pid) = instance.supervisor else {
        return Ok(None);
    };
    let relaunch = Relaunch::of_supervisor(pid)?;
    println!(
        "{}",
        stop::stop_instance(instance, ShutdownMode::Fast, None).await?
    );
    Ok(Some(relaunch))
}

async fn save(args: SnapshotArgs, instance: Instance) -> Result<i32> {
    snapshot::validate_name(&args.snapshot)?;
    let (instance, data_dir) = locate(instance)?;
    if snapshot::snapshots_dir(&data_dir)
        .join(&args.snapshot)
        .exists()
    {
        // Said before the server is stopped.
        return Err(Error::Backup {
            what: format!(
                "snapshot {:?} exists already\nhelp: `pgwarden snapshot rm {}` first, or pick another name",
                args.snapshot, args.snapshot
            ),
        });
    }
    snapshot::refuse_tablespaces(&data_dir)?;
    snapshot::ensure_dir(&data_dir)?;
    // Taken for its sweep (what a killed restore left) and held: no restore stages meanwhile.
    let _staging_lock = StagingLock::acquire(&instance.state_dir, &data_dir)?;
    let started = Instant::now();
    let relaunch = stop_for(&instance).await?;
    let (dir, name) = (data_dir.clone(), args.snapshot.clone());
    let saved = tokio::task::spawn_blocking(move || snapshot::save(&dir, &name))
        .await
        .expect("the snapshot thread does not panic");
    // Started again whether or not the copy worked.
    if let Some(relaunch) = &relaunch
        && !args.no_start
    {
        relaunch.start().await?;
    }
    let meta = saved?;
    eprintln!(
        "snapshot: saved {:?} ({} files, {}) in {}",
        meta.name,
        meta.files,
        human_bytes(meta.bytes),
        human_duration(started.elapsed().as_millis() as u64)
    );
    Ok(0)
}

async fn restore(args: SnapshotArgs, instance: Instance, globals: &Globals) -> Result<i32> {
    snapshot::validate_name(&args.snapshot)?;
    let (instance, data_dir) = locate(instance)?;
    if crate::backup::in_place::is_mount_point(&data_dir) {
        // Said before anything changes: the swap is one rename, which a mount point refuses.
        return Err(Error::Backup {
            what: format!(
                "{} is a mount point, which a snapshot restore cannot swap out (it exchanges two directories \
                 with one rename); nothing was changed\n\
                 help: use `pgwarden backup FILE` and `pgwarden restore FILE --force`, which restore in place",
                data_dir.display()
            ),
        });
    }
    let started = Instant::now();
    // Held until the swap is done: the staging directory is this command's alone.
    let staging_lock = StagingLock::acquire(&instance.state_dir, &data_dir)?;
    // Copied while the server still runs; it is stopped only for the swap.
    let (dir, name) = (data_dir.clone(), args.snapshot.clone());
    let use_spare = instance.config.spare;
    let (staging_lock, staged) = tokio::task::spawn_blocking(move || {
        let staged = snapshot::stage(&staging_lock, &dir, &name, use_spare);
        (staging_lock, staged)
    })
    .await
    .expect("the snapshot thread does not panic");
    let staging = staged?;
    let guard = RemoveOnDrop(Some(staging.clone()));
    if let Some(pid) = instance.supervisor
        && !args.no_start
    {
        // The running supervisor swaps it in itself and starts its server again: same pid,
        // same environment, no second pgwarden. On failure it starts the old cluster again;
        // the guard removes what is left at the staging path either way.
        snapshot_swap::ask(&instance.state_dir, pid)?;
        // The stop, then a warm start (or, after a failed swap, a crash recovery of the old cluster).
        let limit = instance.config.shutdown_timeout + std::time::Duration::from_secs(60);
        snapshot_swap::wait(&instance.state_dir, pid, limit).await?;
        // The cluster it replaced, now at the staging path: deleted in the background.
        crate::os::deletion::delete_beside(&staging, &data_dir)?;
        guard.disarm();
        drop(staging_lock);
        eprintln!(
            "snapshot: restored {:?} into {} in {} (pgwarden pid {pid} kept running)",
            args.snapshot,
            data_dir.display(),
            human_duration(started.elapsed().as_millis() as u64)
        );
        return Ok(0);
    }
    let relaunch = stop_for(&instance).await?;
    // Held for the swap: no `run` may start on the data directory meanwhile.
    let swapped = InstanceLock::acquire(&instance.state_dir, &data_dir)
        .and_then(|_lock| snapshot::swap_in(&staging, &data_dir));
    if let Err(e) = swapped {
        // Nothing was swapped: the server is started again as it was.
        if let Some(relaunch) = &relaunch
            && let Err(again) = relaunch.start().await
        {
            eprintln!("pgwarden: the cluster did not start again: {again}");
        }
        return Err(e);
    }
    guard.disarm();
    drop(staging_lock);
    if !args.no_start {
        let relaunch = relaunch
            .unwrap_or_else(|| Relaunch::of_command_line(args.run.command_line("start", globals)));
        relaunch.start().await?;
    }
    eprintln!(
        "snapshot: restored {:?} into {} in {}",
        args.snapshot,
        data_dir.display(),
        human_duration(started.elapsed().as_millis() as u64)
    );
    Ok(0)
}

fn ls(instance: Instance) -> Result<i32> {
    let data_dir = instance
        .status
        .as_ref()
        .map(|s| s.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone());
    let snapshots = snapshot::list(&data_dir);
    if snapshots.is_empty() {
        eprintln!(
            "no snapshots of {} (`pgwarden snapshot save NAME` makes one)",
            data_dir.display()
        );
        return Ok(0);
    }
    println!(
        "{:<24} {:<25} {:>10} {:>7}  POSTGRESQL",
        "NAME", "CREATED", "SIZE", "FILES"
    );
    for m in snapshots {
        println!(
            "{:<24} {:<25} {:>10} {:>7}  {}",
            m.name,
            rfc3339(m.created_ms),
            human_bytes(m.bytes),
            m.files,
            m.postgresql_major
        );
    }
    Ok(0)
}

fn rm(args: SnapshotArgs, instance: Instance) -> Result<i32> {
    snapshot::validate_name(&args.snapshot)?;
    let (instance, data_dir) = locate(instance)?;
    // Taken for its sweep: what a killed restore left goes too.
    let _staging_lock = StagingLock::acquire(&instance.state_dir, &data_dir)?;
    snapshot::remove(&data_dir, &args.snapshot)?;
    eprintln!("snapshot: removed {:?}", args.snapshot);
    Ok(0)
}
