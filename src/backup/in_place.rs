//! A restore written into the data directory itself, atomic by marker — the way a first launch
//! creates a cluster ([`crate::cluster`]), with the same markers, so that `run` and `restore`
//! recognise an unfinished restore without knowing about each other.
//!
//! Why in place rather than a staging sibling renamed over the data directory: the data
//! directory is often a mount point (a volume of its own, for a service), which no rename can
//! replace; and one mechanism for every data directory is one way to get atomicity right.
//!
//! 1. [`Target::begin`]: the directory (missing, or empty) is created or taken over, owned by
//!    the server's user, mode 0700, and the marker [`CREATING`] is written into it and flushed:
//!    from here it is "a cluster pgwarden began and did not finish".
//! 2. The archive is unpacked into it. Its [`MARKER`] (`pgwarden.json`, in every backup of a
//!    cluster pgwarden created) is written under [`HELD_MARKER`] instead: with both markers
//!    the directory would count as complete.
//! 3. [`Target::commit`]: syncfs, the held marker renamed to [`MARKER`], syncfs, [`CREATING`]
//!    removed, the directory flushed. Only now does the directory hold a cluster.
//!
//! Killed anywhere before 3 (kill -9, the machine going down), the directory holds
//! [`CREATING`] without [`MARKER`]: `pgwarden run` clears it and initialises a new cluster
//! (it never starts it), `pgwarden restore` clears it and restores again. A failure that
//! pgwarden sees (disk full, a damaged member) drops the [`Target`], which puts the directory
//! back as it was: removed if the restore created it, else emptied with its mode and owner
//! back. A directory pgwarden did not mark is never cleared.

pub use crate::cluster::empty_except_creating;
use crate::cluster::{Before, CREATING, MARKER};
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the restored cluster's `pgwarden.json` waits until the restore is complete.
pub const HELD_MARKER: &str = "pgwarden.json.restoring";
/// A filesystem's own directory at the root of an ext2/3/4 mount: left alone.
const LOST_FOUND: &str = "lost+found";

/// What a data directory holds, for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Missing,
    /// No entries (but an empty `lost+found`).
    Empty,
    /// [`CREATING`] without [`MARKER`]: an unfinished restore or first launch of pgwarden's.
    Unfinished,
    /// Anything else: a cluster, or files pgwarden did not write.
    Occupied,
}

/// The entries of `dir` that count (all but an empty `lost+found`).
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).io("cannot read directory", dir)? {
        let entry = entry.io("cannot read directory", dir)?;
        let empty_lost_found = entry.file_name() == LOST_FOUND
            && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
        if !empty_lost_found {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// What `data_dir` holds.
pub fn examine(data_dir: &Path) -> Result<Found> {
    match std::fs::symlink_metadata(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e).io("cannot read data directory", data_dir),
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::Backup {
                what: format!(
                    "{} is not a directory\nhelp: restore into a directory (missing, or empty)",
                    data_dir.display()
                ),
            });
        }
        Ok(_) => {}
    }
    if data_dir.join(CREATING).exists() && !data_dir.join(MARKER).exists() {
        return Ok(Found::Unfinished);
    }
    Ok(if entries(data_dir)?.is_empty() {
        Found::Empty
    } else {
        Found::Occupied
    })
}

/// Empties an unfinished restore (or first launch) of pgwarden's, keeping the directory itself
/// (it may be a mount point); [`CREATING`] goes last, so a kill while clearing leaves a
/// directory still recognised as unfinished. Refuses a directory pgwarden did not mark.
pub fn clear_unfinished(data_dir: &Path) -> Result<()> {
    if examine(data_dir)? != Found::Unfinished {
        return Err(Error::Backup {
            what: format!(
                "refusing to clear {}: pgwarden did not mark it as unfinished",
                data_dir.display()
            ),
        });
    }
    empty_except_creating(data_dir)?;
    let creating = data_dir.join(CREATING);
    std::fs::remove_file(&creating).io("cannot remove", &creating)?;
    super::sync_dir(data_dir);
    Ok(())
}

