//! `pgwarden restore`: a base backup back into a data directory, atomically, in place.
//!
//! 1. Before anything is written: the manifest is read and the archive's size and SHA-256 are
//!    checked against it ([`verify`]); every tablespace's location is decided and checked
//!    ([`super::tablespaces::plan`]); the free space is checked ([`check_space`]).
//! 2. [`write`]: an existing cluster (only with `--force`, the server stopped by then) is kept
//!    aside ([`super::aside`]); an unfinished restore or first launch is cleared. The archive
//!    is unpacked into the data directory itself, marked unfinished while it is
//!    ([`super::in_place`]: the same markers as a first launch, so that it also works when the
//!    data directory is a mount point). Archives are hostile input: only directories and
//!    regular files are accepted, every name must be plain and relative, files are created
//!    exclusively (`O_EXCL`, `O_NOFOLLOW`) in trees that hold no symlinks, so nothing can land
//!    outside the data directory or a tablespace's location. Every file is hashed as it is
//!    written and must match its manifest entry, in order, and every manifest entry must be
//!    there.
//! 3. `tablespace_map` is written with the restore's locations; for a point-in-time restore,
//!    `recovery.signal` and the recovery settings are added.
//! 4. Everything is flushed and the data directory marked complete. A failure pgwarden sees
//!    puts the data directory (and the tablespace locations) back as they were, and the old
//!    cluster back in place.
//!
//! Started, the server finds `backup_label` (and recreates the `pg_tblspc` links from
//! `tablespace_map`), replays the WAL in `pg_wal/` from the backup's checkpoint to its end
//! (past the stop LSN: everything committed before `pg_backup_stop` returned), and opens.

use super::aside::{self, Aside};
use super::in_place::{self, Found, HELD_MARKER, Target};
use super::manifest::Manifest;
use super::tablespaces::{self, Placement, Prepared};
use crate::cluster::MARKER;
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Point-in-time recovery from the WAL archive.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// `recovery_target_time`, as PostgreSQL reads it.
    pub target_time: String,
    /// The `restore_command` that fetches segments from the archive.
    pub restore_command: String,
}

/// Reads the manifest of `archive` and checks the archive against it.
pub fn verify(archive: &Path) -> Result<Manifest> {
    let manifest = Manifest::read_for(archive)?;
    let major = crate::config::MAJOR.to_string();
    if manifest.postgresql_major != major {
        return Err(Error::Backup {
            what: format!(
                "backup {} holds a PostgreSQL {} cluster; pgwarden runs PostgreSQL {major}",
                archive.display(),
                manifest.postgresql_major
            ),
        });
    }
    manifest.verify_archive(archive)?;
    Ok(manifest)
}

fn give(path: &Path, run_as: &RunAs) -> Result<()> {
    if run_as.switch {
        std::os::unix::fs::lchown(path, Some(run_as.uid.as_raw()), Some(run_as.gid.as_raw()))
            .map_err(|e| Error::Privilege {
                what: format!(
                    "cannot give {} to user {}: {e}",
                    path.display(),
                    run_as.name
                ),
            })?;
    }
    Ok(())
}

/// Unpacks `archive` into `data_dir` (its tablespaces into their placements), checking every
/// file against `manifest`. The cluster's completion marker is held back
/// ([`super::in_place::HELD_MARKER`]) until [`super::in_place::Target::commit`].
pub fn unpack(
    archive: &Path,
    manifest: &Manifest,
    data_dir: &Path,
    placements: &[Placement],
    run_as: &RunAs,
) -> Result<()> {
    let bad = |why: String| Error::Backup {
        what: format!(
            "backup {} is damaged: {why}; nothing was changed\nhelp: restore another backup",
            archive.display()
        ),
    };
    let file = std::fs::File::open(archive).io("cannot open backup", archive)?;
    let decoder = zstd::Decoder::new(file).map_err(|e| bad(format!("not zstd data ({e})")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut expected = manifest.files.iter();
    let mut buf = vec![0u8; 1 << 20];
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable archive ({e})")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| bad("a member name is not UTF-8".into()))?;
        let rel = super::safe_relative(&name)
            .ok_or_else(|| bad(format!("member {name:?} is not a plain relative path")))?
            .to_path_buf();
        let target = if name == MARKER {
            data_dir.join(HELD_MARKER)
        } else if rel.starts_with(tablespaces::PREFIX) {
            match tablespaces::destination(&rel.to_string_lossy(), placements).map_err(bad)? {
                Some(target) => target,
                // The directories that only group the tablespaces: their locations exist.
                None if entry.header().entry_type() == tar::EntryType::Directory => continue,
                None => {
                    return Err(bad(format!("{name} is a file where a directory belongs")));
                }
            }
        } else {
            data_dir.join(&rel)
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match std::fs::create_dir(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {}
                    Err(e) => return Err(e).io("cannot create directory", &target),
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))
                    .io("cannot set the mode of", &target)?;
                give(&target, run_as)?;
            }
            tar::EntryType::Regular => {
                let want = expected.next().ok_or_else(|| {
                    bad(format!("{name} is in the archive but not in the manifest"))
                })?;
                let rel_text = rel.to_string_lossy();
                if want.path != rel_text {
                    return Err(bad(format!(
                        "found {rel_text} where the manifest lists {}",
                        want.path
                    )));
                }
                if let Some(parent) = target.parent()
                    && !parent.is_dir()
                {
                    return Err(bad(format!("{name} comes before its directory")));
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)
                    .io("cannot create", &target)?;
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| bad(format!("{name} cannot be read ({e})")))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).io("cannot write", &target)?;
                    size += n as u64;
                }
                let sha = hex::encode(hasher.finalize());
                if size != want.size || sha != want.sha256 {
                    return Err(bad(format!(
                        "{name} has {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}",
                        want.size, want.sha256
                    )));
                }
                drop(out);
                give(&target, run_as)?;
            }
            other => {
                return Err(bad(format!(
                    "member {name:?} is a {other:?}; a backup holds only files and directories"
                )));
            }
        }
    }
    if let Some(missing) = expected.next() {
        return Err(bad(format!(
            "{} is in the manifest but not in the archive",
            missing.path
        )));
    }
    Ok(())
}

