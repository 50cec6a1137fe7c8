//! The continuous WAL archive (opt-in `wal_archive = DIR`).
//!
//! With `wal_archive` set, the server runs with `archive_mode = on` and pgwarden itself as the
//! `archive_command` (`pgwarden archive-wal --to DIR %f %p`, a hidden subcommand), which
//! PostgreSQL runs, as the server's user, for every finished segment:
//! - the segment is copied to `DIR/.NAME.tmp-<pid>`, fsynced, then hard-linked to `DIR/NAME`
//!   (`link(2)` fails if the name exists: never overwrites, and a concurrent or earlier copy
//!   cannot be clobbered), the temp name removed, the directory fsynced; exit 0 only then.
//! - a `DIR/NAME` that exists already with the same bytes (PostgreSQL may archive a segment
//!   again after a crash) succeeds; with different bytes it fails, loudly, and stays.
//! - a copy killed halfway leaves only a `.NAME.tmp-*` file, never a segment name; the next
//!   attempt sweeps it.
//!
//! `restore --to TIME` writes `recovery.signal` and `restore_command = pgwarden archive-wal
//! --from DIR %f %p`, `recovery_target_time`, `recovery_target_action = 'promote'`, once the
//! time is read ([`super::target_time`]) and known to lie between the backup's end and the
//! moment the newest segment was archived ([`recovery_for`]), before anything is stopped.

use super::manifest::Manifest;
use super::restore::Recovery;
use super::target_time::{self, TargetTime};
use crate::config::Config;
use crate::config::backup::restore_command;
use crate::error::{Error, IoContext, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a `--to` value ([`super::target_time`]); refused (exit 2) naming the value and the rule.
pub fn parse_target(time: &str) -> Result<TargetTime> {
    target_time::parse(time).map_err(|why| Error::Config {
        problems: vec![format!("--to {time:?}: {why}")],
    })
}

/// The recovery settings for `restore --to TIME` from the backup `manifest`, refused (exit 2)
/// when the archive cannot take recovery to `target`: a time before the backup's end (recovery
/// cannot stop before the backup is consistent) or after the newest segment in the WAL archive
/// was archived ([`newest_archived`]: no WAL written after that moment is there, so recovery
/// would end before it reached the target, and the restored server would not start).
pub fn recovery_for(config: &Config, time: &str, manifest: &Manifest) -> Result<Recovery> {
    let target = parse_target(time)?;
    let Some(archive) = &config.backup.wal_archive else {
        return Err(Error::Config {
            problems: vec![
                "restore --to needs the WAL archive: set wal_archive = \"DIR\" in the config (or \
                 PGWARDEN_WAL_ARCHIVE) to the archive the server wrote"
                    .into(),
            ],
        });
    };
    let at = |ms: i64| super::rfc3339(ms.max(0) as u64);
    if target.unix_ms() < manifest.stop_ms as i64 {
        return Err(Error::Config {
            problems: vec![format!(
                "--to {time:?} ({}) is before the end of this backup ({}): recovery cannot stop before \
                 the backup is consistent; nothing was changed\n\
                 help: give a time after {}, or restore an older backup",
                at(target.unix_ms()),
                manifest.stop_time,
                manifest.stop_time
            )],
        });
    }
    let newest = newest_archived(archive)?;
    let too_late = match &newest {
        None => true,
        Some((_, ms)) => target.unix_ms() > *ms,
    };
    if too_late {
        let what = match &newest {
            None => format!("the WAL archive {} holds no segment", archive.display()),
            Some((name, ms)) => format!(
                "the newest segment in the WAL archive {} ({name}) was archived at {}: WAL written \
                 after that is not in the archive",
                archive.display(),
                at(*ms)
            ),
        };
        return Err(Error::Config {
            problems: vec![format!(
                "--to {time:?} ({}) is after what the archive holds: {what}, so recovery could not \
                 reach that time and the restored server would not start; nothing was changed\n\
                 help: give an earlier time; to restore up to now, first archive the running server's \
                 current segment (`pgwarden psql -c 'SELECT pg_switch_wal()'`)",
                at(target.unix_ms())
            )],
        });
    }
    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
    Ok(Recovery {
        target_time: target.for_postgres(),
        restore_command: restore_command(&exe, archive),
    })
}

/// The newest WAL segment in `archive` (a name of 24 hex digits) and when it was archived (its
/// modification time, in ms: [`push`] writes each segment as a new file once the server has
/// finished it, so no record in the archive is later than that); `None` when there is none.
pub fn newest_archived(archive: &Path) -> Result<Option<(String, i64)>> {
    let mut newest: Option<(String, i64)> = None;
    let entries = std::fs::read_dir(archive).map_err(|e| Error::Backup {
        what: format!(
            "cannot read the WAL archive {} ({e}); nothing was changed\n\
             help: check wal_archive in the config, and that this user can read it",
            archive.display()
        ),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Some(ms) = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(_, n)| ms > *n) {
            newest = Some((name, ms));
        }
    }
    Ok(newest)
}

/// A WAL file name PostgreSQL hands to archive/restore commands: a plain name.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Backup {
            what: format!("{name:?} is not a WAL file name"),
        })
    }
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).io("cannot read", a)?,
        std::fs::File::open(b).io("cannot read", b)?,
    );
    if fa.metadata().io("cannot read", a)?.len() != fb.metadata().io("cannot read", b)?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).io("cannot read", a)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n]).io("cannot read", b)?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// `archive_command`: copies the segment `source` durably to `archive/name`.
