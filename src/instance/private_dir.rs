//! Directories only pgwarden's own user may write to: the state directory beside a data
//! directory, a throwaway (`--ephemeral`) cluster's root in `/dev/shm`, the registry.
//!
//! These live in places other local users can write to as well (`/dev/shm` and `/tmp` are
//! world-writable), so a directory that already exists may be a trap: someone else's directory
//! with symlinks planted in it (`lock -> /root/f1`), or a symlink to another directory. Each is
//! created with an exclusive `mkdir` (mode 0700, or 0711 when pgwarden is root and the server's
//! own user must pass through to its socket or data directory); one that already exists is used
//! only when it is a real directory (not a symlink) owned by the effective user that no one else
//! can write to — and its mode is then tightened to the wanted one. Anything else is refused with
//! an error naming the directory and its owner.
//!
//! A throwaway root also holds a marker file, written when pgwarden creates it; a root without
//! the marker is not swept (not ours to delete), and sweeping never follows a symlink.

use crate::config::Config;
/// `name (uid N)` of an owner (one spelling for every refusal).
pub use crate::config::trust::owner_name;
use crate::error::{Error, IoContext, Result};
use crate::os::paths;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The marker a throwaway root holds when pgwarden made it.
pub const THROWAWAY_MARKER: &str = ".pgwarden-throwaway";

/// The mode of a private directory: 0700, or 0711 when pgwarden is root (its children run as
/// another user, who must traverse it).
pub fn private_mode() -> u32 {
    if nix::unistd::geteuid().is_root() {
        0o711
    } else {
        0o700
    }
}

/// What [`ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// The directory was created now.
    Created,
    /// It existed, and is ours.
    Existed,
}

