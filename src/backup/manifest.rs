//! The manifest beside every backup archive (`<archive>.manifest.json`).
//!
//! It is written last, after the archive is complete and on disk, so an archive without a
//! manifest is an unfinished backup. It holds the archive's own size and SHA-256 (checked
//! before a restore writes anything) and every member's size and SHA-256 (checked while the
//! restore unpacks, before the staging directory is renamed into place), plus what the server
//! said: the start and stop LSN, the timeline, the times, the system identifier.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The layout of a backup without tablespaces (every pgwarden reads it).
pub const FORMAT: u32 = 1;
/// The layout of a backup with tablespaces ([`Manifest::tablespaces`]): a pgwarden that knows
/// only [`FORMAT`] refuses it rather than restoring it without them.
pub const FORMAT_TABLESPACES: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_by: String,
    /// The label given to `pg_backup_start`.
    pub label: String,
    /// The PostgreSQL major version of the cluster (`PG_VERSION`).
    pub postgresql_major: String,
    /// `pg_control_system().system_identifier`, as text.
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// Unix epoch milliseconds, and the same as RFC 3339 text.
    pub start_ms: u64,
    pub stop_ms: u64,
    pub start_time: String,
    pub stop_time: String,
    /// The first and last WAL segment in the archive's `pg_wal/`.
    pub wal_first: String,
    pub wal_last: String,
    pub archive: ArchiveSum,
    /// Every regular file in the archive, in archive order.
    pub files: Vec<FileSum>,
    /// Bytes of the files (uncompressed).
    pub total_bytes: u64,
    /// The cluster's WAL segment size, in bytes.
    #[serde(default = "default_segment_size")]
    pub wal_segment_size: u64,
    /// The tablespaces, whose files are under `pgwarden.tablespaces/<oid>/` in the archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<super::tablespaces::TablespaceEntry>,
}

fn default_segment_size() -> u64 {
    16 << 20
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSum {
    /// The archive's file name (informative: a renamed archive still restores).
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// Reads and parses the manifest of `archive`.
    pub fn read_for(archive: &Path) -> Result<Manifest> {
        let path = super::manifest_path(archive);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Backup {
            what: format!(
                "cannot read the manifest {} of backup {}: {e}\n\
                 help: a backup is the archive plus its manifest; an archive without one is unfinished or was copied alone",
                path.display(),
                archive.display()
            ),
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Backup {
            what: format!(
                "the manifest {} is not a pgwarden backup manifest: {e}",
                path.display()
            ),
        })?;
        if manifest.format != FORMAT && manifest.format != FORMAT_TABLESPACES {
            return Err(Error::Backup {
                what: format!(
                    "the manifest {} has format {}; this pgwarden reads formats {FORMAT} and {FORMAT_TABLESPACES}\n\
                     help: restore it with the pgwarden version that made it ({})",
                    path.display(),
                    manifest.format,
                    manifest.created_by
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes the manifest of `archive` durably (temp file, fsync, rename).
    pub fn write_for(&self, archive: &Path) -> Result<()> {
        let path = super::manifest_path(archive);
        crate::os::json_file::write(&path, self, 0o644, crate::os::json_file::Durability::Sync)
    }

    /// Checks the archive file's size and SHA-256 against the manifest, reading it once.
    pub fn verify_archive(&self, archive: &Path) -> Result<()> {
        let mut file = std::fs::File::open(archive).io("cannot open backup", archive)?;
        let size = file.metadata().io("cannot read", archive)?.len();
        let corrupt = |why: String| Error::Backup {
            what: format!(
                "backup {} does not match its manifest ({why}): the file is damaged or incomplete; nothing was changed\n\
                 help: restore another backup (`ls {}`)",
                archive.display(),
                archive.parent().unwrap_or(Path::new(".")).display()
            ),
        };
        if size != self.archive.size {
            return Err(corrupt(format!(
                "{size} bytes, the manifest says {}",
                self.archive.size
            )));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).io("cannot read backup", archive)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let sha = hex::encode(hasher.finalize());
        if sha != self.archive.sha256 {
            return Err(corrupt(format!(
                "sha256 {sha}, the manifest says {}",
                self.archive.sha256
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(archive: &Path) -> Manifest {
        let bytes = std::fs::read(archive).unwrap();
        Manifest {
            format: FORMAT,
            created_by: "pgwarden test".into(),
            label: "l".into(),
            postgresql_major: "16".into(),
            system_identifier: "1".into(),
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_ms: 1,
            stop_ms: 2,
            start_time: String::new(),
            stop_time: String::new(),
            wal_first: String::new(),
            wal_last: String::new(),
            archive: ArchiveSum {
                name: "a".into(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
            files: vec![],
            total_bytes: 0,
            wal_segment_size: 16 << 20,
            tablespaces: vec![],
        }
    }

    #[test]
    fn round_trips_and_catches_a_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("b.tar.zst");
        std::fs::write(&archive, b"some archive bytes").unwrap();
        let manifest = sample(&archive);
        manifest.write_for(&archive).unwrap();
        let read = Manifest::read_for(&archive).unwrap();
        assert_eq!(read, manifest);
        read.verify_archive(&archive).unwrap();
        std::fs::write(&archive, b"some archive bytez").unwrap();
        let err = read.verify_archive(&archive).unwrap_err().to_string();
        assert!(err.contains("does not match its manifest"), "{err}");
    }
}
