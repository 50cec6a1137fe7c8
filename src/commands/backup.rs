//! `pgwarden backup [FILE|DIR]`: an online base backup of the running cluster
//! ([`crate::backup::base`]), recorded in `<state dir>/backup.json` for `status`.

use crate::backup::{base, human_bytes, now_ms, record};
use crate::commands::InstanceArgs;
use crate::commands::common::{Instance, human_duration};
use crate::error::{Error, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
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

    #[command(flatten)]
    pub instance: InstanceArgs,
}

pub async fn run(args: BackupArgs, instance: Instance) -> Result<i32> {
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
            Ok(0)
        }
        Err(e) => {
            record::note(&instance.state_dir, Err(e.to_string()));
            Err(e)
        }
    }
}
