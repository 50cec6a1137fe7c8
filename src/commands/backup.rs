//! `pgwarden backup [FILE|DIR]`: an online base backup of the running cluster
//! ([`crate::backup::base`]), recorded in `<state dir>/backup.json` for `status`. With
//! `--scheduled` (the backup timer) and `backup_verify` on, the drill follows: the new backup
//! verified ([`crate::backup::verify`]), a failure a WARN line and exit 1 (the backup is kept).
//! `pgwarden backup verify [FILE]` runs in [`crate::commands::backup_verify`].

use crate::backup::{base, human_bytes, now_ms, record, verify};
use crate::commands::backup_verify::request_for;
use crate::commands::common::{Instance, human_duration};
use crate::commands::{Globals, InstanceArgs};
use crate::error::{Error, Result};
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    long_about = "Takes an online, consistent base backup of the running cluster while it serves \
writes (PostgreSQL's low-level backup API; no pg_basebackup needed): a zstd-compressed tar of the \
data directory with backup_label, tablespace_map and every WAL segment from the backup's start to \
its stop, plus FILE.manifest.json with the SHA-256 of the archive and of every file in it, and the \
start and stop LSN and time. The backup holds every transaction committed before it ended. \
Restore it with `pgwarden restore FILE`.",
    after_help = "Examples:\n  pgwarden backup                              # into <data dir>.backups/backup-<time>.tar.zst\n  pgwarden backup /srv/backups/                # a dated file in that directory\n  pgwarden backup ./before-migration.tar.zst"
)]
pub struct BackupArgs {
    /// A file ending in .tar.zst, or a directory for a dated file [default: backup_dir, else
    /// <data dir>.backups/]. Backups into backup_dir are followed by the retention (backup_keep).
    #[arg(value_name = "FILE|DIR")]
    pub target: Option<PathBuf>,

    /// As the backup timer runs it: the backup is verified afterwards when `backup_verify` is on
    /// (the default), and the result recorded for `status` and /metrics.
    #[arg(long)]
    pub scheduled: bool,

    #[command(flatten)]
    pub instance: InstanceArgs,

    #[command(subcommand)]
    pub command: Option<BackupCommand>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Prove a backup by restoring it: restore into a throwaway server, replay, amcheck every
    /// database.
    #[command(
        long_about = "Proves a backup by restoring it, beside the running server and without \
touching it: checks the archive against its manifest, restores it into a throwaway directory \
(in /dev/shm when it fits in memory with room to spare, else the temp directory; refused up front \
when it fits nowhere), replays its WAL to the backup's end in a throwaway server (Unix socket only, \
fsync off, small memory, no archiving) — with --to TIME on through the WAL archive —, then checks every database with amcheck: verify_heapam on every table (the catalog \
included: every page read) and bt_index_check on every B-tree index (heapallindexed for tables up \
to 256 MiB). All of it runs in an idle session of its own (SCHED_IDLE, nice 19, idle I/O), paused while \
the running server is busy (one 50 ms tick in twenty still runs, so that it ends). Prints what it checked; on failure names the step and each damaged relation. Exit 0 \
only when all is sound. The result is recorded for `status` and /metrics.",
        after_help = "Examples:\n  pgwarden backup verify                         # the newest backup in the backup directory\n  pgwarden backup verify ./before-migration.tar.zst\n  pgwarden backup verify --to '2026-12-01 13:30:00+00'"
    )]
    Verify(super::backup_verify::VerifyArgs),
}

pub async fn run(args: BackupArgs, instance: Instance, globals: &Globals) -> Result<i32> {
    if let Some(BackupCommand::Verify(verify_args)) = args.command {
        return crate::commands::backup_verify::run(verify_args, instance, globals).await;
    }
    instance.require_running()?;
    let status = instance.status.clone().ok_or_else(|| Error::Backup {
        what: "the running pgwarden has written no status yet; wait until it is ready (`pgwarden wait`)".into(),
    })?;
    if status.state != crate::instance::status::State::Ready {
        return Err(Error::Backup {
            what: format!(
                "the server is {} ({}), not ready; a backup needs a running server\nhelp: `pgwarden wait`, then try again",
                status.state, status.cause
            ),
        });
    }
    let server = base::Server {
        data_dir: status.data_dir.clone(),
        socket_dir: status.socket_dir.clone(),
        port: status.port,
    };
    let backup_dir = instance
        .config
        .backup
        .dir
        .clone()
        .unwrap_or_else(|| base::default_dir(&server.data_dir));
    let target = base::resolve_target(args.target.as_deref(), &backup_dir, now_ms())?;
    let into_backup_dir = target.parent() == Some(backup_dir.as_path());
    if into_backup_dir {
        crate::instance::private_dir::ensure_output_dir(
            &backup_dir,
            std::fs::metadata(&server.data_dir).ok().map(|m| m.uid()),
            "the backup directory",
            "set backup_dir to a directory only you (or root) can write to, or name the backup: \
             `pgwarden backup FILE`",
        )?;
    }
    let progress = std::io::stderr().is_terminal();
    let outcome = tokio::task::spawn_blocking(move || base::take(&server, &target, progress))
        .await
        .expect("the backup thread does not panic");
    match outcome {
        Ok(done) => {
            let m = &done.manifest;
            let secs = done.elapsed.as_secs_f64().max(0.001);
            record::note(
                &instance.state_dir,
                Ok(record::SuccessfulBackup {
                    archive: done.archive.clone(),
                    size: m.archive.size,
                    finished_ms: m.stop_ms,
                    duration_ms: done.elapsed.as_millis() as u64,
                    stop_lsn: m.stop_lsn.clone(),
                }),
            );
            println!(
                "backup: {} ({} from {}, {} files, LSN {}..{}, ended {}, {}, {}/s)",
                done.archive.display(),
                human_bytes(m.archive.size),
                human_bytes(m.total_bytes),
                m.files.len(),
                m.start_lsn,
                m.stop_lsn,
                m.stop_time,
                human_duration(done.elapsed.as_millis() as u64),
                human_bytes((m.total_bytes as f64 / secs) as u64)
            );
            if into_backup_dir {
                let keep = instance.config.backup.keep;
                let wal = instance.config.backup.wal_archive.clone();
                let pruned = crate::backup::retention::prune(&backup_dir, keep, wal.as_deref())?;
                if !pruned.backups.is_empty() || pruned.wal_segments > 0 {
                    eprintln!(
                        "retention (backup_keep = {keep}): removed {} old backup(s), {} archived WAL segment(s)",
                        pruned.backups.len(),
                        pruned.wal_segments
                    );
                }
            }
            if args.scheduled && instance.config.backup.verify {
                return drill(&instance, done.archive).await;
            }
            Ok(0)
        }
        Err(e) => {
            record::note(&instance.state_dir, Err(e.to_string()));
            Err(e)
        }
    }
}

/// The drill after a scheduled backup: the backup verified and the result recorded; a failure
/// is a WARN line and exit 1 (the backup stays, recorded as taken: the server is fine, its
/// backup is not).
async fn drill(instance: &Instance, archive: PathBuf) -> Result<i32> {
    let request = request_for(instance, archive.clone(), None)?;
    let outcome = tokio::task::spawn_blocking(move || verify::run(request))
        .await
        .expect("the verify thread does not panic");
    verify::note(&instance.state_dir, &archive, &outcome);
    match outcome {
        Ok(verified) => {
            println!("{}", verify::summary(&archive, &verified, None));
            Ok(0)
        }
        Err(failed) => {
            tracing::warn!("backup drill failed: {}", failed.to_error(&archive));
            Ok(1)
        }
    }
}
