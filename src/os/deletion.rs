//! Deleting a cluster without waiting for it: the directory is renamed aside (one rename in
//! its parent, hidden, named after the data directory) and deleted by a low-priority `rm` in a
//! session of its own, so that the command returns at once and the next start does not wait:
//! deleting a cluster's ~1000 files took 3 s here (ext4 with online discard), five times what a
//! fresh start from the template takes. Used by `reset` (the whole cluster) and by `snapshot
//! restore` (the cluster the snapshot replaced). A directory that cannot be renamed (a mount
//! point) is emptied in the foreground, as is everything when `rm` cannot be started; a later
//! deletion for the same data directory sweeps what an interrupted `rm` left.

use crate::error::{IoContext, Result};
use std::path::Path;

/// The name a cluster being deleted has: hidden, beside the data directory, so that a rename
/// (same filesystem) moves it aside.
fn aside_name(data_dir: &Path, n: u32) -> Option<std::path::PathBuf> {
    let name = data_dir.file_name()?.to_string_lossy();
    Some(data_dir.with_file_name(format!(
        ".{name}.pgwarden-deleting-{}-{n}",
        std::process::id()
    )))
}

/// Moves the cluster `data_dir` aside and deletes it in the background (also what an earlier, interrupted
/// background deletion of this data directory left); deletes in place when it cannot be moved.
pub fn delete_cluster(data_dir: &Path) -> Result<()> {
    delete_beside(data_dir, data_dir)
}

/// Deletes the directory `dir` (a cluster that `data_dir`'s was replaced by, or `data_dir`
/// itself) as [`delete_cluster`] does: renamed aside under `data_dir`'s name, so that a later
/// deletion of `data_dir` sweeps what an interrupted one left.
pub fn delete_beside(dir: &Path, data_dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).io("cannot read", dir)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return remove(dir);
    }
    let aside = (0..100)
        .filter_map(|n| aside_name(data_dir, n))
        .find(|p| std::fs::symlink_metadata(p).is_err());
    let Some(aside) = aside.filter(|a| std::fs::rename(dir, a).is_ok()) else {
        return remove(dir);
    };
    let mut doomed = vec![aside.clone()];
    doomed.extend(leftovers(data_dir).into_iter().filter(|p| *p != aside));
    let mut rm = std::process::Command::new("rm");
    rm.args(["-rf", "--one-file-system", "--"])
        .args(&doomed)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // A session of its own: a terminal's Ctrl-C or hang-up after reset returned leaves it alone.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut rm, || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    crate::os::background::lower_command(&mut rm);
    if rm.spawn().is_err() {
        for path in doomed {
            remove(&path)?;
        }
    }
    Ok(())
}

/// Clusters an earlier deletion of `data_dir` moved aside and did not finish deleting.
fn leftovers(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) else {
        return Vec::new();
    };
    let prefix = format!(".{}.pgwarden-deleting-", name.to_string_lossy());
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes `path` now: a directory and all in it, or a file or symlink (never what a symlink
/// points to).
pub fn remove(path: &Path) -> Result<()> {
    // Not through a symlink someone put in its place: remove the link, not what it points to.
    let meta = std::fs::symlink_metadata(path).io("cannot read", path)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return std::fs::remove_file(path).io("cannot remove", path);
    }
    std::fs::remove_dir_all(path).io("cannot remove", path)
}
