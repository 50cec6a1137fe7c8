//! `<state dir>/backup.json`: the last backup's time, size and result.
//!
//! Written by `pgwarden backup` (and the scheduled backups) after every attempt, read by
//! `status` and by anything else that wants to know whether backups work. A plain serde
//! struct, written atomically (temp file + rename), world-readable, no secrets.

use crate::error::IoContext;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "backup.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// The last attempt: `ok` or `failed`.
    pub last_result: String,
    /// When the last attempt finished (Unix epoch milliseconds).
    pub last_finished_ms: u64,
    /// The error of the last attempt, when it failed.
    pub last_error: Option<String>,
    /// The last successful backup.
    pub last_success: Option<SuccessfulBackup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessfulBackup {
    pub archive: std::path::PathBuf,
    /// Bytes of the archive (compressed).
    pub size: u64,
    /// When `pg_backup_stop` returned (Unix epoch milliseconds): the backup holds every
    /// transaction committed before it.
    pub finished_ms: u64,
    pub duration_ms: u64,
    pub stop_lsn: String,
}

/// Reads the record; `None` if there is none (no backup yet) or it is unreadable.
pub fn read(state_dir: &Path) -> Option<BackupRecord> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// One line for `status`: "ok, 12.3 MB, 2h 5m ago (FILE)" / "failed 5m ago: …; last ok …" / "-".
pub fn describe(record: Option<&BackupRecord>, now_ms: u64) -> String {
    let Some(record) = record else {
        return "- (none recorded; `pgwarden backup`)".into();
    };
    let ago = |ms: u64| ago(now_ms, ms);
    let success = record.last_success.as_ref().map(|s| {
        format!(
            "{}, {} ago ({})",
            super::human_bytes(s.size),
            ago(s.finished_ms),
            s.archive.display()
        )
    });
    match (record.last_result.as_str(), success) {
        ("ok", Some(s)) => format!("ok, {s}"),
        (_, success) => format!(
            "FAILED {} ago: {}; last ok: {}",
            ago(record.last_finished_ms),
            record
                .last_error
                .as_deref()
                .unwrap_or("?")
                .lines()
                .next()
                .unwrap_or(""),
            success.unwrap_or_else(|| "never".into())
        ),
    }
}

/// How long before `now_ms` `ms` was: "12s", "5m", "2h 5m", "3d 4h".
pub fn ago(now_ms: u64, ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Records one attempt: `Ok(success)` or `Err(error text)`. Best effort (a warning on failure).
pub fn note(state_dir: &Path, outcome: std::result::Result<SuccessfulBackup, String>) {
    let mut record = read(state_dir).unwrap_or(BackupRecord {
        last_result: String::new(),
        last_finished_ms: 0,
        last_error: None,
        last_success: None,
    });
    record.last_finished_ms = super::now_ms();
    match outcome {
        Ok(success) => {
            record.last_result = "ok".into();
            record.last_error = None;
            record.last_success = Some(success);
        }
        Err(error) => {
            record.last_result = "failed".into();
            record.last_error = Some(error);
        }
    }
    if let Err(e) = write(state_dir, &record) {
        tracing::warn!("cannot record the backup in {}: {e}", state_dir.display());
    }
}

fn write(state_dir: &Path, record: &BackupRecord) -> crate::error::Result<()> {
    std::fs::create_dir_all(state_dir).io("cannot create", state_dir)?;
    let path = state_dir.join(FILE);
    // Its errors name paths and servers' messages: no state file is readable by other users.
    crate::os::json_file::write(
        &path,
        record,
        crate::os::json_file::PRIVATE,
        crate::os::json_file::Durability::Rename,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let ok = SuccessfulBackup {
            archive: "/b/x.tar.zst".into(),
            size: 10,
            finished_ms: 5,
            duration_ms: 1,
            stop_lsn: "0/1".into(),
        };
        note(dir.path(), Ok(ok.clone()));
        note(dir.path(), Err("disk full".into()));
        let record = read(dir.path()).unwrap();
        assert!(describe(Some(&record), 3_600_005).starts_with("FAILED"));
        assert_eq!(record.last_result, "failed");
        assert_eq!(record.last_error.as_deref(), Some("disk full"));
        assert_eq!(record.last_success, Some(ok));
    }
}
