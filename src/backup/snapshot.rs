//! Dev snapshots: the whole data directory of a stopped cluster, copied aside by name, and
//! swapped back in one rename. A cluster with tablespaces is refused
//! ([`refuse_tablespaces`]).
//!
//! `<data dir>.snapshots/NAME/` holds `data/` (the copy) and `snapshot.json` (when, how big,
//! which PostgreSQL major). A snapshot is written as `.NAME.partial-<pid>` and renamed when
//! complete, so a killed save leaves no snapshot under its name. Files are cloned
//! (`FICLONE`: btrfs, XFS, bcachefs share the blocks, copy-on-write) where the filesystem
//! can, else copied (`copy_file_range`), keeping owner and mode.
//!
//! Restoring copies the snapshot into a staging sibling of the data directory (while the
//! server still runs: the snapshot is never modified), then exchanges the two directories
//! with one `renameat2(RENAME_EXCHANGE)` — at every moment the data path names a whole
//! cluster, the old one or the snapshot's — and deletes the old one in the background. The
//! staging directory has one name per data directory ([`staging_path`]), owned by whoever
//! holds [`StagingLock`]; a restore killed while copying leaves it, and the next snapshot
//! command removes it. A spare copy of the snapshot made in the background
//! ([`super::snapshot_spare`]) is renamed into the staging directory instead of copying.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const META: &str = "snapshot.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    pub created_ms: u64,
    pub postgresql_major: String,
    pub bytes: u64,
    pub files: u64,
}

/// `<data dir>.snapshots`.
pub fn snapshots_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".snapshots");
    data_dir.with_file_name(name)
}

/// Makes `<data dir>.snapshots` (0700), or accepts it only when it is a real directory of this
/// user, root or the cluster's owner that no one else can write to: another user could have
/// made it first beside a data directory in a shared place, to read the copies put there or
/// swap their names (refused, exit 2, naming it and its owner).
pub fn ensure_dir(data_dir: &Path) -> Result<()> {
    crate::instance::private_dir::ensure_output_dir(
        &snapshots_dir(data_dir),
        std::fs::metadata(data_dir).ok().map(|m| m.uid()),
        "the snapshot directory",
        SNAPSHOT_DIR_ELSEWHERE,
    )
}

/// The way out named when the snapshot directory is refused.
const SNAPSHOT_DIR_ELSEWHERE: &str =
    "use `pgwarden backup FILE` into a directory only you (or root) can write to";

/// The same rule for a snapshot read back: one in a snapshot directory another user made or
/// can write to may be theirs, and restoring it would make their files the cluster (its
/// settings, its access rules).
fn check_dir(data_dir: &Path) -> Result<()> {
    crate::instance::private_dir::check_output_dir(
        &snapshots_dir(data_dir),
        std::fs::metadata(data_dir).ok().map(|m| m.uid()),
        "the snapshot directory",
        SNAPSHOT_DIR_ELSEWHERE,
    )
}

/// Names: a letter or digit, then letters, digits, `.`, `_`, `-`; at most 64.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            problems: vec![format!(
                "snapshot name {name:?} is not allowed: use letters, digits, '.', '_' and '-' \
                 (starting with a letter or digit, at most 64)"
            )],
        })
    }
}

/// Files the server writes at start and removes at stop: never copied.
const SKIP: [&str; 2] = ["postmaster.pid", "postmaster.opts"];

/// Totals of a copy.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copied {
    pub bytes: u64,
    pub files: u64,
    pub cloned: u64,
}

/// Copies the tree `from` into the new directory `to` (which must not exist), cloning files
/// where the filesystem allows it, keeping owners and modes. Symlinks are copied as symlinks.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Copied> {
    let mut copied = Copied::default();
    copy_dir(from, to, true, &mut copied)?;
    Ok(copied)
}

/// Copies the entries of `from` into the existing directory `to` (as [`copy_tree`] does), but
/// those named in `skip`. The directory `to` itself keeps its mode and owner.
pub fn copy_into(from: &Path, to: &Path, skip: &[&str]) -> Result<Copied> {
    let mut copied = Copied::default();
    copy_entries(from, to, true, skip, &mut copied)?;
    Ok(copied)
}

/// Copies one regular file, keeping its mode and owner (cloned where the filesystem can).
pub fn copy_one(src: &Path, dst: &Path) -> Result<()> {
    copy_file(src, dst, &mut Copied::default())
}

fn copy_dir(from: &Path, to: &Path, top: bool, copied: &mut Copied) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).io("cannot read", from)?;
    std::fs::create_dir(to).io("cannot create directory", to)?;
    copy_entries(from, to, top, &[], copied)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .io("cannot set the mode of", to)?;
    keep_owner(from, to)
}

