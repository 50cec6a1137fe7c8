//! `pgwarden restore FILE`: a backup into a data directory — missing, empty (a mount point
//! too), left unfinished by a killed restore, or, with `--force`, holding a cluster that is
//! kept aside — then start it ([`crate::backup::restore`]). Everything is checked before the
//! running server (if any) is stopped — the backup, the space, the tablespaces, and the `--to`
//! time ([`crate::backup::target_time`], [`crate::backup::wal_archive::recovery_for`]); the
//! instance lock is held while the directory is written. With `--force`, a restore that fails
//! later — while writing, or because the restored server does not start — puts the old
//! cluster back and starts it again when it ran ([`crate::backup::aside::undo`]).

use crate::backup::aside::{self, Aside};
use crate::backup::in_place::{self, Found};
use crate::backup::relaunch::Relaunch;
use crate::backup::restore::{self, Job};
use crate::backup::tablespaces;
use crate::commands::Globals;
use crate::commands::RunArgs;
use crate::commands::common::Instance;
use crate::commands::stop;
use crate::config::ShutdownMode;
use crate::error::{Error, Result};
use crate::instance::lock::InstanceLock;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Restores a backup made by `pgwarden backup`: checks the archive against its manifest \
and every tablespace location and the free space first (a damaged backup is refused before anything \
is written), unpacks it into the data directory itself - which may be a mount point - checking every \
file, marked unfinished until it is complete, and starts the server, which replays the backup's WAL: \
the result holds every transaction committed before the backup ended. A restore that was killed leaves \
the directory marked unfinished: the next `restore` clears it (`run` clears it and initialises a new \
cluster; it never starts it). Tablespaces go back to their original locations when those are missing \
or empty, else where --tablespace OLD=NEW says. An existing or running cluster is never replaced \
without --force; with it, the server is stopped and the old cluster is kept as \
<data dir>.before-restore-<time> beside the data directory (renamed; copied when the data directory \
is a mount point, if there is room), and put back if the restore fails. Takes the same flags as `run` \
(they are passed to `pgwarden start`).",
    after_help = "Examples:\n  pgwarden restore ~/.local/share/pgwarden/16/data.backups/backup-20261201T030000Z.tar.zst --data-dir ./restored --port 5444\n  pgwarden restore backup.tar.zst --force                    # replace the cluster, keep the old one aside\n  pgwarden restore backup.tar.zst --data-dir ./copy --port 5444 --tablespace /srv/ts1=/srv/ts1-copy\n  pgwarden restore backup.tar.zst --force --to '2026-12-01 14:05:00+00'   # needs wal_archive"
)]
pub struct RestoreArgs {
    /// The backup archive (FILE.manifest.json must be beside it).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Replay the WAL archive (wal_archive) up to this time, then open: a PostgreSQL timestamp,
    /// e.g. '2026-12-01 14:05:00+00'.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    /// Replace an existing (even running) cluster; the old data directory is kept aside.
    #[arg(long)]
    pub force: bool,

    /// Restore the tablespace that was at OLD into NEW instead (repeatable; both absolute).
    /// Needed when OLD is not empty (the backed-up cluster still uses it). NEW must be
    /// missing or empty; it becomes the server user's, mode 0700.
    #[arg(long = "tablespace", value_name = "OLD=NEW")]
    pub tablespaces: Vec<String>,

    /// Leave the restored cluster stopped.
    #[arg(long)]
    pub no_start: bool,

    /// How long to wait for the restored server to accept connections.
    #[arg(long, value_name = "DURATION", default_value = "300s")]
    pub timeout: String,

    #[command(flatten)]
    pub run: RunArgs,
}

