//! Retention (`backup_keep`): after a backup into the backup directory, the newest
//! `backup_keep` backups there are kept and older ones removed (archive and manifest), then the
//! archived WAL that only the removed ones needed (segments before the oldest kept backup's
//! first segment). Only complete backups (an archive with a readable manifest) count and are
//! ever removed; anything else in the directory is left alone.

use super::manifest::Manifest;
use crate::error::{IoContext, Result};
use std::path::{Path, PathBuf};

/// What a pass removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub backups: Vec<PathBuf>,
    pub wal_segments: usize,
}

/// The complete backups in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(PathBuf, Manifest)> {
    let mut out: Vec<(PathBuf, Manifest)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(super::ARCHIVE_SUFFIX)
            })
        })
        .filter_map(|p| Manifest::read_for(&p).ok().map(|m| (p, m)))
        .collect();
    out.sort_by_key(|(p, m)| (m.stop_ms, p.clone()));
    out
}

/// Keeps the newest `keep` backups in `dir`, and the archived WAL they need.
pub fn prune(dir: &Path, keep: u32, wal_archive: Option<&Path>) -> Result<Pruned> {
    let backups = list(dir);
    let remove = backups.len().saturating_sub(keep.max(1) as usize);
    let mut pruned = Pruned::default();
    for (archive, _) in &backups[..remove] {
        let manifest = super::manifest_path(archive);
        std::fs::remove_file(archive).io("cannot remove old backup", archive)?;
        let _ = std::fs::remove_file(&manifest);
        pruned.backups.push(archive.clone());
    }
    if remove > 0 {
        super::sync_dir(dir);
    }
    if let (Some(archive), Some((_, oldest))) = (wal_archive, backups.get(remove))
        && archive.is_dir()
    {
        pruned.wal_segments =
            super::wal_archive::expire(archive, &oldest.wal_first, oldest.wal_segment_size)?;
    }
    Ok(pruned)
}