fn copy_entries(
    from: &Path,
    to: &Path,
    top: bool,
    skip: &[&str],
    copied: &mut Copied,
) -> Result<()> {
    for entry in std::fs::read_dir(from).io("cannot read directory", from)? {
        let entry = entry.io("cannot read directory", from)?;
        let name = entry.file_name();
        if top && SKIP.iter().chain(skip).any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let ft = entry.file_type().io("cannot read", &src)?;
        if ft.is_dir() {
            copy_dir(&src, &dst, false, copied)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).io("cannot read", &src)?;
            std::os::unix::fs::symlink(&target, &dst).io("cannot create", &dst)?;
            keep_owner(&src, &dst)?;
        } else if ft.is_file() {
            copy_file(&src, &dst, copied)?;
        }
    }
    Ok(())
}

/// `ioctl(FICLONE)`: `_IOW(0x94, 9, int)`.
const FICLONE: nix::libc::c_ulong = 0x4004_9409;

fn copy_file(src: &Path, dst: &Path, copied: &mut Copied) -> Result<()> {
    let input = std::fs::File::open(src).io("cannot read", src)?;
    let meta = input.metadata().io("cannot read", src)?;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .io("cannot create", dst)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE reads an int.
    let cloned = unsafe { nix::libc::ioctl(output.as_raw_fd(), FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        copied.cloned += 1;
    } else {
        let (mut input, mut output) = (input, output);
        std::io::copy(&mut input, &mut output).io("cannot copy to", dst)?;
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .io("cannot set the mode of", dst)?;
    keep_owner(src, dst)?;
    copied.bytes += meta.len();
    copied.files += 1;
    Ok(())
}

fn keep_owner(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).io("cannot read", src)?;
    let mine = std::fs::symlink_metadata(dst).io("cannot read", dst)?;
    if (meta.uid(), meta.gid()) != (mine.uid(), mine.gid()) {
        std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
            .io("cannot set the owner of", dst)?;
    }
    Ok(())
}

/// Exchanges two directories atomically (`renameat2(RENAME_EXCHANGE)`).
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|source| Error::Exchange {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        source,
    })
}