pub fn push(archive: &Path, name: &str, source: &Path) -> Result<()> {
    check_name(name)?;
    if !archive.is_dir() {
        return Err(Error::Backup {
            what: format!(
                "the WAL archive {} does not exist\nhelp: create it, writable by the server's user: \
                 `install -d -m 700 -o pgwarden {}`",
                archive.display(),
                archive.display()
            ),
        });
    }
    let dest = archive.join(name);
    if dest.exists() {
        return already_there(&dest, source);
    }
    // Leftovers of an earlier attempt that was killed.
    let prefix = format!(".{name}.tmp-");
    for entry in std::fs::read_dir(archive)
        .io("cannot read", archive)?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let temp = archive.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut input = std::fs::File::open(source).io("cannot read", source)?;
        let mut output = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .io("cannot create", &temp)?;
        std::io::copy(&mut input, &mut output).io("cannot write", &temp)?;
        output.sync_all().io("cannot flush", &temp)?;
        match std::fs::hard_link(&temp, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => already_there(&dest, source),
            Err(e) => Err(e).io("cannot link the segment into", &dest),
        }
    })();
    let _ = std::fs::remove_file(&temp);
    super::sync_dir(archive);
    result
}

fn already_there(dest: &Path, source: &Path) -> Result<()> {
    if same_contents(dest, source)? {
        return Ok(());
    }
    Err(Error::Backup {
        what: format!(
            "{} exists in the WAL archive with other contents; not overwriting it\n\
             help: this archive belongs to another cluster (or timeline): give this cluster its own wal_archive",
            dest.display()
        ),
    })
}

/// `restore_command`: copies `archive/name` to `target` (exit non-zero if missing, as
/// PostgreSQL expects for the end of the archive).
pub fn fetch(archive: &Path, name: &str, target: &Path) -> Result<bool> {
    check_name(name)?;
    let source = archive.join(name);
    if !source.is_file() {
        return Ok(false);
    }
    let partial: PathBuf = {
        let mut p = target.as_os_str().to_os_string();
        p.push(".pgwarden-partial");
        p.into()
    };
    std::fs::copy(&source, &partial).io("cannot copy to", &partial)?;
    std::fs::rename(&partial, target).io("cannot rename into", target)?;
    Ok(true)
}

/// Archived segments no backup needs any more: those before `oldest_first` (the first segment
/// of the oldest kept backup), any timeline. History files are kept.
pub fn expire(archive: &Path, oldest_first: &str, segment_size: u64) -> Result<usize> {
    let Some(keep_from) = super::base::segment_number(oldest_first, segment_size) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(archive)
        .io("cannot read", archive)?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let segment = name
            .get(..24)
            .and_then(|n| super::base::segment_number(n, segment_size));
        let is_wal = name.len() == 24 || name.ends_with(".partial") || name.ends_with(".backup");
        if is_wal && segment.is_some_and(|n| n < keep_from) {
            std::fs::remove_file(entry.path()).io("cannot remove", entry.path())?;
            removed += 1;
        }
    }
    super::sync_dir(archive);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_never_overwrites_and_ignores_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        let seg = dir.path().join("000000010000000000000001");
        std::fs::write(&seg, vec![7u8; 4096]).unwrap();
        // A copy killed halfway.
        let leftover = archive.join(".000000010000000000000001.tmp-99999");
        std::fs::write(&leftover, [7u8; 10]).unwrap();
        push(&archive, "000000010000000000000001", &seg).unwrap();
        assert!(!leftover.exists());
        let dest = archive.join("000000010000000000000001");
        assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 4096]);
        // Again, same bytes: fine.
        push(&archive, "000000010000000000000001", &seg).unwrap();
        // Different bytes under the same name: refused, the archived copy stays.
        std::fs::write(&seg, vec![8u8; 4096]).unwrap();
        let err = push(&archive, "000000010000000000000001", &seg).unwrap_err();
        assert!(err.to_string().contains("not overwriting"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 4096]);
        assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 1);
        assert!(push(&archive, "../x", &seg).is_err());

        let target = dir.path().join("restored");
        assert!(fetch(&archive, "000000010000000000000001", &target).unwrap());
        assert!(!fetch(&archive, "000000010000000000000002", &target).unwrap());

        std::fs::write(archive.join("000000010000000000000003"), b"x").unwrap();
        std::fs::write(archive.join("00000002.history"), b"x").unwrap();
        let removed = expire(&archive, "000000010000000000000003", 16 << 20).unwrap();
        assert_eq!(removed, 1);
        assert!(archive.join("00000002.history").exists());
    }
}
