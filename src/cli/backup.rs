//! The arguments of `pgwarden backup` (run by [`crate::commands::backup`]).

use crate::cli::InstanceArgs;
use clap::{Args, Subcommand};
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
fsync off, small memory, no archiving, nice 19 and idle I/O) — with --to TIME on through the WAL \
archive —, then checks every database with amcheck: verify_heapam on every table (the catalog \
included: every page read) and bt_index_check on every B-tree index (heapallindexed for tables up \
to 1 GiB). Prints what it checked; on failure names the step and each damaged relation. Exit 0 \
only when all is sound. The result is recorded for `status` and /metrics.",
        after_help = "Examples:\n  pgwarden backup verify                         # the newest backup in the backup directory\n  pgwarden backup verify ./before-migration.tar.zst\n  pgwarden backup verify --to '2026-12-01 13:30:00+00'"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The backup (.tar.zst, its manifest beside it) [default: the newest complete backup in
    /// backup_dir, else <data dir>.backups/].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Replay on through the WAL archive (wal_archive) to this time, as `restore --to` does.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    #[command(flatten)]
    pub instance: InstanceArgs,
}