/// Refuses a cluster with tablespaces: a snapshot is a copy of the data directory, and its
/// `pg_tblspc` links would point at the live tablespaces' files, which change after the
/// snapshot — restoring it would pair old catalogs with new table files. (Copying each
/// tablespace beside the snapshot, and back, is possible; for the dev use snapshots are for,
/// tablespaces are rare, and a backup/restore does carry them.)
pub fn refuse_tablespaces(data_dir: &Path) -> Result<()> {
    let live = super::tablespaces::list_live(data_dir)?;
    if live.is_empty() {
        return Ok(());
    }
    Err(Error::Backup {
        what: format!(
            "this cluster has tablespaces ({}); a snapshot copies only the data directory, so it would not \
             restore them\nhelp: use `pgwarden backup FILE` and `pgwarden restore FILE --force` instead (they \
             carry tablespaces), or move the tables back (ALTER TABLE … SET TABLESPACE pg_default) and drop \
             the tablespaces",
            live.iter()
                .map(|l| format!("{} at {}", l.oid, l.location.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Saves a copy of the stopped cluster `data_dir` as snapshot `name`.
pub fn save(data_dir: &Path, name: &str) -> Result<SnapshotMeta> {
    refuse_tablespaces(data_dir)?;
    let dir = snapshots_dir(data_dir);
    let target = dir.join(name);
    if target.exists() {
        return Err(Error::Backup {
            what: format!(
                "snapshot {name:?} exists already ({})\nhelp: remove it first (`pgwarden snapshot rm {name}`) or pick another name",
                target.display()
            ),
        });
    }
    let major = std::fs::read_to_string(data_dir.join("PG_VERSION"))
        .map_err(|e| Error::Backup {
            what: format!(
                "{} holds no cluster to snapshot (PG_VERSION: {e})",
                data_dir.display()
            ),
        })?
        .trim()
        .to_string();
    ensure_dir(data_dir)?;
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let guard = RemoveOnDrop(Some(partial.clone()));
    std::fs::create_dir(&partial).io("cannot create directory", &partial)?;
    let copied = copy_tree(data_dir, &partial.join("data"))?;
    let meta = SnapshotMeta {
        name: name.to_string(),
        created_ms: super::now_ms(),
        postgresql_major: major,
        bytes: copied.bytes,
        files: copied.files,
    };
    let meta_path = partial.join(META);
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&meta).expect("serialisable"),
    )
    .io("cannot write", &meta_path)?;
    std::fs::rename(&partial, &target).io("cannot rename the snapshot into", &target)?;
    guard.disarm();
    super::sync_dir(&dir);
    Ok(meta)
}

/// Reads snapshot `name` of `data_dir`.
pub fn find(data_dir: &Path, name: &str) -> Result<(PathBuf, SnapshotMeta)> {
    check_dir(data_dir)?;
    let path = snapshots_dir(data_dir).join(name);
    let text = std::fs::read_to_string(path.join(META)).map_err(|_| Error::Backup {
        what: format!(
            "no snapshot {name:?} of {} (in {})\nhelp: `pgwarden snapshot ls` lists them",
            data_dir.display(),
            snapshots_dir(data_dir).display()
        ),
    })?;
    let meta: SnapshotMeta = serde_json::from_str(&text).map_err(|e| Error::Backup {
        what: format!("{} is unreadable: {e}", path.join(META).display()),
    })?;
    Ok((path, meta))
}

/// Every snapshot of `data_dir`, oldest first.
pub fn list(data_dir: &Path) -> Vec<SnapshotMeta> {
    let mut out: Vec<SnapshotMeta> = std::fs::read_dir(snapshots_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name.starts_with('.') {
                return None;
            }
            find(data_dir, &name).ok().map(|(_, m)| m)
        })
        .collect();
    out.sort_by_key(|m| (m.created_ms, m.name.clone()));
    out
}

/// `<state dir>/snapshot-staging.lock`: flocked by the snapshot command that owns the staging
/// directory ([`staging_path`]) for as long as it runs.
pub const STAGING_LOCK: &str = "snapshot-staging.lock";

/// `.<data dir name>.snapshot-staging` beside the data directory: one name per data directory,
/// not per process, so that whatever a killed restore left there is found and removed by the
/// next snapshot command ([`StagingLock::acquire`]).
pub fn staging_path(data_dir: &Path) -> PathBuf {
    let base = data_dir.file_name().unwrap_or_default().to_string_lossy();
    data_dir.with_file_name(format!(".{base}.snapshot-staging"))
}

/// The right to use [`staging_path`]: an exclusive flock on [`STAGING_LOCK`] in the instance's
/// state directory, held by one snapshot command at a time. Not the instance lock: the staging
/// copy is made while the supervisor, which holds that one, still runs.
#[derive(Debug)]
pub struct StagingLock {
    _file: std::fs::File,
    pub staging: PathBuf,
}

impl StagingLock {
    /// Takes the lock without waiting (refusing, with the holder's pid, while another snapshot
    /// command holds it), then removes what an earlier, killed snapshot restore left: the
    /// staging directory, and the `.<name>.snapshot-<pid>` ones of older pgwardens whose
    /// process is gone.
    pub fn acquire(state_dir: &Path, data_dir: &Path) -> Result<StagingLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        crate::instance::private_dir::ensure(
            state_dir,
            crate::instance::private_dir::private_mode(),
        )?;
        let path = state_dir.join(STAGING_LOCK);
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .io("cannot open lock file", &path)?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::Backup {
                what: format!(
                    "another snapshot command (pid {}) is working on {}; nothing was changed
                     help: wait for it to finish, then try again",
                    Some(pid.trim())
                        .filter(|p| !p.is_empty())
                        .unwrap_or("unknown"),
                    data_dir.display()
                ),
            });
        }
        file.set_len(0).io("cannot write lock file", &path)?;
        file.rewind().io("cannot write lock file", &path)?;
        writeln!(file, "{}", std::process::id()).io("cannot write lock file", &path)?;
        let staging = staging_path(data_dir);
        for leftover in std::iter::once(staging.clone()).chain(legacy_staging(data_dir)) {
            match std::fs::remove_dir_all(&leftover) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).io(
                        "cannot remove what a killed snapshot restore left in",
                        &leftover,
                    );
                }
                _ => {}
            }
        }
        Ok(StagingLock {
            _file: file,
            staging,
        })
    }
}

/// Copies whose writer is gone: `.<name>.snapshot-<pid>` beside the data directory (restores
/// of pgwardens before the staging directory had one name) and `.<snapshot>.partial-<pid>` in
/// the snapshots directory (a killed save), whose pid no longer runs.
fn legacy_staging(data_dir: &Path) -> Vec<PathBuf> {
    let base = data_dir.file_name().unwrap_or_default().to_string_lossy();
    let mut out = dead_pid_dirs(
        data_dir.parent().unwrap_or(Path::new("/")),
        &format!(".{base}.snapshot-"),
    );
    out.extend(
        dead_pid_dirs(&snapshots_dir(data_dir), ".")
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(".partial-"))
            }),
    );
    out
}