/// Creates `dir` (mode `mode`) with an exclusive mkdir, or accepts an existing one only if it is
/// a directory, not a symlink, owned by the effective user and not writable by anyone else.
/// Its parent must exist.
pub fn ensure(dir: &Path, mode: u32) -> Result<Made> {
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away; set exactly what was asked.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .io("cannot set the mode of", dir)?;
            return Ok(Made::Created);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(cannot_create(dir, dir.parent().unwrap_or(dir)));
        }
        Err(e) => return Err(e).io("cannot create directory", dir),
    }
    let meta = std::fs::symlink_metadata(dir).io("cannot read", dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |what: String| Error::Privilege {
        what: format!(
            "{} {what}, owned by {}; pgwarden does not use a directory someone else could have \
             prepared\nhelp: remove it (after checking what it holds), or choose another \
             --name / --data-dir",
            dir.display(),
            owner_name(meta.uid())
        ),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".to_string());
        return Err(refuse(format!("is a symlink (to {target})")));
    }
    if !meta.is_dir() {
        return Err(refuse("exists and is not a directory".to_string()));
    }
    if meta.uid() != me {
        return Err(refuse("already exists".to_string()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "is writable by other users (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    if meta.mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .io("cannot set the mode of", dir)?;
    }
    Ok(Made::Existed)
}

/// Makes the state directory `config` uses private (and, for a throwaway cluster, its root
/// first, with the marker). The data directory's parent is created as before when missing (it
/// is the user's choice of place).
pub fn prepare_state_dir(config: &Config) -> Result<()> {
    check_state_dir_creatable(config)?;
    let mode = private_mode();
    if config.ephemeral {
        let root = paths::ephemeral_root(&config.name);
        match ensure(&root, mode)? {
            Made::Created => write_marker(&root)?,
            Made::Existed => check_marker(&root)?,
        }
    } else if let Some(parent) = config.data_dir.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
    }
    ensure(&paths::state_dir(&config.data_dir), mode)?;
    Ok(())
}

/// The check `run` makes before it creates anything beside a persistent data directory, and
/// `doctor` makes in its place (so that doctor fails whatever run would refuse): the state
/// directory (`<data dir>.pgwarden`) exists, or the nearest of its ancestors that exists is
/// writable and searchable by this user, who must create it and the missing directories above.
/// An existing state directory's owner and mode are checked by [`ensure`] when it is used.
pub fn check_state_dir_creatable(config: &Config) -> Result<()> {
    if config.ephemeral {
        return Ok(());
    }
    let state_dir = paths::state_dir(&config.data_dir);
    if std::fs::symlink_metadata(&state_dir).is_ok() {
        return Ok(());
    }
    let Some(nearest) = state_dir
        .ancestors()
        .skip(1)
        .find(|p| std::fs::symlink_metadata(p).is_ok())
    else {
        return Ok(());
    };
    use nix::unistd::AccessFlags;
    match nix::unistd::access(nearest, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => Ok(()),
        Err(_) => Err(cannot_create(&state_dir, nearest)),
    }
}

/// `dir` cannot be made because `writable_needed` is not writable by this user.
fn cannot_create(dir: &Path, writable_needed: &Path) -> Error {
    let me = nix::unistd::geteuid().as_raw();
    Error::Privilege {
        what: format!(
            "cannot create {}: {} is not writable by {} (permission denied)\n\
             help: pgwarden keeps its lock, status and log beside the data directory, so it must \
             be able to write to {}; choose a --data-dir in a directory you can write to, or run \
             pgwarden as a user who can",
            dir.display(),
            writable_needed.display(),
            owner_name(me),
            writable_needed.display()
        ),
    }
}

/// Creates a new throwaway root (exclusive mkdir, mode [`private_mode`]) holding our marker,
/// so that [`remove_throwaway`] (and a later sweep) may remove it; one that exists is refused.
pub fn create_throwaway(root: &Path) -> Result<()> {
    match ensure(root, private_mode())? {
        Made::Created => write_marker(root),
        Made::Existed => Err(Error::Privilege {
            what: format!(
                "{} exists already; pgwarden makes a new one for each throwaway server\n\
                 help: remove it (after checking what it holds)",
                root.display()
            ),
        }),
    }
}

fn write_marker(root: &Path) -> Result<()> {
    let path = root.join(THROWAWAY_MARKER);
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .io("cannot create", &path)?;
    use std::io::Write;
    writeln!(&file, "{}", std::process::id()).io("cannot write", &path)?;
    Ok(())
}

/// A throwaway root that exists must hold our marker (a regular file of ours, not a symlink).
fn check_marker(root: &Path) -> Result<()> {
    let path = root.join(THROWAWAY_MARKER);
    let ours = std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == nix::unistd::geteuid().as_raw());
    if ours {
        return Ok(());
    }
    Err(Error::Privilege {
        what: format!(
            "{} exists but was not made by pgwarden (it has no {THROWAWAY_MARKER}); pgwarden \
             neither uses nor removes it\nhelp: remove it yourself, or choose another --name",
            root.display()
        ),
    })
}

/// True for a throwaway root of ours: a real directory (not a symlink) owned by the effective
/// user, holding our marker. Anything else under a throwaway's name may be another user's trap.
pub fn is_own_throwaway(root: &Path) -> bool {
    std::fs::symlink_metadata(root)
        .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw())
        && check_marker(root).is_ok()
}

/// Removes a throwaway root: only a real directory (not a symlink) of ours that holds our
/// marker; symlinks inside are removed, never followed. The shared memory segment a killed
/// server of its cluster (`data/`) left goes with it ([`crate::postmaster::leftover_shmem`]).
pub fn remove_throwaway(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::other(format!(
            "not removed: {} is not a directory of ours",
            root.display()
        )));
    }
    if check_marker(root).is_err() {
        return Err(std::io::Error::other(format!(
            "not removed: {} has no {THROWAWAY_MARKER}",
            root.display()
        )));
    }
    // A server killed with its children left its System V segment: freed with its cluster.
    crate::postmaster::leftover_shmem::release(&root.join("data"));
    // std's remove_dir_all does not follow symlinks (it removes the links themselves).
    std::fs::remove_dir_all(root)
}

