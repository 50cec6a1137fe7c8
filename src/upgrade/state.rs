//! The upgrade's record, `<state dir>/upgrade.json`: which phase the upgrade is in, and every
//! path and setting a later step (or the recovery after a kill) needs. Written durably
//! (flushed, renamed, directory flushed) *before* the step it announces, so that whatever is on
//! disk after a kill -9 is explained by the record ([`super::switch::recover`]).

use crate::config::lock_file;
use crate::error::{Error, Result};
use crate::instance::remembered::Flags;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "upgrade.json";

/// Where an upgrade is (see the table in [`super`]'s docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new cluster is being made beside the old one; the old one is the instance's.
    Preparing,
    /// The new cluster is complete: the directories are being switched (the commit point).
    Switching,
    /// The new cluster is the instance's; the old one is kept, read-only, for a rollback.
    Upgraded,
    /// The old cluster is being put back (decided: the new one is discarded).
    RollingBack,
    /// The old cluster is being deleted (decided: no rollback any more).
    Finishing,
}

/// How pg_upgrade makes the new cluster's data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Copies every file (room for a second copy needed; the old cluster untouched).
    Copy,
    /// Reflinks (copy-on-write clones: btrfs, XFS): fast, little room, the old cluster untouched.
    Clone,
    /// Hard links: fast, no room, but the old cluster is unusable once the new server started.
    Link,
}

impl Mode {
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Copy => "--copy",
            Mode::Clone => "--clone",
            Mode::Link => "--link",
        }
    }
}

/// The project's `pgwarden.lock` and what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub path: PathBuf,
    /// Its text, `None` when there was no file.
    pub text: Option<String>,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    /// The old and new PostgreSQL releases, `16.14.0` and `17.10.0`.
    pub from: String,
    pub to: String,
    pub mode: Mode,
    /// The instance's data directory (the old cluster's until the switch, the new one's after).
    pub data_dir: PathBuf,
    /// Where the new cluster is made: `<data dir>.upgrade-<new major>`.
    pub new_dir: PathBuf,
    /// Where the old cluster is kept after the switch: `<data dir>.pg<old major>`.
    pub kept_dir: PathBuf,
    /// Where a rollback moves the new cluster before deleting it.
    pub discarded_dir: PathBuf,
    /// The remembered flags before the upgrade (put back by a rollback) and after it (a plain
    /// `start` then uses the new binaries).
    pub flags_before: Flags,
    pub flags_after: Flags,
    /// The project's lock file before and after, when the project has one.
    pub lock_before: Option<LockFile>,
    pub lock_after: Option<LockFile>,
    /// When the switch was decided (seconds since the epoch).
    pub switched_unix: Option<u64>,
}

impl Record {
    /// The `status` line: "upgraded from 16.14.0 on 2026-12-07 14:45 UTC, rollback available
    /// (`pgwarden upgrade --rollback`; `--finish` deletes DIR)".
    pub fn describe(&self) -> String {
        let on = self
            .switched_unix
            .map(|t| format!(" on {}", utc_minute(t)))
            .unwrap_or_default();
        match (self.phase, self.mode) {
            (Phase::Upgraded, Mode::Link) => format!(
                "upgraded from {}{on} with --link: no rollback; `pgwarden upgrade --finish` removes {}",
                self.from,
                self.kept_dir.display()
            ),
            (Phase::Upgraded, _) => format!(
                "upgraded from {}{on}, rollback available (`pgwarden upgrade --rollback`; \
                 `pgwarden upgrade --finish` deletes {})",
                self.from,
                self.kept_dir.display()
            ),
            (phase, _) => format!(
                "an upgrade from {} to {} was interrupted ({phase:?}); the next start completes or undoes it",
                self.from, self.to
            ),
        }
    }
}

/// `2026-12-07 14:45 UTC` for seconds since the epoch.
fn utc_minute(unix: u64) -> String {
    let (year, month, day, hour, minute, _) = crate::backup::civil(unix as i64);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// The new and kept directories' paths for `data_dir`: `<name>.upgrade-17`, `<name>.pg16`,
/// `<name>.pg17-discarded`. Siblings, so that the switch is renames within one filesystem.
pub fn sibling(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data_dir.with_file_name(name)
}

pub fn read(state_dir: &Path) -> Result<Option<Record>> {
    let path = state_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Upgrade {
                what: format!("cannot read the upgrade record {}: {e}", path.display()),
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Upgrade {
            what: format!(
                "the upgrade record {} is damaged: {e}\n\
             help: it says which of the directories beside the data directory is the instance's; \
             compare them with the README's \"Major upgrades\" section before removing it",
                path.display()
            ),
        })
}

/// Writes `record` durably (it must outlive a crash: it is what recovery reads).
pub fn write(state_dir: &Path, record: &Record) -> Result<()> {
    crate::os::json_file::write(
        &state_dir.join(FILE),
        record,
        crate::os::json_file::PRIVATE,
        crate::os::json_file::Durability::Sync,
    )
}

/// Removes the record (the upgrade is over: finished, rolled back, or its preparation undone).
pub fn remove(state_dir: &Path) -> Result<()> {
    let path = state_dir.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                crate::cluster::sync_dir(dir);
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Upgrade {
            what: format!("cannot remove the upgrade record {}: {e}", path.display()),
        }),
    }
}

/// Puts a lock file back as `file` says (its text, or no file).
pub fn restore_lock(file: &LockFile) -> Result<()> {
    match &file.text {
        Some(text) => {
            let lock = lock_file::Lock::parse(text, &file.path)?;
            lock_file::write(&file.path, &lock)
        }
        None => match std::fs::remove_file(&file.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Upgrade {
                what: format!("cannot remove {}: {e}", file.path.display()),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_time_is_shown_in_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_796_654_700), "2026-12-07 14:45 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn siblings_sit_beside_the_data_directory() {
        assert_eq!(
            sibling(Path::new("/var/lib/pgwarden/16/data"), ".pg16"),
            PathBuf::from("/var/lib/pgwarden/16/data.pg16")
        );
    }
}
