//! Spare clusters: the next cluster a command will need, made in the background before it is
//! asked for, so that the command itself is a rename plus a warm start.
//!
//! The problem (issue 29, BENCHMARKS.md): every command that needs a *new* cluster waited on a
//! copy of the ~46 MB, ~1000-file template and its syncfs — `reset --yes` + `start` 724 ms
//! against 74 ms for a stop + start of the same cluster, `snapshot restore` of a 48 MB cluster
//! 257 ms against a 26 ms warm-start floor. A rename is O(1).
//!
//! - [`reset`]: a copy of the template cluster beside the data directory
//!   (`.<data dir name>.spare`), which a first launch of the same settings renames into place
//!   instead of copying the template (`reset` + `start`, or any first launch after the data
//!   directory was deleted).
//! - [`pool`]: copies of an `--ephemeral` server's template in memory, which the next
//!   `--ephemeral` start of the same settings takes by rename (a pool shared by the user's
//!   throwaway servers, bounded per settings by `ephemeral_pool`), made by a detached
//!   [`maker`] process that outlives the server that started it.
//! - `backup::snapshot_spare`: a copy of each snapshot (`<data dir>.snapshots/.NAME.spare`),
//!   which `snapshot restore` renames into its staging directory instead of copying.
//!
//! Rules, for every kind:
//! - Made by the running supervisor only (the pool's entries: by the [`maker`] any
//!   `--ephemeral` one starts, under the pool's lock per settings, see [`pool`]), once its server is ready, on the background
//!   template fill's thread ([`super::template_fill`]: nice 19, idle I/O class, cancelled by a
//!   stop). The supervisor holds the instance lock, so it is the only maker for its data
//!   directory: any working directory ([`work_dir`]) that is not its own was left by a killed
//!   pgwarden and is removed before a spare is made.
//! - Complete before it is ready: the copy goes into `<spare>.work-<pid>/cluster`, then
//!   [`SPARE_MARKER`] (what it is a copy of: [`Origin`]) is written beside it, everything is
//!   flushed (syncfs), and only then the working directory is renamed to the spare's name. A
//!   killed maker leaves a working directory, which nothing uses.
//! - Used only when valid: a real directory owned by pgwarden's user and writable by no one
//!   else, whose marker names exactly the [`Origin`] the command would copy now (pgwarden's
//!   version, the PostgreSQL version, the source's path and identity — a template or snapshot
//!   deleted and made again is another one —, the owner of its files). Anything else is not
//!   used (a stale one is deleted in the background) and the command copies, as it always did.
//! - Bounded: `spare = false` (`--no-spare`) makes none and removes the ones there are; a
//!   spare is made only where a rename can take it (the same filesystem) and while the
//!   filesystem keeps at least the spare's size free after it; a snapshot larger than
//!   `spare_max_mb` gets none (logged). `status` shows their disk use.

pub mod maker;
pub mod pool;
pub mod reset;

use crate::error::{Error, IoContext, Result};
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tracing::{debug, info};

/// Written into a spare's directory before it is flushed and renamed to its name.
pub const SPARE_MARKER: &str = "spare.json";
/// The cluster inside a spare's directory.
pub const SPARE_CLUSTER: &str = "cluster";

/// What a spare is a copy of. A spare is used only when its marker names exactly the origin
/// the command would copy now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// pgwarden's version (a spare's layout is its maker's).
    pub made_by: String,
    /// The PostgreSQL version of a template, the major version of a snapshot.
    pub postgresql: String,
    /// The template's or the snapshot's directory.
    pub source: PathBuf,
    /// The device, inode and modification time of the source's completion file: a source that
    /// was deleted and made again (another template, another snapshot of the same name) is
    /// another source.
    pub identity: String,
    /// The owner (uid) of the cluster's files.
    pub owner: u32,
}

impl Origin {
    /// The origin of a copy of the cached `template` (a reset spare, a pool entry), its files
    /// owned by the server's user; None while the template is not complete.
    pub fn of_template(
        template: &Path,
        install: &crate::binaries::Install,
        run_as: &RunAs,
    ) -> Option<Origin> {
        let owner = if run_as.switch {
            run_as.uid.as_raw()
        } else {
            nix::unistd::geteuid().as_raw()
        };
        Origin::of(
            install.version.to_string(),
            template,
            &template.join(super::template::TEMPLATE_COMPLETE),
            owner,
        )
    }

