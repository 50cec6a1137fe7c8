//! The arguments of `pgwarden snapshot` (run by [`crate::commands::snapshot`]).

use crate::cli::RunArgs;
use clap::{Args, Subcommand};

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
    pub instance: crate::cli::InstanceArgs,
}
