//! `<state dir>/verify.json`: the last verification's time, backup, result and what failed,
//! for `status` (`last_verify` in `--json`) and `/metrics`. Written by `pgwarden backup verify`
//! and by the drill after a scheduled backup; private (0600) like every state file: its
//! failures name paths and relations.

use super::check::Checked;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "verify.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// When the verification finished (Unix epoch milliseconds).
    pub finished_ms: u64,
    pub backup: PathBuf,
    /// True only when every step passed and no relation is damaged.
    pub ok: bool,
    pub duration_ms: u64,
    /// The step that failed: `manifest`, `space`, `restore`, `replay` or `check`.
    pub failed_step: Option<String>,
    /// Each damaged relation, or the failed step's error.
    pub failures: Vec<String>,
    /// What the checks covered (also on a failed check).
    pub checked: Option<Checked>,
}

/// Reads the record; `None` if there is none or it is unreadable.
pub fn read(state_dir: &Path) -> Option<VerifyRecord> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the record. Best effort (a warning on failure).
pub fn write(state_dir: &Path, record: &VerifyRecord) {
    let path = state_dir.join(FILE);
    let written = std::fs::create_dir_all(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::os::json_file::write(
                &path,
                record,
                crate::os::json_file::PRIVATE,
                crate::os::json_file::Durability::Rename,
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!("cannot record the verification in {}: {e}", path.display());
    }
}

/// One line for `status`: "ok 2h 5m ago (FILE): 4 databases, 75 tables, 160 indexes in 2s" /
/// "FAILED 5m ago (FILE) at check: index public.t_pkey in database app: …" / "-".
pub fn describe(record: Option<&VerifyRecord>, now_ms: u64) -> String {
    let Some(r) = record else {
        return "- (none recorded; `pgwarden backup verify`)".into();
    };
    let ago = crate::backup::record::ago(now_ms, r.finished_ms);
    if r.ok {
        let what = r.checked.as_ref().map_or_else(String::new, |c| {
            format!(
                ": {} databases, {} tables, {} indexes",
                c.databases.len(),
                c.tables,
                c.indexes
            )
        });
        return format!(
            "ok {ago} ago ({}){what} in {:.1}s",
            r.backup.display(),
            r.duration_ms as f64 / 1000.0
        );
    }
    format!(
        "FAILED {ago} ago ({}) at {}: {}{}",
        r.backup.display(),
        r.failed_step.as_deref().unwrap_or("?"),
        r.failures
            .first()
            .and_then(|f| f.lines().next())
            .unwrap_or("?"),
        match r.failures.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_privately_and_reads_well() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let record = VerifyRecord {
            finished_ms: 1_000,
            backup: "/b/x.tar.zst".into(),
            ok: false,
            duration_ms: 2_000,
            failed_step: Some("check".into()),
            failures: vec![
                "index public.t_pkey in database app: bad".into(),
                "x".into(),
            ],
            checked: None,
        };
        write(dir.path(), &record);
        assert_eq!(read(dir.path()), Some(record.clone()));
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            describe(Some(&record), 61_000),
            "FAILED 1m ago (/b/x.tar.zst) at check: index public.t_pkey in database app: bad (and 1 more)"
        );
    }
}
