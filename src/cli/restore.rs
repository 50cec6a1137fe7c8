//! The arguments of `pgwarden restore` (run by [`crate::commands::restore`]).

use crate::cli::RunArgs;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Restores a backup made by `pgwarden backup`: checks the archive against its manifest \
first (a damaged backup is refused before anything is written), unpacks it into a staging directory \
beside the data directory, checking every file, renames it into place and starts the server, which \
replays the backup's WAL: the result holds every transaction committed before the backup ended. \
An existing or running cluster is never replaced without --force; with it, the server is stopped \
and the old data directory is kept aside as <data dir>.before-restore-<time>. Takes the same flags \
as `run` (they are passed to `pgwarden start`).",
    after_help = "Examples:\n  pgwarden restore ~/.local/share/pgwarden/16/data.backups/backup-20261201T030000Z.tar.zst --data-dir ./restored --port 5444\n  pgwarden restore backup.tar.zst --force                    # replace the cluster, keep the old one aside\n  pgwarden restore backup.tar.zst --force --to '2026-12-01 14:05:00+00'   # needs wal_archive"
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

    /// Leave the restored cluster stopped.
    #[arg(long)]
    pub no_start: bool,

    /// How long to wait for the restored server to accept connections.
    #[arg(long, value_name = "DURATION", default_value = "300s")]
    pub timeout: String,

    #[command(flatten)]
    pub run: RunArgs,
}