/// The directories in `parent` named `<prefix>…<pid>` (the pid after the last `-`) whose pid
/// no longer runs.
fn dead_pid_dirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let pid = name.strip_prefix(prefix)?.rsplit('-').next()?;
            let gone = !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists();
            let dir = e.file_type().ok()?.is_dir();
            (gone && dir).then(|| e.path())
        })
        .collect()
}

/// Copies snapshot `name` into the staging directory `lock` owns, ready for [`swap_in`];
/// refuses a snapshot of another major version. `use_spare` is the `spare` setting: when it
/// is off, the snapshot is copied even if a spare copy is there (the next start removes it).
pub fn stage(lock: &StagingLock, data_dir: &Path, name: &str, use_spare: bool) -> Result<PathBuf> {
    let (path, meta) = find(data_dir, name)?;
    let major = crate::config::MAJOR.to_string();
    if meta.postgresql_major != major {
        return Err(Error::Backup {
            what: format!(
                "snapshot {name:?} holds a PostgreSQL {} cluster; pgwarden runs PostgreSQL {major}\n\
                 help: restore it with the pgwarden that made it",
                meta.postgresql_major
            ),
        });
    }
    let staging = lock.staging.clone();
    let _ = std::fs::remove_dir_all(&staging);
    let guard = RemoveOnDrop(Some(staging.clone()));
    // The spare copy made in the background, when it is one of exactly this snapshot: a rename.
    let spare = use_spare
        .then(|| super::snapshot_spare::take(data_dir, name, &meta, &staging))
        .flatten();
    if let Some(spare) = spare {
        tracing::info!(
            snapshot = %name,
            bytes = spare.bytes,
            "snapshot copy from spare: renamed into place (made in the background)"
        );
    } else {
        copy_tree(&path.join("data"), &staging)?;
    }
    guard.disarm();
    Ok(staging)
}

/// Puts the staged copy at `data_dir` in one step, then deletes the cluster it replaced in the
/// background ([`crate::os::deletion`]): the server's start does not wait for ~1000 unlinks.
pub fn swap_in(staging: &Path, data_dir: &Path) -> Result<()> {
    if data_dir.exists() {
        exchange(staging, data_dir)?;
        crate::os::deletion::delete_beside(staging, data_dir)?;
    } else {
        std::fs::rename(staging, data_dir).io("cannot move the snapshot to", data_dir)?;
    }
    super::sync_dir(data_dir.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// Removes snapshot `name`.
pub fn remove(data_dir: &Path, name: &str) -> Result<()> {
    let (path, _) = find(data_dir, name)?;
    super::snapshot_spare::remove(data_dir, name)?;
    std::fs::remove_dir_all(&path).io("cannot remove", &path)
}

/// Removes a directory on drop unless disarmed.
pub struct RemoveOnDrop(pub Option<PathBuf>);

impl RemoveOnDrop {
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["before-migration", "v1.2_a", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "..", "-x", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn save_stage_swap_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(data.join("base/1/100"), "before").unwrap();
        std::fs::write(data.join("postmaster.pid"), "1").unwrap();
        let meta = save(&data, "s1").unwrap();
        assert_eq!(meta.files, 2);
        assert!(save(&data, "s1").is_err(), "no overwrite");
        std::fs::write(data.join("base/1/100"), "after").unwrap();
        let state = dir.path().join("data.pgwarden");
        // What a killed restore left (this name, and an older pgwarden's pid-named one).
        std::fs::create_dir_all(staging_path(&data).join("base")).unwrap();
        let legacy = dir.path().join(".data.snapshot-999999999");
        std::fs::create_dir(&legacy).unwrap();
        let killed_save = snapshots_dir(&data).join(".s2.partial-999999999");
        std::fs::create_dir_all(&killed_save).unwrap();
        let lock = StagingLock::acquire(&state, &data).unwrap();
        assert!(!legacy.exists());
        assert!(!killed_save.exists());
        assert!(!staging_path(&data).exists());
        let err = StagingLock::acquire(&state, &data).unwrap_err().to_string();
        assert!(err.contains("another snapshot command"), "{err}");
        let staging = stage(&lock, &data, "s1", true).unwrap();
        assert_eq!(staging, staging_path(&data));
        swap_in(&staging, &data).unwrap();
        drop(lock);
        assert_eq!(
            std::fs::read_to_string(data.join("base/1/100")).unwrap(),
            "before"
        );
        assert!(!data.join("postmaster.pid").exists());
        assert!(!staging.exists());
        assert_eq!(list(&data).len(), 1);
        remove(&data, "s1").unwrap();
        assert!(list(&data).is_empty());

        // Another major version is refused.
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        save(&data, "old").unwrap();
        let lock = StagingLock::acquire(&state, &data).unwrap();
        let err = stage(&lock, &data, "old", true).unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 15"), "{err}");
    }
}
