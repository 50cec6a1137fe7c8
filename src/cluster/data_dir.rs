//! What a data directory holds, and whether pgwarden may use it: the one set of checks that
//! `run` (through [`super::prepare`]) and `doctor` both call, so that doctor says FAIL for
//! exactly what run refuses.
//!
//! The markers pgwarden writes into a data directory it initialises:
//! - [`CREATING`] first, before initdb runs: "being created by pgwarden";
//! - [`MARKER`] last, when the cluster is complete (then [`CREATING`] is removed).
//!
//! A directory with the first and not the second is a half-made cluster of pgwarden's (a first
//! launch was killed or the machine went down): the next launch clears it and starts over. A
//! directory pgwarden did not mark is never cleared.

use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The completion marker pgwarden writes last into a data directory it initialised.
pub const MARKER: &str = "pgwarden.json";
/// Written before initdb runs: the directory is being created by pgwarden.
pub const CREATING: &str = "pgwarden.creating";
/// Where initdb builds the cluster inside the data directory (initdb needs an empty directory,
/// and the data directory holds [`CREATING`]); its entries are moved up when it is complete.
pub const STAGING: &str = "pgwarden.initdb";
/// A filesystem's own directory, present at the root of a freshly made ext2/3/4 filesystem
/// mounted at the data directory; it does not make the directory "not empty".
const LOST_FOUND: &str = "lost+found";

/// What the data directory holds, for a launch that may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Not there: the first launch creates it.
    Missing,
    /// An empty directory (a mount point, say): the first launch initialises it in place.
    Empty,
    /// A cluster pgwarden began and did not finish: cleared, then initialised again.
    HalfMade,
    /// A PostgreSQL cluster of the major version pgwarden runs, owned and moded as postgres
    /// needs; `ours` when pgwarden created it (its [`MARKER`] is there).
    Cluster { ours: bool },
}

impl DataDir {
    /// One line for `doctor`: what `run` will do with it.
    pub fn describe(&self) -> &'static str {
        match self {
            DataDir::Missing => "does not exist yet; `pgwarden run` creates and initialises it",
            DataDir::Empty => "empty; `pgwarden run` initialises a cluster in it",
            DataDir::HalfMade => {
                "holds a cluster pgwarden began to create and did not finish (a first launch or a \
                 restore was interrupted); `pgwarden run` clears it and initialises it again \
                 (`pgwarden restore` clears it and restores)"
            }
            DataDir::Cluster { ours: true } => "PostgreSQL 16 cluster created by pgwarden",
            DataDir::Cluster { ours: false } => {
                "PostgreSQL 16 cluster not created by pgwarden: used as it is (its users, \
                 passwords and databases are not checked)"
            }
        }
    }
}

/// Every check on the data directory, as `run` makes them before it changes anything:
/// reachable by the server's user, not a foreign non-empty directory, and, for a cluster, the
/// right major version (`major`, the binaries'), owner and mode.
pub fn examine(data_dir: &Path, run_as: &RunAs, major: u64) -> Result<DataDir> {
    run_as.check_traversable(data_dir)?;
    let found = inspect(data_dir)?;
    match &found {
        DataDir::Missing => {}
        DataDir::Empty | DataDir::HalfMade => check_owner(data_dir, run_as, true)?,
        DataDir::Cluster { .. } => {
            // Every problem at once, so that one fix-and-retry fixes them all.
            let problems: Vec<String> = [
                check_major(data_dir, major),
                check_owner(data_dir, run_as, false),
                check_mode(data_dir),
            ]
            .into_iter()
            .filter_map(|checked| checked.err().map(|e| e.to_string()))
            .collect();
            if !problems.is_empty() {
                return Err(cluster_error(problems.join("\n")));
            }
        }
    }
    Ok(found)
}

