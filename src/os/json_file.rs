//! A small JSON record (status, remembered settings, backup record, backup manifest) written
//! atomically: a temp file beside it, its mode set, flushed when it must survive a crash, then
//! renamed over the old one, so a reader sees the old record or the new one, never half of one.

use crate::error::{IoContext, Result};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The mode of every state record (status, remembered settings, backup record): no state file
/// is readable by other users.
pub const PRIVATE: u32 = 0o600;

/// How far the write must go before the rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Renamed once written: enough for a record that is rewritten at every change.
    Rename,
    /// Flushed to disk before the rename (and the directory after it): a record that must
    /// outlive a crash.
    Sync,
}

/// Writes `value` as pretty JSON with a final newline to `path`, with `mode`.
pub fn write<T: Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
    durability: Durability,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".pgwarden-json.")
        .tempfile_in(dir)
        .io("cannot create a temp file in", dir)?;
    let mut json = serde_json::to_vec_pretty(value).expect("a record serialises");
    json.push(b'\n');
    temp.write_all(&json).io("cannot write", temp.path())?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .io("cannot set the mode of", temp.path())?;
    if durability == Durability::Sync {
        temp.as_file().sync_all().io("cannot flush", temp.path())?;
    }
    temp.persist(path)
        .map_err(|e| e.error)
        .io("cannot rename into", path)?;
    if durability == Durability::Sync
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_old_record_whole_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "old").unwrap();
        write(&path, &serde_json::json!({"a": 1}), 0o600, Durability::Sync).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