/// What a discarded throwaway root's name gets after its own: `<root>.removed-<pid>-<nanos>`.
pub const DISCARDED: &str = ".removed-";

/// Moves the throwaway root `root` out of its name (one rename, with the checks of
/// [`remove_throwaway`]), for its removal later and elsewhere ([`crate::instance::abandoned`]);
/// where it now is. The name is free at once: a launch of the same name makes a new root.
pub fn discard_throwaway(root: &Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::symlink_metadata(root)?;
    if !is_own_throwaway(root) {
        return Err(std::io::Error::other(format!(
            "not moved: {} is not a throwaway root of ours",
            root.display()
        )));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut name = root.as_os_str().to_owned();
    name.push(format!("{DISCARDED}{}-{nanos}", std::process::id()));
    let discarded = std::path::PathBuf::from(name);
    // rename(2) replaces no directory that holds anything and nothing another user owns in
    // the sticky /dev/shm; it fails instead, and the caller removes the root where it is.
    std::fs::rename(root, &discarded)?;
    Ok(discarded)
}

/// Opens (creating, mode 0600) a file in a private directory for appending, without following
/// a symlink; an existing file gets mode 0600 too.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let file = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Makes `dir`, where pgwarden (often root) writes what only the cluster's owner may read
/// (`backup_dir`, `<data dir>.backups`, `<data dir>.snapshots`), or accepts it when it exists.
/// A missing one is made 0700 (the missing directories above it as before: the user's choice of
/// place). An existing one must be a real directory (not a symlink) owned by the effective user,
/// root or `server_uid` (the server's user), writable by no one else — the rule of
/// [`foreign_or_writable`]: where its parent is shared (a sticky `/tmp`-like or group-writable
/// one), another user could have made it first, to read what is put there or swap its names.
/// Otherwise refused (exit 2), naming it, its owner and the way out; nothing is written.
pub fn ensure_output_dir(
    dir: &Path,
    server_uid: Option<u32>,
    what: &'static str,
    elsewhere: &str,
) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
            }
            return match ensure(dir, 0o700) {
                Ok(_) => Ok(()),
                // Made by someone else between the look and the mkdir: judged as found.
                Err(_) if std::fs::symlink_metadata(dir).is_ok() => {
                    ensure_output_dir(dir, server_uid, what, elsewhere)
                }
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e).io("cannot read", dir),
    };
    judge_output_dir(dir, &meta, server_uid, what, elsewhere)
}

/// The rule of [`ensure_output_dir`] for a directory pgwarden reads back what it wrote there
/// (a snapshot to restore): one that exists must pass it; a missing one is not made.
pub fn check_output_dir(
    dir: &Path,
    server_uid: Option<u32>,
    what: &'static str,
    elsewhere: &str,
) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => judge_output_dir(dir, &meta, server_uid, what, elsewhere),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).io("cannot read", dir),
    }
}

fn judge_output_dir(
    dir: &Path,
    meta: &std::fs::Metadata,
    server_uid: Option<u32>,
    what: &'static str,
    elsewhere: &str,
) -> Result<()> {
    let problem = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".to_string());
        Some(format!(
            "is a symlink (to {target}), owned by {}",
            owner_name(meta.uid())
        ))
    } else if !meta.is_dir() {
        Some(format!(
            "is not a directory, owned by {}",
            owner_name(meta.uid())
        ))
    } else {
        foreign_or_writable_but(meta, true, server_uid)
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::UntrustedOutputDir {
            what,
            dir: dir.to_path_buf(),
            problem,
            help: format!(
                "check what it holds, then remove it (pgwarden makes it anew, mode 0700) or make \
                 it yours and private (chown, chmod 700); or {elsewhere}"
            ),
        }),
    }
}

