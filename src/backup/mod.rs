//! Backups that restore: online base backups, restores, dev snapshots, the WAL archive.
//!
//! pgwarden's binaries may have no `pg_basebackup` (the npm builds are server-only), so the
//! physical backup is done here, with PostgreSQL's low-level API ("Making a Base Backup Using
//! the Low Level API" in its manual):
//! - [`base`]: `pgwarden backup` — `pg_backup_start` / `pg_backup_stop` on one session held
//!   open, the data directory streamed into a `.tar.zst` with the documented exclusions, the WAL
//!   from the start to the stop LSN kept by a temporary replication slot and put in the archive.
//! - [`manifest`]: the file beside each archive: the archive's and every member's SHA-256, the
//!   start/stop LSN and time. A restore checks it before it writes anything.
//! - [`restore`]: `pgwarden restore` — verify and plan everything, then unpack in place.
//! - [`target_time`]: `restore --to TIME` read as PostgreSQL reads `recovery_target_time`,
//!   before anything is stopped.
//! - [`in_place`]: the data directory restored into itself, atomic by the first launch's
//!   markers (it may be a mount point); an unfinished restore is recognised and cleared.
//! - [`aside`]: `restore --force` keeps the cluster it replaces (renamed beside it, or copied
//!   there from a mount point), and puts it back when the restore fails.
//! - [`tablespaces`]: tablespaces in backups (their files under a prefix of their own, the
//!   server's `tablespace_map`) and restores (original or `--tablespace OLD=NEW` locations).
//! - [`relaunch`]: starting a cluster again after a restore or a snapshot, with the arguments
//!   and environment its supervisor had (or the restore's own flags).
//! - [`snapshot`]: dev snapshots — the stopped cluster copied aside by name, swapped back;
//!   [`snapshot_spare`]: each snapshot's spare copy, made in the background, which a restore
//!   renames instead of copying.
//! - [`wal_archive`]: the continuous WAL archive (pgwarden is the `archive_command`), and
//!   [`schedule`] (it lives in [`crate::config::backup_schedule`], as config checks it): when the
//!   service's backups run (a systemd timer).
//! - [`retention`]: `backup_keep` — old backups and the archived WAL only they needed.
//! - [`record`]: `<state dir>/backup.json`, the last backup's time, size and result, for
//!   `status` (and the metrics exporter).
//! - [`verify`]: `pgwarden backup verify` and the drill after a scheduled backup — the backup
//!   restored into a throwaway server beside the running one, replayed and checked with
//!   `amcheck`; the last result in `<state dir>/verify.json`.

pub mod aside;
pub mod base;
pub mod in_place;
pub mod manifest;
pub mod record;
pub mod relaunch;
pub mod restore;
pub mod retention;
pub use crate::config::backup_schedule as schedule;
pub mod snapshot;
pub mod snapshot_spare;
pub mod snapshot_swap;
pub mod tablespaces;
pub mod target_time;
pub mod verify;
pub mod wal_archive;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The archive's file name suffix.
pub const ARCHIVE_SUFFIX: &str = ".tar.zst";
/// The manifest beside an archive: `<archive>.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The manifest path of an archive.
pub fn manifest_path(archive: &Path) -> std::path::PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(MANIFEST_SUFFIX);
    name.into()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second) in UTC of a Unix time in seconds (Howard Hinnant's
/// civil-from-days: no time zone database needed for UTC).
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `20261201T133005Z`: for file names (sorts by time).
pub fn stamp(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil((ms / 1000) as i64);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-12-01T13:30:05.123Z`: for people and for PostgreSQL (`recovery_target_time`).
pub fn rfc3339(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil((ms / 1000) as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

pub use crate::units::human_bytes;

/// A member path read from an archive or a manifest, accepted only if it is relative and made
/// of plain components (no `..`, no root, no `.`), so that joining it to a directory that holds
/// no symlinks stays inside it.
pub fn safe_relative(path: &str) -> Option<&Path> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let plain = !trimmed.is_empty()
        && !trimmed.contains('\0')
        && trimmed
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    plain.then_some(Path::new(trimmed))
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// fsync of a directory (its entries: a rename into it), best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        // 2026-12-01T13:30:05.123Z
        let ms = 1_796_131_805_123;
        assert_eq!(stamp(ms), "20261201T133005Z");
        assert_eq!(rfc3339(ms), "2026-12-01T13:30:05.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(stamp(951_782_400_000), "20000229T000000Z");
    }

    #[test]
    fn accepts_only_plain_relative_paths() {
        assert!(safe_relative("base/5/1234").is_some());
        assert!(safe_relative("PG_VERSION").is_some());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a/./b"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(12_300_000), "12.3 MB");
    }
}
