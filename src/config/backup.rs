//! The backup keys: `wal_archive`, `backup_dir`, `backup_keep`, `backup_schedule`,
//! `backup_verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many scheduled backups are kept by default.
pub const DEFAULT_KEEP: u32 = 7;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupConfig {
    /// The continuous WAL archive (absolute), when enabled.
    pub wal_archive: Option<PathBuf>,
    /// Where `pgwarden backup` without a target (and the schedule) puts backups; `None`: beside
    /// the data directory (`<data dir>.backups`).
    pub dir: Option<PathBuf>,
    /// How many backups the retention keeps (the newest ones).
    pub keep: u32,
    /// `daily HH:MM` or `hourly :MM` (UTC), when scheduled backups are on.
    pub schedule: Option<String>,
    /// Whether each scheduled backup is verified after it is taken (`backup_verify`, default
    /// on): restored into a throwaway server and checked ([`crate::backup::verify`]).
    pub verify: bool,
}

/// Checks the keys, collecting problems.
pub fn resolve(
    wal_archive: Option<PathBuf>,
    dir: Option<PathBuf>,
    keep: Option<u32>,
    schedule: Option<String>,
    verify: Option<bool>,
    problems: &mut Vec<String>,
) -> BackupConfig {
    let absolute = |key: &str, p: PathBuf, problems: &mut Vec<String>| {
        let p = crate::os::paths::absolute(&p);
        if p.to_string_lossy().contains(['\'', '\n', '%']) {
            problems.push(format!(
                "{key} {}: a path with quotes, % or newlines cannot be used in archive_command",
                p.display()
            ));
        }
        p
    };
    let wal_archive = wal_archive.map(|p| absolute("wal_archive", p, problems));
    let dir = dir.map(|p| absolute("backup_dir", p, problems));
    let keep = keep.unwrap_or(DEFAULT_KEEP);
    if keep == 0 {
        problems.push("backup_keep = 0 would remove every backup; keep at least 1".into());
    }
    if let Some(s) = &schedule
        && let Err(e) = super::backup_schedule::Schedule::parse(s)
    {
        problems.push(format!("backup_schedule {s:?}: {e}"));
    }
    BackupConfig {
        wal_archive,
        dir,
        keep,
        schedule,
        verify: verify.unwrap_or(true),
    }
}

/// The server settings the WAL archive needs: `archive_mode = on` and pgwarden itself as the
/// `archive_command`. A hand-set `archive_mode`/`archive_command` conflicts.
pub fn add_server_settings(
    config: &BackupConfig,
    server: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    let Some(archive) = &config.wal_archive else {
        return;
    };
    for key in ["archive_command", "archive_library"] {
        if server.contains_key(key) {
            problems.push(format!(
                "server.{key} and wal_archive both set: wal_archive makes pgwarden the archive_command; remove one"
            ));
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pgwarden"));
    server.insert("archive_mode".into(), "on".into());
    server.insert("archive_command".into(), archive_command(&exe, archive));
}

/// `'<pgwarden>' archive-wal --to '<archive>' %f %p`.
pub fn archive_command(exe: &Path, archive: &Path) -> String {
    format!(
        "{} archive-wal --to {} %f %p",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&archive.to_string_lossy())
    )
}

/// `'<pgwarden>' archive-wal --from '<archive>' %f %p`.
pub fn restore_command(exe: &Path, archive: &Path) -> String {
    format!(
        "{} archive-wal --from {} %f %p",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&archive.to_string_lossy())
    )
}

/// `'text'` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