/// What the directory holds, by its markers and `PG_VERSION` (as the image checks it).
pub fn inspect(data_dir: &Path) -> Result<DataDir> {
    let meta = match std::fs::metadata(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Missing),
        Err(e) => return Err(e).io("cannot read data directory", data_dir),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(cluster_error(format!(
            "data directory {} is not a directory\nhelp: point --data-dir at a directory (missing or empty for a new cluster)",
            data_dir.display()
        )));
    }
    if data_dir.join(CREATING).exists() && !data_dir.join(MARKER).exists() {
        return Ok(DataDir::HalfMade);
    }
    if pg_version(data_dir).is_some() {
        return Ok(DataDir::Cluster {
            ours: data_dir.join(MARKER).is_file(),
        });
    }
    if contents(data_dir)?.is_empty() {
        return Ok(DataDir::Empty);
    }
    Err(cluster_error(format!(
        "data directory {} is not empty but holds no PostgreSQL cluster (no PG_VERSION); \
         pgwarden will not initialise over existing files\n\
         help: point --data-dir at an empty or missing directory, or move these files away",
        data_dir.display()
    )))
}

/// The entries of a directory that count (all but an empty `lost+found`), by name.
fn contents(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).io("cannot read data directory", dir)? {
        let entry = entry.io("cannot read data directory", dir)?;
        let name = entry.file_name();
        let empty_lost_found = name == LOST_FOUND
            && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
        if !empty_lost_found {
            names.push(name);
        }
    }
    Ok(names)
}