/// One function per step: check everything (the backup, the `--to` time, the directory, the
/// tablespaces, the space), stop the running server, write, say what was restored, start.
pub async fn run(args: RestoreArgs, instance: Instance, globals: &Globals) -> Result<i32> {
    let data_dir = target_data_dir(&instance)?;
    let archive = crate::os::paths::absolute(&args.file);
    // A time PostgreSQL could not use is refused before anything else is even read.
    if let Some(time) = &args.to {
        crate::backup::wal_archive::parse_target(time)?;
    }
    // Checked before anything changes.
    let manifest = verify(&archive).await?;
    let (job, relaunch) = plan(&args, &instance, &archive, &data_dir, manifest)?;
    if instance.supervisor.is_some() {
        println!(
            "{}",
            stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
        );
    }
    // From here on the old cluster is stopped: every failure starts it again (put back first
    // where the restore had set it aside), and says so.
    let aside = match write(&job, &instance).await {
        Ok(aside) => aside,
        // The old cluster is back in place (or the error says where it is): started again.
        Err(e) => return Err(start_old_again(e, relaunch.as_ref(), &data_dir).await),
    };
    report(&job, aside.as_ref());
    if args.no_start {
        return Ok(0);
    }
    let old_ran = instance.supervisor.is_some();
    let relaunch = relaunch
        .unwrap_or_else(|| Relaunch::of_command_line(args.run.command_line("start", globals)));
    if let Err(e) = relaunch.start().await {
        let Some(aside) = aside.filter(|_| args.force) else {
            return Err(e);
        };
        return Err(undo(e, &job, &aside, old_ran.then_some(&relaunch)).await);
    }
    Ok(0)
}

/// The data directory restored into: the running supervisor's, else the configured one; never
/// a throwaway one.
fn target_data_dir(instance: &Instance) -> Result<PathBuf> {
    if instance.config.ephemeral {
        return Err(Error::Backup {
            what: "restore needs a persistent data directory, not --ephemeral".into(),
        });
    }
    Ok(instance
        .status
        .as_ref()
        .map(|s| s.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone()))
}

/// The backup checked against its manifest, in a blocking thread.
async fn verify(archive: &Path) -> Result<crate::backup::manifest::Manifest> {
    let verify_path = archive.to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || restore::verify(&verify_path))
        .await
        .expect("the verify thread does not panic")?;
    eprintln!(
        "verified: {} ({} files, backup ended {})",
        archive.display(),
        manifest.files.len(),
        manifest.stop_time
    );
    Ok(manifest)
}

/// Everything checked before the running server is touched: the `--to` recovery, the server's
/// user, what the data directory holds, the tablespaces' places and the space. The job, and
/// how to start the running server again (read before it is stopped).
fn plan(
    args: &RestoreArgs,
    instance: &Instance,
    archive: &Path,
    data_dir: &Path,
    manifest: crate::backup::manifest::Manifest,
) -> Result<(Job, Option<Relaunch>)> {
    let recovery = match &args.to {
        None => None,
        Some(time) => Some(crate::backup::wal_archive::recovery_for(
            &instance.config,
            time,
            &manifest,
        )?),
    };
    let run_as = crate::instance::server_user::server_user(
        instance.config.run_as.as_deref(),
        data_dir,
        false,
        false,
    )?;
    run_as.check_traversable(data_dir)?;
    let found = in_place::examine(data_dir)?;
    let relaunch = refuse_to_replace(args, instance, data_dir, &found)?;
    let leftovers = restore::leftovers(&instance.state_dir, &found);
    let placements = tablespaces::plan(
        &manifest.tablespaces,
        &args.tablespaces,
        data_dir,
        &leftovers,
        &run_as,
    )?;
    let job = Job {
        archive: archive.to_path_buf(),
        manifest,
        data_dir: data_dir.to_path_buf(),
        found,
        placements,
        recovery,
        run_as,
        state_dir: instance.state_dir.clone(),
    };
    restore::check_space(&job)?;
    Ok((job, relaunch))
}

/// A running cluster or an occupied directory is replaced only with `--force`; for a running
/// one, how to start it again.
fn refuse_to_replace(
    args: &RestoreArgs,
    instance: &Instance,
    data_dir: &Path,
    found: &Found,
) -> Result<Option<Relaunch>> {
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
        return Ok(Some(Relaunch::of_supervisor(pid)?));
    }
    if *found == Found::Occupied && !args.force {
        return Err(Error::Backup {
            what: format!(
                "{} holds a cluster (or other files) already; restoring over it would replace its data\n\
                 help: restore into another directory (--data-dir DIR), or pass --force to keep the old one aside",
                data_dir.display()
            ),
        });
    }
    Ok(None)
}

