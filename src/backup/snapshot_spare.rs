//! Snapshot spares: a copy of each snapshot, made in the background once the server is ready
//! ([`crate::cluster::spare`] has the rules: complete and flushed before it is ready, used
//! only when it is a copy of exactly that snapshot, cancelled by a stop), so that `snapshot
//! restore` renames it into its staging directory instead of copying the snapshot while the
//! user waits: the restore is a rename, the swap and a warm start.
//!
//! `<data dir>.snapshots/.NAME.spare` (hidden: `snapshot ls` does not list it), on the
//! snapshots' filesystem, beside the data directory. A spare doubles its snapshot's disk use:
//! no snapshot larger than `spare_max_mb` gets one, nor one whose copy would leave the
//! filesystem with less free space than its size (both logged once per launch); `snapshot rm`
//! removes the snapshot's spare with it, and a spare whose snapshot is gone is removed by the
//! next preparation.

use super::snapshot::{self, META, SnapshotMeta};
use crate::cluster::spare::{self, Made, Origin, Record, SpareUse};
use crate::error::Result;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

/// `<data dir>.snapshots/.NAME.spare`.
pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    snapshot::snapshots_dir(data_dir).join(format!(".{name}.spare"))
}

/// What a spare of snapshot `name` is a copy of (its `snapshot.json` names the snapshot: one
/// saved again under the same name is another); the files keep the snapshot's owner.
fn origin(data_dir: &Path, name: &str, meta: &SnapshotMeta) -> Option<Origin> {
    let dir = snapshot::snapshots_dir(data_dir).join(name);
    let owner = std::fs::metadata(dir.join("data")).ok()?.uid();
    Origin::of(meta.postgresql_major.clone(), &dir, &dir.join(META), owner)
}

/// Makes the missing spares of every snapshot of `data_dir`, newest first, within the bounds;
/// removes the spares of snapshots that are gone.
pub fn prepare(data_dir: &Path, run_as: &RunAs, max_mb: u64, cancel: &Cancel) {
    if let Some(why) = not_ours(data_dir) {
        warn!(
            "no spare copies of snapshots: {why}\n\
             help: its snapshots are not pgwarden's; remove it (or give it to pgwarden's user, \
             mode 0700) if they are yours"
        );
        return;
    }
    remove_orphans(data_dir);
    let mut snapshots = snapshot::list(data_dir);
    snapshots.reverse();
    for meta in snapshots {
        if cancel.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        match prepare_one(data_dir, &meta, run_as, max_mb, cancel) {
            Ok(Made::Made(bytes)) => info!(
                snapshot = %meta.name,
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "spare snapshot copy ready: `snapshot restore {}` renames it (no copy)",
                meta.name
            ),
            Ok(Made::AlreadyThere) => debug!(snapshot = %meta.name, "its spare copy is ready"),
            Ok(Made::Skipped(why)) => {
                info!(snapshot = %meta.name, "no spare copy of this snapshot (its restore copies it): {why}")
            }
            Err(_) if cancel.is_cancelled() => debug!("spare snapshot copy cancelled"),
            Err(e) => warn!(
                snapshot = %meta.name,
                "cannot make a spare copy of this snapshot (its restore copies it): {e}"
            ),
        }
    }
}

fn prepare_one(
    data_dir: &Path,
    meta: &SnapshotMeta,
    run_as: &RunAs,
    max_mb: u64,
    cancel: &Cancel,
) -> Result<Made> {
    let spare = path(data_dir, &meta.name);
    let Some(origin) = origin(data_dir, &meta.name, meta) else {
        return Ok(Made::Skipped("the snapshot is unreadable".into()));
    };
    if meta.bytes > max_mb.saturating_mul(1_000_000) {
        spare::discard(&spare)?;
        return Ok(Made::Skipped(format!(
            "{} MB is over spare_max_mb = {max_mb}",
            meta.bytes / 1_000_000
        )));
    }
    let parent = spare.parent().unwrap_or(Path::new("/"));
    if let Err(why) = spare::room_for(parent, meta.bytes) {
        spare::discard(&spare)?;
        return Ok(Made::Skipped(why));
    }
    let data = origin.source.join("data");
    spare::make(
        &spare,
        &origin,
        |to| spare::copy_cluster(&data, to, run_as, cancel),
        cancel,
    )
}