/// Adds `recovery.signal` and the settings of a point-in-time recovery to an unpacked backup.
pub fn configure_recovery(data_dir: &Path, recovery: &Recovery, run_as: &RunAs) -> Result<()> {
    let signal = data_dir.join("recovery.signal");
    std::fs::write(&signal, b"").io("cannot write", &signal)?;
    give(&signal, run_as)?;
    let conf = data_dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    text.push_str(&format!(
        "# pgwarden restore --to: point-in-time recovery (ignored once recovery.signal is gone)\n\
         restore_command = {}\nrecovery_target_time = {}\nrecovery_target_action = 'promote'\n\
         # no connections before the promotion: whoever waits for ready sees the recovered data\n\
         hot_standby = 'off'\n",
        quote(&recovery.restore_command),
        quote(&recovery.target_time)
    ));
    std::fs::write(&conf, text).io("cannot write", &conf)?;
    give(&conf, run_as)
}

/// Everything a restore writes, decided and checked beforehand.
#[derive(Debug, Clone)]
pub struct Job {
    pub archive: PathBuf,
    pub manifest: Manifest,
    pub data_dir: PathBuf,
    /// What the data directory held when the restore was checked.
    pub found: Found,
    pub placements: Vec<Placement>,
    pub recovery: Option<Recovery>,
    pub run_as: RunAs,
    /// The instance's state directory (root's when pgwarden runs as root: trusted), where
    /// [`JOURNAL`] lists the tablespace directories a restore is writing.
    pub state_dir: PathBuf,
}

/// `<state dir>/restore-tablespaces.json`: the tablespace version directories an unfinished
/// restore was writing, outside the data directory and so not covered by its marker. The next
/// restore into the still-unfinished data directory removes them (a `run` that cleared it
/// meanwhile leaves them, and a later restore names them when it refuses the location).
pub const JOURNAL: &str = "restore-tablespaces.json";