    /// The origin of a copy of `source`, whose completion file is `complete`; None while the
    /// source is not complete.
    pub fn of(postgresql: String, source: &Path, complete: &Path, owner: u32) -> Option<Origin> {
        let meta = std::fs::symlink_metadata(complete).ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(Origin {
            made_by: env!("CARGO_PKG_VERSION").to_string(),
            postgresql,
            source: source.to_path_buf(),
            identity: format!(
                "{}:{}:{}.{}",
                meta.dev(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
            owner,
        })
    }

    /// Why `self` (what a spare's marker says) is not `wanted`, if it is not.
    fn differs(&self, wanted: &Origin) -> Option<&'static str> {
        if self.made_by != wanted.made_by {
            Some("made by another pgwarden version")
        } else if self.postgresql != wanted.postgresql {
            Some("of another PostgreSQL version")
        } else if self.source != wanted.source {
            Some("a copy of other settings' template or another snapshot")
        } else if self.identity != wanted.identity {
            Some("a copy of an earlier template or snapshot of that name")
        } else if self.owner != wanted.owner {
            Some("owned by another user")
        } else {
            None
        }
    }
}

/// The marker's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub origin: Origin,
    /// The bytes of the cluster's files (its disk use, as `status` shows it).
    pub bytes: u64,
    pub made_unix: u64,
}

/// What [`make`] did.
#[derive(Debug)]
pub enum Made {
    /// A spare of `bytes` is ready.
    Made(u64),
    /// A valid spare was there already.
    AlreadyThere,
    /// None is made, for the reason given (logged by the caller).
    Skipped(String),
}

/// `<spare>.work-<pid>`: where a spare is made before it is renamed to its name.
pub fn work_dir(spare: &Path) -> PathBuf {
    let name = spare.file_name().unwrap_or_default().to_string_lossy();
    spare.with_file_name(format!("{name}.work-{}", std::process::id()))
}

/// Makes the spare `spare` (unless a valid one of `origin` is there): `copy` fills the
/// directory it is given (which does not exist yet) and returns the bytes copied. Must be
/// called by the holder of the instance lock: every other working directory of this spare is
/// a killed maker's and is removed first.
pub fn make(
    spare: &Path,
    origin: &Origin,
    copy: impl FnOnce(&Path) -> Result<u64>,
    cancel: &Cancel,
) -> Result<Made> {
    sweep_work_dirs(spare, Sweep::AllButOurs);
    match read(spare) {
        Ok(record) if record.origin.differs(origin).is_none() => return Ok(Made::AlreadyThere),
        Ok(record) => {
            let why = record.origin.differs(origin).unwrap_or_default();
            debug!(spare = %spare.display(), "replacing a spare cluster {why}");
            remove(spare)?;
        }
        Err(Unusable::Missing) => {}
        Err(Unusable::Refused(why)) => {
            return Ok(Made::Skipped(format!(
                "{} is there and not pgwarden's own spare ({why}); leaving it alone",
                spare.display()
            )));
        }
        Err(Unusable::Unreadable(why)) => {
            debug!(spare = %spare.display(), "replacing an unreadable spare cluster: {why}");
            remove(spare)?;
        }
    }
    let work = work_dir(spare);
    remove(&work)?;
    let made = make_in(&work, spare, origin, copy, cancel);
    if made.is_err() {
        let _ = remove(&work);
    }
    made
}

fn make_in(
    work: &Path,
    spare: &Path,
    origin: &Origin,
    copy: impl FnOnce(&Path) -> Result<u64>,
    cancel: &Cancel,
) -> Result<Made> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(work)
        .io("cannot create", work)?;
    let bytes = copy(&work.join(SPARE_CLUSTER))?;
    let record = Record {
        origin: origin.clone(),
        bytes,
        made_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let marker = work.join(SPARE_MARKER);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&marker)
        .io("cannot write", &marker)?;
    std::io::Write::write_all(
        &mut file,
        &serde_json::to_vec_pretty(&record).expect("serialisable"),
    )
    .io("cannot write", &marker)?;
    drop(file);
    // Flushed before it is ready: a spare torn by a power cut would become a data directory.
    super::flush::flush_to_disk(work)?;
    cancel
        .unless_cancelled(|| std::fs::rename(work, spare).io("cannot move the spare to", spare))
        .unwrap_or_else(|| {
            Err(Error::Cluster {
                what: "cancelled before the spare was ready".into(),
            })
        })?;
    super::flush::sync_dir(spare.parent().unwrap_or(Path::new("/")));
    Ok(Made::Made(bytes))
}

