//! The arguments of `pgwarden backup` (run by [`crate::commands::backup`]).

use crate::cli::InstanceArgs;
use clap::Args;
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