/// The leftovers [`JOURNAL`] lists, when the data directory is still unfinished; only paths
/// of the form `/…/PG_16_<digits>` are taken.
pub fn leftovers(state_dir: &Path, found: &Found) -> Vec<PathBuf> {
    if *found != Found::Unfinished {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(state_dir.join(JOURNAL)) else {
        return Vec::new();
    };
    let listed: Vec<PathBuf> = serde_json::from_str(&text).unwrap_or_default();
    let prefix = format!("PG_{}_", crate::config::MAJOR);
    listed
        .into_iter()
        .filter(|p| {
            p.is_absolute()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// Checks that the restored files fit: the data directory's filesystem (for a cluster that is
/// replaced on a mount point, its files go: they count as free) and each tablespace's; and,
/// for a mount point whose cluster is replaced, that its copy fits beside it.
pub fn check_space(job: &Job) -> Result<()> {
    if job.found == Found::Occupied {
        aside::check_room(&job.data_dir)?;
    }
    let ts_bytes: u64 = job.manifest.tablespaces.iter().map(|t| t.bytes).sum();
    let mut needs: Vec<(PathBuf, u64, u64)> = vec![(
        job.data_dir.clone(),
        job.manifest.total_bytes.saturating_sub(ts_bytes),
        if job.found == Found::Occupied && in_place::is_mount_point(&job.data_dir) {
            aside::tree_bytes(&job.data_dir)
        } else {
            0
        },
    )];
    for (p, t) in job.placements.iter().zip(&job.manifest.tablespaces) {
        needs.push((p.to.clone(), t.bytes, 0));
    }
    // What an unfinished restore left in the data directory is cleared first.
    if job.found == Found::Unfinished {
        needs[0].2 = aside::tree_bytes(&job.data_dir);
    }
    for (dir, bytes, freed) in needs {
        let mut probe = dir.clone();
        while !probe.exists() && probe.pop() {}
        if let Some(free) = super::free_space(&probe)
            && free + freed < bytes + (16 << 20)
        {
            return Err(Error::Backup {
                what: format!(
                    "not enough space to restore into {}: {} free on its filesystem, the backup holds {} for it; \
                     nothing was changed\nhelp: free some space there, or restore elsewhere (--data-dir DIR, \
                     --tablespace OLD=NEW)",
                    dir.display(),
                    super::human_bytes(free + freed),
                    super::human_bytes(bytes)
                ),
            });
        }
    }
    Ok(())
}

/// The note in the creating marker of a data directory being restored.
fn note(job: &Job, aside: Option<&Aside>) -> String {
    let mut text = format!(
        "This data directory is being restored by pgwarden {} from {} (backup ended {}).\n\
         Without pgwarden.json beside this file the restore is unfinished: `pgwarden restore` clears it\n\
         and restores again; `pgwarden run` clears it and initialises a new, empty cluster.\n",
        env!("CARGO_PKG_VERSION"),
        job.archive.display(),
        job.manifest.stop_time
    );
    if let Some(aside) = aside {
        text.push_str(&format!(
            "The cluster that was here is kept in {}.\n",
            aside.path.display()
        ));
    }
    for p in &job.placements {
        text.push_str(&format!(
            "Tablespace {} is being restored into {}.\n",
            p.oid,
            p.to.join(&p.version_dir).display()
        ));
    }
    text
}

/// Writes the restore (the server of the data directory is stopped): keeps an existing
/// cluster aside, clears an unfinished one, unpacks in place, completes. Returns where the old
/// cluster went. On failure the old cluster is put back (or the error says where it is).
pub fn write(job: &Job) -> Result<Option<Aside>> {
    let aside = match job.found {
        Found::Occupied => Some(aside::set_aside(
            &job.data_dir,
            &|aside| note(job, Some(aside)),
            &job.run_as,
        )?),
        Found::Unfinished => {
            for dir in leftovers(&job.state_dir, &job.found) {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).io("cannot remove what an unfinished restore left in", &dir);
                    }
                    _ => {}
                }
            }
            in_place::clear_unfinished(&job.data_dir)?;
            let _ = std::fs::remove_file(job.state_dir.join(JOURNAL));
            None
        }
        Found::Missing | Found::Empty => None,
    };
    match write_in_place(job, aside.as_ref()) {
        Ok(()) => Ok(aside),
        Err(e) => {
            let Some(aside) = aside else {
                return Err(e);
            };
            match aside::put_back(&aside, &job.data_dir, &job.run_as) {
                Ok(()) => Err(Error::Backup {
                    what: format!(
                        "{e}\nthe cluster that was in {} is back there",
                        job.data_dir.display()
                    ),
                }),
                Err(back) => Err(Error::Backup {
                    what: format!(
                        "{e}\nthe cluster that was in {} is kept in {} (putting it back failed: {back})",
                        job.data_dir.display(),
                        aside.path.display()
                    ),
                }),
            }
        }
    }
}

fn write_in_place(job: &Job, aside: Option<&Aside>) -> Result<()> {
    let target = Target::begin(&job.data_dir, &note(job, aside), &job.run_as)?;
    let journal = job.state_dir.join(JOURNAL);
    if !job.placements.is_empty() {
        let dirs: Vec<PathBuf> = job
            .placements
            .iter()
            .map(|p| p.to.join(&p.version_dir))
            .collect();
        crate::os::json_file::write(
            &journal,
            &dirs,
            0o600,
            crate::os::json_file::Durability::Sync,
        )?;
    }
    let _journal = RemoveOnDrop(journal);
    let prepared = Prepared::create(&job.placements, &job.run_as)?;
    unpack(
        &job.archive,
        &job.manifest,
        &job.data_dir,
        &job.placements,
        &job.run_as,
    )?;
    tablespaces::write_map(&job.data_dir, &job.placements, &job.run_as)?;
    if let Some(recovery) = &job.recovery {
        configure_recovery(&job.data_dir, recovery, &job.run_as)?;
    }
    prepared.commit()?;
    target.commit()
}

/// Removes a file when dropped: the journal, once the restore is complete or put back.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
