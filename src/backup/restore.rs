//! `pgwarden restore`: a base backup back into a data directory, atomically.
//!
//! 1. The manifest is read and the archive's size and SHA-256 are checked against it before
//!    anything is written ([`Manifest::verify_archive`]).
//! 2. The archive is unpacked into a staging sibling `.<name>.restore-<pid>` of the data
//!    directory. Archives are hostile input: only directories and regular files are accepted,
//!    every name must be plain and relative, files are created exclusively (`O_EXCL`,
//!    `O_NOFOLLOW`) in a tree that holds no symlinks, so nothing can land outside the staging
//!    directory. Every file is hashed as it is written and must match its manifest entry, in
//!    order, and every manifest entry must be there.
//! 3. For a point-in-time restore, `recovery.signal` and the recovery settings are added.
//! 4. The staging directory is flushed (syncfs) and renamed into place; an existing cluster
//!    (only with `--force`) is first renamed aside to `<name>.before-restore-<time>`.
//!
//! Started, the server finds `backup_label`, replays the WAL in `pg_wal/` from the backup's
//! checkpoint to its end (past the stop LSN: everything committed before `pg_backup_stop`
//! returned), and opens.

use super::manifest::Manifest;
use crate::error::{Error, IoContext, Result};
use crate::privilege::RunAs;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Point-in-time recovery from the WAL archive.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// `recovery_target_time`, as PostgreSQL reads it.
    pub target_time: String,
    /// The `restore_command` that fetches segments from the archive.
    pub restore_command: String,
}

/// Reads the manifest of `archive` and checks the archive against it.
pub fn verify(archive: &Path) -> Result<Manifest> {
    let manifest = Manifest::read_for(archive)?;
    let major = crate::config::MAJOR.to_string();
    if manifest.postgresql_major != major {
        return Err(Error::Backup {
            what: format!(
                "backup {} holds a PostgreSQL {} cluster; pgwarden runs PostgreSQL {major}",
                archive.display(),
                manifest.postgresql_major
            ),
        });
    }
    manifest.verify_archive(archive)?;
    Ok(manifest)
}

/// True when `dir` exists and has entries.
pub fn non_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some())
}

/// The staging directory, removed unless committed.
pub struct Staging {
    pub path: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn create(data_dir: &Path, what: &str, run_as: &RunAs) -> Result<Staging> {
        let parent = data_dir.parent().ok_or_else(|| Error::Backup {
            what: format!("{} has no parent directory", data_dir.display()),
        })?;
        std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
        let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
        let path = parent.join(format!(".{name}.{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        run_as.own_dir(&path, 0o700)?;
        Ok(Staging {
            path,
            committed: false,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn give(path: &Path, run_as: &RunAs) -> Result<()> {
    if run_as.switch {
        std::os::unix::fs::lchown(path, Some(run_as.uid.as_raw()), Some(run_as.gid.as_raw()))
            .map_err(|e| Error::Privilege {
                what: format!(
                    "cannot give {} to user {}: {e}",
                    path.display(),
                    run_as.name
                ),
            })?;
    }
    Ok(())
}

/// Unpacks `archive` into `staging`, checking every file against `manifest`.
pub fn unpack(archive: &Path, manifest: &Manifest, staging: &Path, run_as: &RunAs) -> Result<()> {
    let bad = |why: String| Error::Backup {
        what: format!(
            "backup {} is damaged: {why}; nothing was changed\nhelp: restore another backup",
            archive.display()
        ),
    };
    let file = std::fs::File::open(archive).io("cannot open backup", archive)?;
    let decoder = zstd::Decoder::new(file).map_err(|e| bad(format!("not zstd data ({e})")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut expected = manifest.files.iter();
    let mut buf = vec![0u8; 1 << 20];
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable archive ({e})")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| bad("a member name is not UTF-8".into()))?;
        let rel = super::safe_relative(&name)
            .ok_or_else(|| bad(format!("member {name:?} is not a plain relative path")))?
            .to_path_buf();
        let target = staging.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match std::fs::create_dir(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {}
                    Err(e) => return Err(e).io("cannot create directory", &target),
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))
                    .io("cannot set the mode of", &target)?;
                give(&target, run_as)?;
            }
            tar::EntryType::Regular => {
                let want = expected.next().ok_or_else(|| {
                    bad(format!("{name} is in the archive but not in the manifest"))
                })?;
                let rel_text = rel.to_string_lossy();
                if want.path != rel_text {
                    return Err(bad(format!(
                        "found {rel_text} where the manifest lists {}",
                        want.path
                    )));
                }
                if let Some(parent) = target.parent()
                    && !parent.is_dir()
                {
                    return Err(bad(format!("{name} comes before its directory")));
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)
                    .io("cannot create", &target)?;
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| bad(format!("{name} cannot be read ({e})")))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).io("cannot write", &target)?;
                    size += n as u64;
                }
                let sha = hex::encode(hasher.finalize());
                if size != want.size || sha != want.sha256 {
                    return Err(bad(format!(
                        "{name} has {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}",
                        want.size, want.sha256
                    )));
                }
                drop(out);
                give(&target, run_as)?;
            }
            other => {
                return Err(bad(format!(
                    "member {name:?} is a {other:?}; a backup holds only files and directories"
                )));
            }
        }
    }
    if let Some(missing) = expected.next() {
        return Err(bad(format!(
            "{} is in the manifest but not in the archive",
            missing.path
        )));
    }
    Ok(())
}

/// Adds `recovery.signal` and the settings of a point-in-time recovery to an unpacked backup.
pub fn configure_recovery(staging: &Path, recovery: &Recovery, run_as: &RunAs) -> Result<()> {
    let signal = staging.join("recovery.signal");
    std::fs::write(&signal, b"").io("cannot write", &signal)?;
    give(&signal, run_as)?;
    let conf = staging.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    text.push_str(&format!(
        "# pgwarden restore --to: point-in-time recovery (ignored once recovery.signal is gone)\n\
         restore_command = {}\nrecovery_target_time = {}\nrecovery_target_action = 'promote'\n\
         # no connections before the promotion: whoever waits for ready sees the recovered data\n\
         hot_standby = 'off'\n",
        quote(&recovery.restore_command),
        quote(&recovery.target_time)
    ));
    std::fs::write(&conf, text).io("cannot write", &conf)?;
    give(&conf, run_as)
}

/// Flushes `staging` and renames it to `data_dir`; an existing `data_dir` is first renamed
/// aside, and that path returned.
pub fn install(mut staging: Staging, data_dir: &Path) -> Result<Option<PathBuf>> {
    let handle = std::fs::File::open(&staging.path).io("cannot open", &staging.path)?;
    nix::unistd::syncfs(&handle).map_err(|e| Error::Backup {
        what: format!(
            "cannot flush the restored cluster in {} to disk: {e}",
            staging.path.display()
        ),
    })?;
    drop(handle);
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let aside = if non_empty(data_dir) {
        let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
        let aside = parent.join(format!(
            "{name}.before-restore-{}",
            super::stamp(super::now_ms())
        ));
        std::fs::rename(data_dir, &aside).io("cannot move the old cluster aside to", &aside)?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&staging.path, data_dir) {
        if let Some(aside) = &aside {
            let _ = std::fs::rename(aside, data_dir);
        }
        return Err(e).io("cannot move the restored cluster to", data_dir);
    }
    staging.committed = true;
    super::sync_dir(parent);
    Ok(aside)
}