/// `PG_VERSION`'s contents, trimmed, when it exists and is not empty.
fn pg_version(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("PG_VERSION"))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The cluster is of the major version of the binaries that would run it (`major`).
fn check_major(data_dir: &Path, major: u64) -> Result<()> {
    match pg_version(data_dir) {
        Some(found) if found != major.to_string() => Err(cluster_error(format!(
            "data directory {} holds a PostgreSQL {found} cluster, but the binaries asked for are PostgreSQL {major}\n\
             help: `pgwarden upgrade {major}` upgrades the cluster (from 15 or 16); or ask for its own \
             version (--version {found}); or point --data-dir at another directory",
            data_dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The directory belongs to the user postgres runs as (postgres refuses any other), or is
/// about to be initialised by a pgwarden running as root, which gives it to that user.
fn check_owner(data_dir: &Path, run_as: &RunAs, new_cluster: bool) -> Result<()> {
    let meta = std::fs::metadata(data_dir).io("cannot read data directory", data_dir)?;
    if meta.uid() == run_as.uid.as_raw() || (new_cluster && run_as.switch) {
        return Ok(());
    }
    Err(cluster_error(format!(
        "data directory {} is owned by uid {}, but postgres runs as {} (uid {})\n\
         help: chown -R {}: {}",
        data_dir.display(),
        meta.uid(),
        run_as.name,
        run_as.uid,
        run_as.name,
        data_dir.display()
    )))
}

/// The cluster's mode is one postgres accepts (0700, or 0750 for group read access).
fn check_mode(data_dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(data_dir).io("cannot read data directory", data_dir)?;
    let mode = meta.mode() & 0o777;
    if mode == 0o700 || mode == 0o750 {
        return Ok(());
    }
    Err(cluster_error(format!(
        "data directory {} has mode {mode:o}; postgres requires 0700 (or 0750)\n\
         help: chmod 700 {}",
        data_dir.display(),
        data_dir.display()
    )))
}

/// Empties a half-made cluster of pgwarden's, keeping the directory itself (it may be a mount
/// point) and its [`CREATING`] marker, removed last by whoever finishes or abandons it: a
/// launch killed while clearing leaves a directory still recognised as half-made. Refuses a
/// directory pgwarden did not mark.
pub fn clear_half_made(data_dir: &Path) -> Result<()> {
    if !matches!(inspect(data_dir), Ok(DataDir::HalfMade)) {
        return Err(cluster_error(format!(
            "refusing to clear {}: pgwarden did not mark it as a cluster it was creating",
            data_dir.display()
        )));
    }
    empty_except_creating(data_dir)
}

/// A data directory as it was before a creation (first launch or restore) began in it: its
/// mode, owner and group, or `None` when it did not exist.
#[derive(Debug, Clone, Copy)]
pub struct Before(Option<(u32, u32, u32)>);

impl Before {
    pub fn of(data_dir: &Path) -> Before {
        Before(
            std::fs::metadata(data_dir)
                .ok()
                .map(|m| (m.mode() & 0o7777, m.uid(), m.gid())),
        )
    }

    pub fn existed(&self) -> bool {
        self.0.is_some()
    }

    /// Puts `data_dir` back after a creation that did not finish: removed when it did not
    /// exist, else emptied — only while it carries [`CREATING`], so that a directory pgwarden
    /// did not mark is never cleared — with its mode and owner back. Best effort (a drop path).
    pub fn put_back(&self, data_dir: &Path) {
        let Some((mode, uid, gid)) = self.0 else {
            let _ = std::fs::remove_dir_all(data_dir);
            return;
        };
        if data_dir.join(CREATING).exists() {
            let _ = empty_except_creating(data_dir);
            let _ = std::fs::remove_file(data_dir.join(CREATING));
        }
        let _ = nix::unistd::chown(
            data_dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode));
        super::flush::sync_dir(data_dir);
    }
}

/// Removes every entry of `dir` but [`CREATING`] (and an empty `lost+found`): what clearing a
/// half-made cluster (of a first launch, or of a restore) does before its marker goes.
pub fn empty_except_creating(dir: &Path) -> Result<()> {
    for name in contents(dir)? {
        if name == CREATING {
            continue;
        }
        let path = dir.join(&name);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).io("cannot clear the half-made cluster in", dir);
            }
            _ => {}
        }
    }
    Ok(())
}

fn cluster_error(what: String) -> Error {
    Error::Cluster { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap()
    }

    #[test]
    fn a_non_empty_foreign_dir_is_refused_and_never_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let err = clear_half_made(dir.path()).unwrap_err().to_string();
        assert!(err.contains("did not mark"), "{err}");
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn missing_empty_and_lost_found_only_are_new() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(inspect(empty.path()).unwrap(), DataDir::Empty);
        assert_eq!(
            inspect(&empty.path().join("missing")).unwrap(),
            DataDir::Missing
        );
        std::fs::create_dir(empty.path().join(LOST_FOUND)).unwrap();
        assert_eq!(inspect(empty.path()).unwrap(), DataDir::Empty);
        std::fs::write(empty.path().join(LOST_FOUND).join("#123"), "").unwrap();
        assert!(inspect(empty.path()).is_err());
    }

    #[test]
    fn a_creating_marker_without_the_completion_marker_is_half_made_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREATING), "pgwarden").unwrap();
        std::fs::create_dir_all(dir.path().join(STAGING).join("base")).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), DataDir::HalfMade);
        clear_half_made(dir.path()).unwrap();
        assert_eq!(contents(dir.path()).unwrap(), vec![CREATING]);
        // Completed (killed before removing the creating marker): a cluster, never cleared.
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(dir.path().join(MARKER), "{}").unwrap();
        assert_eq!(
            inspect(dir.path()).unwrap(),
            DataDir::Cluster { ours: true }
        );
        assert!(clear_half_made(dir.path()).is_err());
    }

    #[test]
    fn another_major_and_a_wrong_mode_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        let err = examine(dir.path(), &me(), 16).unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 15 cluster"), "{err}");
        assert!(err.contains("pgwarden upgrade 16"), "{err}");
        examine(dir.path(), &me(), 15).unwrap_err(); // the mode, not the major
        assert!(check_major(dir.path(), 15).is_ok());
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check_mode(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mode 755"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_mode(dir.path()).unwrap();
    }
}
