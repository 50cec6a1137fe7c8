//! `restore --force`: the cluster it replaces is kept aside, never deleted, as
//! `<data dir>.before-restore-<time>` beside the data directory.
//!
//! - An ordinary directory is renamed there: one atomic step, no space needed.
//! - A mount point cannot be renamed. Its cluster is *copied* beside the mount point (onto the
//!   parent's filesystem: the free space is checked first, and without room the restore is
//!   refused with the ways out), flushed, and only then renamed to its final name; the data
//!   directory is marked [`crate::cluster::CREATING`] before it is emptied. Why not aside
//!   *inside* the volume (renames, no space): the old cluster would then live inside the
//!   restored cluster's data directory — copied by every later backup and snapshot, and
//!   removed by the clearing of an unfinished restore or first launch (`run` empties such a
//!   directory), which is exactly the moment it is needed.
//!
//! A kill while copying leaves the old cluster where it was (and a `.….partial` copy beside
//! it); after the copy, a kill leaves it complete aside and the data directory marked
//! unfinished. When the restore fails afterwards (disk full, a damaged member), [`put_back`]
//! returns the old cluster to the data directory; when it was written but its server does not
//! start (recovery cannot reach its target), [`undo`] removes it and does the same.

use super::in_place::{self, flush_filesystem, mark_creating};
use super::snapshot::{self, RemoveOnDrop};
use crate::cluster::MARKER;
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::path::{Path, PathBuf};

/// Where the old cluster went, and how.
#[derive(Debug, Clone)]
pub struct Aside {
    pub path: PathBuf,
    pub copied: bool,
}

/// `<data dir>.before-restore-<time>` (`-2`, `-3`, … after it when taken within a second).
fn aside_path(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
    let base = format!("{name}.before-restore-{}", super::stamp(super::now_ms()));
    let mut path = data_dir.with_file_name(&base);
    let mut n = 1;
    while path.symlink_metadata().is_ok() {
        n += 1;
        path = data_dir.with_file_name(format!("{base}-{n}"));
    }
    path
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// For a mount point, whose cluster will be copied beside it: refuses unless the parent's
/// filesystem has room for it (and 64 MiB more). Called before the server is stopped.
pub fn check_room(data_dir: &Path) -> Result<()> {
    if !in_place::is_mount_point(data_dir) {
        return Ok(());
    }
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let needed = tree_bytes(data_dir);
    if let Some(free) = super::free_space(parent)
        && free < needed + (64 << 20)
    {
        return Err(Error::Backup {
            what: format!(
                "{} is a mount point: the cluster on it cannot be renamed aside, so it would be copied beside it \
                 into {}, but that has {} free and the cluster is {}; nothing was changed\n\
                 help: free space in {}, or move the old cluster off the volume yourself \
                 (`pgwarden stop`, then move the contents of {} elsewhere) and restore without --force, \
                 or restore into another directory (--data-dir DIR)",
                data_dir.display(),
                parent.display(),
                super::human_bytes(free),
                super::human_bytes(needed),
                parent.display(),
                data_dir.display()
            ),
        });
    }
    Ok(())
}

/// Moves (or, for a mount point, copies) the stopped cluster in `data_dir` aside; afterwards
/// `data_dir` is missing, or holds only the creating marker (with the `note` for the aside).
pub fn set_aside(
    data_dir: &Path,
    note: &dyn Fn(&Aside) -> String,
    run_as: &RunAs,
) -> Result<Aside> {
    let path = aside_path(data_dir);
    if !in_place::is_mount_point(data_dir) {
        match std::fs::rename(data_dir, &path) {
            Ok(()) => {
                super::sync_dir(data_dir.parent().unwrap_or(Path::new("/")));
                return Ok(Aside {
                    path,
                    copied: false,
                });
            }
            // A bind mount, say: copied like a mount point.
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EBUSY | nix::libc::EXDEV)) => {}
            Err(e) => return Err(e).io("cannot move the old cluster aside to", &path),
        }
    }
    check_room(data_dir)?;
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let partial = parent.join(format!(
        ".{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    let guard = RemoveOnDrop(Some(partial.clone()));
    snapshot::copy_tree(data_dir, &partial)?;
    flush_filesystem(&partial)?;
    std::fs::rename(&partial, &path).io("cannot rename the old cluster's copy to", &path)?;
    guard.disarm();
    super::sync_dir(parent);
    // Marked before it is emptied: a kill from here leaves an unfinished directory (the old
    // cluster whole aside), never a cluster with files missing.
    let aside = Aside { path, copied: true };
    mark_creating(data_dir, &note(&aside), run_as)?;
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).io("cannot remove", &marker)?;
        super::sync_dir(data_dir);
    }
    in_place::empty_except_creating(data_dir)?;
    Ok(aside)
}