/// Why a spare is not used.
#[derive(Debug)]
enum Unusable {
    Missing,
    /// Not pgwarden's own (a symlink, another owner, writable by others): never used nor deleted.
    Refused(String),
    Unreadable(String),
}

/// Reads a spare's marker after checking the spare is pgwarden's own: a real directory owned
/// by pgwarden's user and writable by no one else (another user could have made one first
/// where the data directory's parent is shared), its marker a regular file read without
/// following symlinks, its cluster a real directory.
fn read(spare: &Path) -> std::result::Result<Record, Unusable> {
    let meta = match std::fs::symlink_metadata(spare) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Refused(e.to_string())),
        Ok(meta) => meta,
    };
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(Unusable::Refused("not a directory".into()));
    }
    if meta.uid() != me {
        return Err(Unusable::Refused(format!("owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unusable::Refused(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    let marker = spare.join(SPARE_MARKER);
    let text = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&marker)
        .and_then(|mut f| {
            let owner = f.metadata()?.uid();
            if owner != me {
                return Err(std::io::Error::other(format!(
                    "marker owned by uid {owner}"
                )));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)?;
            Ok(text)
        })
        .map_err(|e| Unusable::Unreadable(format!("{}: {e}", marker.display())))?;
    let cluster = std::fs::symlink_metadata(spare.join(SPARE_CLUSTER))
        .map_err(|e| Unusable::Unreadable(format!("no cluster: {e}")))?;
    if !cluster.is_dir() {
        return Err(Unusable::Unreadable(
            "its cluster is not a directory".into(),
        ));
    }
    serde_json::from_str(&text).map_err(|e| Unusable::Unreadable(e.to_string()))
}

/// The spare's record when it is pgwarden's own and readable (its disk use for `status`).
pub fn record(spare: &Path) -> Option<Record> {
    read(spare).ok()
}

/// Takes the spare `spare` if it is valid for `wanted`: its cluster renamed to `into` (a
/// missing path, or an empty directory), the spare's directory removed; returns its record.
/// None when there is none, it is stale (then deleted in the background) or the rename fails
/// (another filesystem): the caller copies instead. `what` names it in the log lines.
pub fn take(spare: &Path, wanted: &Origin, into: &Path, what: &str) -> Option<Record> {
    let record = match read(spare) {
        Ok(record) => record,
        Err(Unusable::Missing) => {
            debug!(spare = %spare.display(), "no spare {what}");
            return None;
        }
        Err(Unusable::Refused(why)) => {
            tracing::warn!(spare = %spare.display(), "not using the spare {what}: it is not pgwarden's own ({why})");
            return None;
        }
        Err(Unusable::Unreadable(why)) => {
            info!(spare = %spare.display(), "not using the spare {what}: it is unreadable ({why})");
            let _ = crate::os::deletion::delete_cluster(spare);
            return None;
        }
    };
    if let Some(why) = record.origin.differs(wanted) {
        info!(spare = %spare.display(), "not using the spare {what}: it is stale ({why}); copying instead");
        let _ = crate::os::deletion::delete_cluster(spare);
        return None;
    }
    if let Err(e) = std::fs::rename(spare.join(SPARE_CLUSTER), into) {
        info!(spare = %spare.display(), "not using the spare {what}: cannot move it to {}: {e}", into.display());
        return None;
    }
    let _ = std::fs::remove_file(spare.join(SPARE_MARKER));
    let _ = std::fs::remove_dir(spare);
    Some(record)
}

/// Deletes the spare `spare` in the background when it is pgwarden's own (it can no longer
/// be valid: `why`).
pub fn drop_stale(spare: &Path, why: &str) {
    if matches!(read(spare), Ok(_) | Err(Unusable::Unreadable(_))) {
        info!(spare = %spare.display(), "not using the spare: {why}; deleting it");
        let _ = crate::os::deletion::delete_cluster(spare);
    }
}

/// Which working directories [`sweep_work_dirs`] removes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Every one but this process's: the maker (the instance lock's holder) is the only one.
    AllButOurs,
    /// Those whose pid no longer runs (another command, beside a running maker).
    Dead,
}

/// Removes what killed makers of `spare` left (`<spare>.work-<pid>`): only directories of
/// pgwarden's user (who made them); another user's under that name is left alone.
fn sweep_work_dirs(spare: &Path, which: Sweep) {
    let (Some(parent), Some(name)) = (spare.parent(), spare.file_name()) else {
        return;
    };
    let prefix = format!("{}.work-", name.to_string_lossy());
    let ours = work_dir(spare);
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        let running = || Path::new("/proc").join(pid).exists();
        if entry.path() == ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Another user may make a directory of that name first where the parent is shared
        // (`/tmp`): not a maker's leftover, not ours to delete.
        let owner = std::fs::symlink_metadata(entry.path()).map(|m| m.uid());
        if owner.as_ref().ok() != Some(&nix::unistd::geteuid().as_raw()) {
            debug!(
                dir = %entry.path().display(),
                owner = %owner.map(crate::config::trust::owner_name).unwrap_or_default(),
                "leaving alone a spare's working directory pgwarden's user did not make"
            );
            continue;
        }
        if which == Sweep::AllButOurs || !running() {
            debug!(dir = %entry.path().display(), "removing what a killed spare maker left");
            let _ = remove(&entry.path());
        }
    }
}

