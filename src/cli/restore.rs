//! The arguments of `pgwarden restore` (run by [`crate::commands::restore`]).

use crate::cli::RunArgs;
use clap::Args;
use std::path::PathBuf;

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
