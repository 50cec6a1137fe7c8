//! `pgwarden archive-wal --to DIR NAME PATH` / `--from DIR NAME PATH`: the server's
//! `archive_command` and `restore_command` when `wal_archive` is set (hidden from `--help`;
//! see [`crate::backup::wal_archive`]).

use crate::backup::wal_archive;
pub use crate::cli::archive_wal::ArchiveWalArgs;
use crate::error::Result;

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