/// The backup written into the data directory, the instance lock held meanwhile (no `run` may
/// start on it); where the old cluster was set aside, if it was.
async fn write(job: &Job, instance: &Instance) -> Result<Option<Aside>> {
    let lock = InstanceLock::acquire(&instance.state_dir, &job.data_dir)?;
    let task = job.clone();
    let written = tokio::task::spawn_blocking(move || restore::write(&task))
        .await
        .expect("the restore thread does not panic");
    drop(lock);
    written
}

/// What was restored where, and where the old cluster is kept.
fn report(job: &Job, aside: Option<&Aside>) {
    eprintln!(
        "restored: {} into {}{}",
        job.archive.display(),
        job.data_dir.display(),
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
}

/// After a restore that failed while writing (and put the old cluster back, or said where it
/// is): the old cluster's server is started again when one ran, and the error says so.
async fn start_old_again(e: Error, relaunch: Option<&Relaunch>, data_dir: &Path) -> Error {
    let Some(relaunch) = relaunch else {
        return e;
    };
    if !crate::cluster::is_initialised(data_dir) {
        return e;
    }
    match relaunch.start().await {
        Ok(()) => Error::Backup {
            what: format!("{}\nthe old cluster's server runs again", e.with_causes()),
        },
        Err(again) => Error::Backup {
            what: format!(
                "{}\nthe old cluster's server did not start again: {}",
                e.with_causes(),
                again.with_causes()
            ),
        },
    }
}

/// The restored cluster did not start (`e`): its server is stopped if anything is left of it,
/// the restore undone ([`aside::undo`]: the old cluster back in place) and the old cluster's
/// server started again when one ran (`restart`).
async fn undo(e: Error, job: &Job, aside: &Aside, restart: Option<&Relaunch>) -> Error {
    let data_dir = &job.data_dir;
    let undone = async {
        if let Some(pid) = crate::supervisor::server::survivor(data_dir) {
            crate::supervisor::server::stop_survivor(pid, data_dir, Duration::from_secs(30)).await;
        }
        let _lock = InstanceLock::acquire(&job.state_dir, data_dir)?;
        let (aside, data_dir, run_as) = (aside.clone(), data_dir.clone(), job.run_as.clone());
        let tablespaces: Vec<PathBuf> = job
            .placements
            .iter()
            .map(|p| p.to.join(&p.version_dir))
            .collect();
        tokio::task::spawn_blocking(move || aside::undo(&aside, &data_dir, &tablespaces, &run_as))
            .await
            .expect("the undo thread does not panic")
    }
    .await;
    let failed = format!(
        "the restored cluster in {} did not start: {}",
        data_dir.display(),
        e.to_string().lines().next().unwrap_or_default()
    );
    let what = match (undone, restart) {
        (Err(back), _) => format!(
            "{failed}\nundoing the restore failed: {}\nthe cluster that was in {} is kept in {}\n\
             help: stop anything running on {}, move it away, and move {} back to {}",
            back.with_causes(),
            data_dir.display(),
            aside.path.display(),
            data_dir.display(),
            aside.path.display(),
            data_dir.display()
        ),
        (Ok(()), None) => format!(
            "{failed}\nthe restore was undone: the cluster that was in {} is back there (not started: \
             it was not running)",
            data_dir.display()
        ),
        (Ok(()), Some(restart)) => match restart.start().await {
            Ok(()) => format!(
                "{failed}\nthe restore was undone: the cluster that was in {} is back there and runs \
                 again",
                data_dir.display()
            ),
            Err(again) => format!(
                "{failed}\nthe restore was undone: the cluster that was in {} is back there, but did \
                 not start again: {}",
                data_dir.display(),
                again.with_causes()
            ),
        },
    };
    Error::Backup { what }
}
