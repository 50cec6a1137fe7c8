//! The reset spare: a copy of the template cluster of the instance's settings, beside its
//! data directory (`.<data dir name>.spare`), so that the first launch after a `reset` (or
//! after the data directory was deleted by hand) renames it into place instead of copying the
//! template: `reset` + `start` becomes a rename plus a warm start.
//!
//! Made once the template is complete (at the first launch that ran initdb, after the
//! background fill saved the template), for a persistent cluster the template cache can hold
//! (no init scripts, no separate WAL directory). Its size is the template's (about 46 MB), not
//! the cluster's: a reset of a big cluster does not double its disk use.

use super::{Made, Origin, Record};
use crate::binaries::Install;
use crate::error::Result;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use std::path::{Path, PathBuf};

/// `.<data dir name>.spare` beside the data directory (same filesystem: renamed into it).
pub fn path(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
    data_dir.with_file_name(format!(".{name}.spare"))
}

/// Makes the reset spare of `data_dir` from `template` (unless a valid one is there).
pub fn prepare(
    data_dir: &Path,
    template: &Path,
    install: &Install,
    run_as: &RunAs,
    cancel: &Cancel,
) -> Result<Made> {
    let Some(origin) = Origin::of_template(template, install, run_as) else {
        return Ok(Made::Skipped(format!(
            "the template cluster {} is not complete",
            template.display()
        )));
    };
    if !super::renamable_into(data_dir) {
        return Ok(Made::Skipped(format!(
            "{} is a mount point or on another filesystem than its parent: a rename cannot put a spare there",
            data_dir.display()
        )));
    }
    let spare = path(data_dir);
    let parent = spare.parent().unwrap_or(Path::new("/"));
    if let Err(why) = super::room_for(parent, super::size_of(template)) {
        super::discard(&spare)?;
        return Ok(Made::Skipped(why));
    }
    super::make(
        &spare,
        &origin,
        |to| super::copy_cluster(template, to, run_as, cancel),
        cancel,
    )
}

/// Takes the valid reset spare of `data_dir` for `template`: its cluster is renamed to `into`
/// (the first launch's empty staging directory). None: copy the template instead.
pub fn take(
    data_dir: &Path,
    template: &Path,
    install: &Install,
    run_as: &RunAs,
    into: &Path,
) -> Option<Record> {
    let spare = path(data_dir);
    let Some(wanted) = Origin::of_template(template, install, run_as) else {
        super::drop_stale(&spare, "its template is gone");
        return None;
    };
    super::take(&spare, &wanted, into, "cluster")
}