/// Takes the valid spare of snapshot `name` into `into` (the restore's staging directory,
/// missing). None: copy the snapshot instead.
pub fn take(data_dir: &Path, name: &str, meta: &SnapshotMeta, into: &Path) -> Option<Record> {
    if not_ours(data_dir).is_some() {
        return None;
    }
    let spare = path(data_dir, name);
    let Some(wanted) = origin(data_dir, name, meta) else {
        spare::drop_stale(&spare, "its snapshot is unreadable");
        return None;
    };
    spare::take(&spare, &wanted, into, "snapshot copy")
}

/// Why the snapshots directory of `data_dir` is not pgwarden's own, if it exists and is not: a
/// real directory owned by pgwarden's user and writable by no one else. Beside a data directory
/// in a shared parent (`/tmp`) another user may have made it first; the spares are made there
/// as root, unasked, at every start, and that user could swap a spare's working directory for a
/// symlink while the copy runs and have root's copy written, chmodded and chowned anywhere.
fn not_ours(data_dir: &Path) -> Option<String> {
    let dir = snapshot::snapshots_dir(data_dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let why = if !meta.is_dir() {
        "is not a directory (a symbolic link?)".to_string()
    } else if meta.uid() != nix::unistd::geteuid().as_raw() {
        let owner = nix::unistd::User::from_uid(meta.uid().into())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
        format!("is owned by {owner}")
    } else if meta.mode() & 0o022 != 0 {
        format!("is writable by others (mode {:o})", meta.mode() & 0o7777)
    } else {
        return None;
    };
    Some(format!("{} {why}", dir.display()))
}

/// Every snapshot spare of `data_dir`, with its record (the disk use `status` shows).
pub fn list(data_dir: &Path) -> Vec<(String, Record)> {
    std::fs::read_dir(snapshot::snapshots_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let name = file.strip_prefix('.')?.strip_suffix(".spare")?.to_string();
            Some((name, spare::record(&e.path())?))
        })
        .collect()
}

/// Removes the spares (and killed makers' work) whose snapshot is gone.
fn remove_orphans(data_dir: &Path) {
    let dir = snapshot::snapshots_dir(data_dir);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = file.strip_prefix('.') else {
            continue;
        };
        let name = match (rest.strip_suffix(".spare"), rest.rfind(".spare.work-")) {
            (Some(name), _) => name,
            (None, Some(at)) => &rest[..at],
            (None, None) => continue,
        };
        if !dir.join(name).join(META).is_file() {
            debug!(spare = %entry.path().display(), "removing the spare of a snapshot that is gone");
            let _ = spare::discard(&path(data_dir, name));
        }
    }
}

/// Removes snapshot `name`'s spare (`snapshot rm`, `spare = false`).
pub fn remove(data_dir: &Path, name: &str) -> Result<()> {
    spare::discard(&path(data_dir, name))
}

/// Removes every snapshot spare of `data_dir` (`spare = false`).
pub fn remove_all(data_dir: &Path) {
    if not_ours(data_dir).is_some() {
        return;
    }
    for (name, _) in list(data_dir) {
        let _ = remove(data_dir, &name);
    }
    remove_orphans(data_dir);
}

/// The spares of `data_dir` that are ready: its reset spare and its snapshots'.
pub fn disk_use(data_dir: &Path) -> SpareUse {
    let reset = spare::record(&spare::reset::path(data_dir));
    let mut out = SpareUse::default();
    for record in reset
        .into_iter()
        .chain(list(data_dir).into_iter().map(|(_, r)| r))
    {
        out.count += 1;
        out.bytes += record.bytes;
    }
    out
}