/// Writes [`CREATING`] into `dir` (owned by the server's user) and flushes the directory.
pub fn mark_creating(dir: &Path, note: &str, run_as: &RunAs) -> Result<()> {
    let path = dir.join(CREATING);
    let mut file = std::fs::File::create(&path).io("cannot write", &path)?;
    file.write_all(note.as_bytes()).io("cannot write", &path)?;
    file.sync_all().io("cannot flush", &path)?;
    if run_as.switch {
        let _ = nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid));
    }
    super::sync_dir(dir);
    Ok(())
}

/// syncfs() of the filesystem holding `dir`.
pub fn flush_filesystem(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).io("cannot open", dir)?;
    nix::unistd::syncfs(&handle).map_err(|source| Error::Flush {
        what: "the filesystem of",
        dir: dir.to_path_buf(),
        source,
    })
}

/// A data directory being restored into: put back as it was on drop unless committed.
pub struct Target {
    pub data_dir: PathBuf,
    before: Before,
    committed: bool,
}

impl Target {
    /// Takes `data_dir` (missing, empty, or holding only [`CREATING`]) for a restore: owned by
    /// the server's user, mode 0700, marked [`CREATING`] with `note`.
    pub fn begin(data_dir: &Path, note: &str, run_as: &RunAs) -> Result<Target> {
        let before = Before::of(data_dir);
        if !before.existed()
            && let Some(parent) = data_dir.parent()
        {
            std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
        }
        let target = Target {
            data_dir: data_dir.to_path_buf(),
            before,
            committed: false,
        };
        run_as.own_dir(data_dir, 0o700)?;
        mark_creating(data_dir, note, run_as)?;
        Ok(target)
    }

    /// Makes the restored cluster complete: flushed, its marker put in place, flushed,
    /// [`CREATING`] removed.
    pub fn commit(mut self) -> Result<()> {
        let dir = self.data_dir.clone();
        flush_filesystem(&dir)?;
        let held = dir.join(HELD_MARKER);
        if held.exists() {
            let marker = dir.join(MARKER);
            std::fs::rename(&held, &marker).io("cannot rename into", &marker)?;
            super::sync_dir(&dir);
        }
        self.committed = true;
        let creating = dir.join(CREATING);
        std::fs::remove_file(&creating).io("cannot remove", &creating)?;
        super::sync_dir(&dir);
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.committed {
            self.before.put_back(&self.data_dir);
        }
    }
}

/// True when `dir` is the root of a filesystem of its own (its parent is on another device),
/// or `/`.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(own) = std::fs::metadata(dir) else {
        return false;
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(parent) {
        Ok(p) => p.dev() != own.dev() || p.ino() == own.ino(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> RunAs {
        RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap()
    }

    #[test]
    fn an_unfinished_restore_is_recognised_and_cleared_and_a_foreign_dir_never() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(examine(&data).unwrap(), Found::Missing);
        let target = Target::begin(&data, "restoring", &me()).unwrap();
        std::fs::create_dir(data.join("base")).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(data.join(HELD_MARKER), "{}").unwrap();
        assert_eq!(examine(&data).unwrap(), Found::Unfinished);
        // As a kill leaves it: the next restore clears it, keeping the directory.
        std::mem::forget(target);
        clear_unfinished(&data).unwrap();
        assert_eq!(examine(&data).unwrap(), Found::Empty);

        std::fs::write(data.join("notes.txt"), "mine").unwrap();
        assert_eq!(examine(&data).unwrap(), Found::Occupied);
        assert!(clear_unfinished(&data).is_err());
        assert!(data.join("notes.txt").exists());
    }

    #[test]
    fn a_commit_completes_and_a_drop_puts_the_directory_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Created by the restore: removed on failure.
        let target = Target::begin(&data, "restoring", &me()).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        drop(target);
        assert!(!data.exists());
        // An empty directory that was there: emptied, its mode back.
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        let target = Target::begin(&data, "restoring", &me()).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        drop(target);
        assert_eq!(examine(&data).unwrap(), Found::Empty);
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        // Committed: the held marker in place, the creating marker gone.
        let target = Target::begin(&data, "restoring", &me()).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(data.join(HELD_MARKER), "{}").unwrap();
        target.commit().unwrap();
        assert!(data.join(MARKER).is_file());
        assert!(!data.join(CREATING).exists());
        assert_eq!(examine(&data).unwrap(), Found::Occupied);
    }
}
