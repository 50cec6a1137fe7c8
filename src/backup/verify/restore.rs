//! Step 2: the backup unpacked into the throwaway directory, every member checked against the
//! manifest as it is written ([`crate::backup::restore::unpack`], the restore's own code), the
//! tablespaces into `tablespaces/<oid>` of the throwaway directory (never their recorded
//! locations), and for `--to TIME` the recovery settings.

use super::scratch::Scratch;
use crate::backup::manifest::Manifest;
use crate::backup::restore::{self, Recovery};
use crate::backup::tablespaces;
use crate::error::Result;
use crate::os::privilege::RunAs;
use std::path::Path;

pub fn restore(
    archive: &Path,
    manifest: &Manifest,
    scratch: &Scratch,
    run_as: &RunAs,
    recovery: Option<&Recovery>,
) -> Result<()> {
    let data_dir = scratch.data_dir();
    let mappings: Vec<String> = manifest
        .tablespaces
        .iter()
        .map(|t| format!("{}={}", t.location, scratch.tablespace(&t.oid).display()))
        .collect();
    let placements = tablespaces::plan(&manifest.tablespaces, &mappings, &data_dir, &[], run_as)?;
    // New directories inside the throwaway one, removed with it (no flush: nothing here is kept).
    for p in &placements {
        run_as.own_dir(&p.to, 0o700)?;
    }
    restore::unpack(archive, manifest, &data_dir, &placements, run_as)?;
    tablespaces::write_map(&data_dir, &placements, run_as)?;
    // The throwaway replays the backup as a crash recovery (or, with --to, a point-in-time
    // one): signal files an archive may hold would make it a standby that never opens.
    for signal in ["standby.signal", "recovery.signal"] {
        let _ = std::fs::remove_file(data_dir.join(signal));
    }
    if let Some(recovery) = recovery {
        restore::configure_recovery(&data_dir, recovery, run_as)?;
    }
    Ok(())
}