/// Removes the spare `spare` and what a killed maker of it left, if pgwarden's own.
pub fn discard(spare: &Path) -> Result<()> {
    sweep_work_dirs(spare, Sweep::Dead);
    match read(spare) {
        Err(Unusable::Missing) | Err(Unusable::Refused(_)) => Ok(()),
        _ => remove(spare),
    }
}

/// Removes `path` if it exists (a directory tree: std's removal does not follow symlinks).
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).io("cannot remove", path),
        _ => Ok(()),
    }
}

/// Whether the filesystem of `dir` keeps at least `bytes` free after a copy of `bytes`.
pub fn room_for(dir: &Path, bytes: u64) -> std::result::Result<(), String> {
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = stat.blocks_available() * stat.fragment_size();
    if free >= bytes.saturating_mul(2) {
        Ok(())
    } else {
        Err(format!(
            "{} MB free on the filesystem of {}, a spare of {} MB would leave less than its size",
            free / 1_000_000,
            dir.display(),
            bytes / 1_000_000
        ))
    }
}

/// The bytes of the files under `dir` (a source's size, before it is copied).
pub fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => total += size_of(&entry.path()),
            Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    total
}

/// Copies a cluster (`from`, e.g. a snapshot's `data/`) into `to` for a spare, its files given
/// to the server's user, stopping at the next entry once `cancel` is cancelled.
pub fn copy_cluster(from: &Path, to: &Path, run_as: &RunAs, cancel: &Cancel) -> Result<u64> {
    super::template::copy_tree_until(from, to, Some(run_as), cancel)
}

/// Whether `dir`'s parent holds it on the same filesystem (a rename can move a spare there).
pub fn renamable_into(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(own), Ok(p)) => own.dev() == p.dev() && own.ino() != p.ino(),
        // A missing data directory is made in its parent.
        (Err(_), Ok(_)) => true,
        _ => false,
    }
}

/// The disk use of spares (`status`, `ls`): a data directory's, or the pool's.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SpareUse {
    /// How many spares are ready.
    pub count: u64,
    pub bytes: u64,
}

impl SpareUse {
    /// What `status` prints: `2 ready, 94.1 MB` or `none`.
    pub fn describe(&self) -> String {
        if self.count == 0 {
            "none".into()
        } else {
            format!(
                "{} ready, {}",
                self.count,
                crate::units::human_bytes(self.bytes)
            )
        }
    }
}

#[cfg(test)]
mod tests;