/// Checks that no other user can replace what pgwarden keeps in `dir` (the binaries cache):
/// `dir` (or, while it does not exist yet, the directory it will be made in) and every
/// directory above it are owned by the effective user or root, and none is writable by
/// others — except a sticky one above (like `/tmp`), where others cannot rename what is ours.
pub fn check_trusted(dir: &Path, what: &'static str) -> Result<()> {
    match untrusted_ancestor(dir)? {
        None => Ok(()),
        Some((at, problem)) => Err(Error::UntrustedPrograms {
            what,
            dir: dir.to_path_buf(),
            at,
            problem,
            help: "use a directory only you (or root) can write to".to_string(),
        }),
    }
}

/// The first of `path` (or, while it does not exist yet, the directory it will be made in)
/// and the directories above it, symlinks resolved, that another user could write to, and
/// why; `None` when there is none. Writable means: owned by someone other than the effective
/// user or root, or writable by group or others — a sticky directory above (like `/tmp`)
/// excepted, since others cannot rename or remove what is not theirs in it.
pub fn untrusted_ancestor(path: &Path) -> Result<Option<(std::path::PathBuf, String)>> {
    let Some(existing) = path.ancestors().find(|a| a.exists()) else {
        return Ok(None);
    };
    let canonical = existing.canonicalize().io("cannot resolve", existing)?;
    for (depth, at) in canonical.ancestors().enumerate() {
        let meta = std::fs::metadata(at).io("cannot read", at)?;
        let sticky = meta.mode() & 0o1000 != 0;
        if let Some(problem) = foreign_or_writable(&meta, depth == 0 || !sticky) {
            return Ok(Some((at.to_path_buf(), problem)));
        }
    }
    Ok(None)
}

/// Why another user could change what `meta` describes: its owner is neither the effective user
/// nor root, or (when `check_mode`) group or others may write to it.
pub fn foreign_or_writable(meta: &std::fs::Metadata, check_mode: bool) -> Option<String> {
    foreign_or_writable_but(meta, check_mode, None)
}

/// [`foreign_or_writable`], with one more owner accepted (`also`: the server's user).
fn foreign_or_writable_but(
    meta: &std::fs::Metadata,
    check_mode: bool,
    also: Option<u32>,
) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 && Some(meta.uid()) != also {
        Some(format!("is owned by {}", owner_name(meta.uid())))
    } else if check_mode && meta.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by other users (mode {:o}, owner {})",
            meta.mode() & 0o7777,
            owner_name(meta.uid())
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_dir_gets_the_mode_and_an_existing_one_of_ours_is_tightened() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("state");
        assert_eq!(ensure(&dir, 0o700).unwrap(), Made::Created);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure(&dir, 0o700).unwrap(), Made::Existed);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn symlinks_and_dirs_others_can_write_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = ensure(&link, 0o700).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(err.contains("owned by"), "{err}");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure(&elsewhere, 0o700).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
    }

    #[test]
    fn only_a_marked_throwaway_root_is_removed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("data"), b"x").unwrap();
        assert!(remove_throwaway(&root).is_err());
        assert!(root.join("data").exists());
        write_marker(&root).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert!(remove_throwaway(&link).is_err());
        assert!(root.join("data").exists());
        remove_throwaway(&root).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn a_cache_others_can_write_to_is_not_trusted() {
        let base = tempfile::tempdir().unwrap();
        let cache = base.path().join("cache");
        check_trusted(&cache, "install_dir").unwrap();
        std::fs::create_dir(&cache).unwrap();
        check_trusted(&cache, "install_dir").unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_trusted(&cache.join("16.14.0"), "install_dir")
            .unwrap_err()
            .to_string();
        assert!(err.contains("writable by other users"), "{err}");
    }

    #[test]
    fn appended_files_are_private_and_symlinks_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = base.path().join("log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_append(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let file = base.path().join("real.log");
        open_append(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    }
}
