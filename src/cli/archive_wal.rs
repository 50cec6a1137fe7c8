//! The arguments of `pgwarden archive-wal` (run by [`crate::commands::archive_wal`]).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("direction").required(true))]
pub struct ArchiveWalArgs {
    /// archive_command: copy the segment PATH into the archive DIR as NAME.
    #[arg(long, value_name = "DIR", group = "direction")]
    pub to: Option<PathBuf>,

    /// restore_command: copy NAME from the archive DIR to PATH (exit 1 if it is not there).
    #[arg(long, value_name = "DIR", group = "direction")]
    pub from: Option<PathBuf>,

    /// The WAL file's name (%f).
    pub name: String,

    /// The WAL file's path (%p), relative to the data directory.
    pub path: PathBuf,
}