/// Returns the old cluster to `data_dir` after a failed restore (which left `data_dir`
/// missing, or empty). A copy is copied back in place, marked while it is, and then removed.
pub fn put_back(aside: &Aside, data_dir: &Path, run_as: &RunAs) -> Result<()> {
    if !aside.copied {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).io("cannot remove", data_dir)?;
        }
        std::fs::rename(&aside.path, data_dir)
            .io("cannot move the old cluster back to", data_dir)?;
        super::sync_dir(data_dir.parent().unwrap_or(Path::new("/")));
        return Ok(());
    }
    mark_creating(
        data_dir,
        "pgwarden is putting the cluster it had set aside back here.\n",
        run_as,
    )?;
    snapshot::copy_into(&aside.path, data_dir, &[MARKER, crate::cluster::CREATING])?;
    flush_filesystem(data_dir)?;
    let marker = aside.path.join(MARKER);
    if marker.exists() {
        snapshot::copy_one(&marker, &data_dir.join(MARKER))?;
        flush_filesystem(data_dir)?;
    }
    let creating = data_dir.join(crate::cluster::CREATING);
    std::fs::remove_file(&creating).io("cannot remove", &creating)?;
    super::sync_dir(data_dir);
    std::fs::remove_dir_all(&aside.path).io("cannot remove the copy", &aside.path)
}

/// Undoes a restore that was written but whose server did not start (recovery could not reach
/// its target, say): the restored cluster in `data_dir` and its tablespace directories
/// (`restored_tablespaces`) are removed and the old cluster is put back ([`put_back`]). The
/// server of `data_dir` must be stopped and its instance lock held.
///
/// The data directory is marked [`crate::cluster::CREATING`] (and its completion marker
/// removed) before it is emptied: killed from there on, it is an unfinished directory that
/// `run` and `restore` clear, and the old cluster is whole aside.
pub fn undo(
    aside: &Aside,
    data_dir: &Path,
    restored_tablespaces: &[PathBuf],
    run_as: &RunAs,
) -> Result<()> {
    mark_creating(
        data_dir,
        &format!(
            "pgwarden is undoing a restore whose server did not start.\n\
             The cluster that was here is kept in {}.\n",
            aside.path.display()
        ),
        run_as,
    )?;
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).io("cannot remove", &marker)?;
        super::sync_dir(data_dir);
    }
    for dir in restored_tablespaces {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).io("cannot remove the restored tablespace", dir);
            }
            _ => {}
        }
    }
    in_place::empty_except_creating(data_dir)?;
    if !aside.copied {
        // Renamed back over the emptied directory; the copy's way re-marks it itself.
        let creating = data_dir.join(crate::cluster::CREATING);
        std::fs::remove_file(&creating).io("cannot remove", &creating)?;
    }
    put_back(aside, data_dir, run_as)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_directory_is_renamed_aside_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        let me = RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap();
        let aside = set_aside(&data, &|_| "n".into(), &me).unwrap();
        assert!(!aside.copied);
        assert!(!data.exists());
        assert!(aside.path.join("PG_VERSION").is_file());
        assert!(
            aside
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data.before-restore-")
        );
        std::fs::create_dir(&data).unwrap();
        put_back(&aside, &data, &me).unwrap();
        assert!(data.join("PG_VERSION").is_file());
        assert!(!aside.path.exists());
    }

    #[test]
    fn a_restore_whose_server_did_not_start_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(data.join("old-row"), "kept").unwrap();
        let me = RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap();
        let aside = set_aside(&data, &|_| "n".into(), &me).unwrap();
        // The restore, complete, with a tablespace of its own elsewhere.
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::write(data.join(MARKER), "{}").unwrap();
        std::fs::write(data.join("restored"), "new").unwrap();
        let ts = dir.path().join("ts/PG_16_202307071");
        std::fs::create_dir_all(&ts).unwrap();
        undo(&aside, &data, std::slice::from_ref(&ts), &me).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("old-row")).unwrap(),
            "kept"
        );
        assert!(!data.join("restored").exists());
        assert!(!data.join(crate::cluster::CREATING).exists());
        assert!(!aside.path.exists());
        assert!(!ts.exists());
        assert!(dir.path().join("ts").exists(), "the location itself stays");
    }
}
