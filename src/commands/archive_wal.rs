//! `pgwarden archive-wal --to DIR NAME PATH` / `--from DIR NAME PATH`: the server's
//! `archive_command` and `restore_command` when `wal_archive` is set (hidden from `--help`;
//! see [`crate::backup::wal_archive`]).

use crate::backup::wal_archive;
use crate::error::Result;
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

pub fn run(args: ArchiveWalArgs) -> Result<i32> {
    if let Some(archive) = &args.to {
        wal_archive::push(archive, &args.name, &args.path)?;
        return Ok(0);
    }
    let archive = args.from.as_ref().expect("clap requires --to or --from");
    Ok(if wal_archive::fetch(archive, &args.name, &args.path)? {
        0
    } else {
        1
    })
}
