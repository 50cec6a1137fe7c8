//! The checks before the server is touched, each a refusal (exit 2) that names the cause and
//! the fix: the versions, the two installations' programs, the directories the switch renames,
//! and the room a copy needs. pg_upgrade's own `--check` (required libraries, removed features,
//! incompatible types) runs after these, once the new cluster exists ([`super::pg_upgrade`]).

use super::state::Mode;
use crate::binaries::Install;
use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What pg_upgrade runs from the old installation (its `check_bin_dir`).
pub const OLD_PROGRAMS: [&str; 3] = ["postgres", "pg_ctl", "pg_controldata"];
/// What it runs from the new one.
pub const NEW_PROGRAMS: [&str; 10] = [
    "postgres",
    "pg_ctl",
    "pg_controldata",
    "initdb",
    "pg_upgrade",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "psql",
    "vacuumdb",
];

/// Room kept free beyond the copy: the new cluster's WAL and pg_upgrade's schema dumps.
pub const SPARE_BYTES: u64 = 256 << 20;

fn refuse(what: String) -> Error {
    Error::UpgradeRefused { what }
}

/// The new version is a later major than the cluster's, which the old binaries run.
pub fn versions(cluster_major: u64, old: &Install, new: &Install) -> Result<()> {
    if old.version.major != cluster_major {
        return Err(refuse(format!(
            "the cluster is PostgreSQL {cluster_major}, but the instance's binaries are PostgreSQL {}\n\
             help: start it with --version {cluster_major} once (so that its binaries are the cluster's), then upgrade",
            old.version
        )));
    }
    if new.version.major <= cluster_major {
        return Err(refuse(format!(
            "PostgreSQL {} is not a later major version than the cluster's ({cluster_major})\n\
             help: a minor release needs no upgrade: `pgwarden restart --version {}` uses it; \
             a downgrade is a dump and restore",
            new.version, new.version
        )));
    }
    Ok(())
}

/// Both installations have what pg_upgrade runs.
pub fn programs(old: &Install, new: &Install) -> Result<()> {
    let missing = |install: &Install, programs: &[&str]| -> Vec<String> {
        programs
            .iter()
            .filter(|p| !install.bin(p).is_file())
            .map(|p| p.to_string())
            .collect()
    };
    for (install, programs, role) in [
        (old, &OLD_PROGRAMS[..], "old"),
        (new, &NEW_PROGRAMS[..], "new"),
    ] {
        let lacking = missing(install, programs);
        if !lacking.is_empty() {
            return Err(refuse(format!(
                "the {role} installation ({}, PostgreSQL {}) lacks {}, which pg_upgrade needs\n\
                 help: install {}",
                install.dir.display(),
                install.version,
                lacking.join(", "),
                crate::binaries::clients::where_to_get(install)
            )));
        }
    }
    Ok(())
}

/// The data directory can be renamed (not a mount point: the switch renames it) and the
/// directories the upgrade makes beside it are free.
pub fn directories(data_dir: &Path, siblings: &[&Path]) -> Result<()> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    if std::fs::symlink_metadata(data_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refuse(format!(
            "the data directory {} is a symbolic link; the upgrade switches clusters by renaming \
             the data directory, which would move the link, not the cluster\n\
             help: point --data-dir at the directory it leads to ({})",
            data_dir.display(),
            std::fs::canonicalize(data_dir)
                .map_or_else(|_| "its target".to_string(), |p| p.display().to_string())
        )));
    }
    let (Ok(dir), Ok(up)) = (std::fs::metadata(data_dir), std::fs::metadata(parent)) else {
        return Err(refuse(format!(
            "cannot read {} or its parent",
            data_dir.display()
        )));
    };
    if dir.dev() != up.dev() {
        return Err(refuse(format!(
            "the data directory {} is a mount point; the upgrade makes the new cluster beside it \
             and switches by renaming, which a mount point cannot be\n\
             help: mount the volume one level up and use a directory in it as the data directory \
             (move the cluster into it while the server is stopped)",
            data_dir.display()
        )));
    }
    for sibling in siblings {
        if std::fs::symlink_metadata(sibling).is_ok() {
            return Err(refuse(format!(
                "{} exists; the upgrade makes its own directory there\n\
                 help: move it away (a rolled-back or finished upgrade leaves none), then upgrade again",
                sibling.display()
            )));
        }
    }
    Ok(())
}

/// The room a copy of the cluster needs on the filesystem the new cluster goes to. `--link`
/// and `--clone` need only [`SPARE_BYTES`].
pub fn space(data_dir: &Path, mode: Mode) -> Result<()> {
    let needed = match mode {
        Mode::Copy => tree_bytes(data_dir, true) + SPARE_BYTES,
        Mode::Clone | Mode::Link => SPARE_BYTES,
    };
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let stat = nix::sys::statvfs::statvfs(parent).map_err(|e| {
        refuse(format!(
            "cannot read the free space of {}: {e}",
            parent.display()
        ))
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < needed {
        return Err(refuse(format!(
            "not enough room for the upgrade on {}: {} MB free, {} MB needed ({})\n\
             help: free some room; or `--link` (no copy: fast, but no rollback once the new \
             server has started), or `--clone` on a filesystem with reflinks (btrfs, XFS)",
            parent.display(),
            free >> 20,
            needed >> 20,
            match mode {
                Mode::Copy => "a copy of the cluster's files and room for its WAL",
                _ => "room for the new cluster's WAL and catalog",
            }
        )));
    }
    Ok(())
}

/// The bytes of the files under `dir` (without `pg_wal` at the top when `skip_wal`: pg_upgrade
/// copies no WAL).
pub fn tree_bytes(dir: &Path, skip_wal: bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        if skip_wal && entry.file_name() == "pg_wal" {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += tree_bytes(&entry.path(), false);
        } else {
            total += meta.len();
        }
    }
    total
}

/// Whether `dir`'s filesystem makes reflinks (FICLONE): two scratch files, one cloned from the
/// other, both removed. `dir` is the new cluster, the server user's: the files are created
/// exclusively (whatever that user put at their names removed first), never written through a
/// link to another's file.
pub fn clone_supported(dir: &Path) -> bool {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    const FICLONE: nix::libc::c_ulong = 0x4004_9409;
    let source = dir.join(".pgwarden-clone-test");
    let target = dir.join(".pgwarden-clone-test.clone");
    let create = |path: &Path| {
        let _ = std::fs::remove_file(path);
        std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    };
    let result = (|| -> std::io::Result<bool> {
        let mut from = create(&source)?;
        from.write_all(b"pgwarden")?;
        let to = create(&target)?;
        // SAFETY: both descriptors are open for the duration of the call.
        let rc = unsafe { nix::libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
        Ok(rc == 0)
    })();
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&target);
    result.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use semver::Version;
    use std::os::unix::fs::PermissionsExt;

    /// The reflink probe writes into the new cluster, the server user's: a symlink that user
    /// put at the probe's name leaves its target as it was.
    #[test]
    fn the_reflink_probe_never_writes_through_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("roots-file");
        std::fs::write(&victim, "root's content\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir = root.path().join("data.upgrade-17");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".pgwarden-clone-test")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".pgwarden-clone-test.clone")).unwrap();
        clone_supported(&dir);
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "root's content\n"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "probe files left"
        );
    }

    fn install(version: &str) -> Install {
        Install {
            dir: "/nowhere".into(),
            version: Version::parse(version).unwrap(),
        }
    }

    #[test]
    fn only_a_later_major_is_an_upgrade() {
        versions(16, &install("16.14.0"), &install("17.10.0")).unwrap();
        versions(15, &install("15.19.0"), &install("16.14.0")).unwrap();
        let same = versions(16, &install("16.14.0"), &install("16.15.0")).unwrap_err();
        assert!(same.to_string().contains("minor release"), "{same}");
        assert_eq!(same.exit_code(), 2);
        let down = versions(16, &install("16.14.0"), &install("15.19.0")).unwrap_err();
        assert!(down.to_string().contains("not a later major"), "{down}");
        let mismatch = versions(15, &install("16.14.0"), &install("17.10.0")).unwrap_err();
        assert!(mismatch.to_string().contains("--version 15"), "{mismatch}");
    }

    #[test]
    fn a_copy_needs_the_clusters_size_and_the_spare_room() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        std::fs::write(data.join("base/1/123"), vec![0u8; 5000]).unwrap();
        std::fs::write(
            data.join("pg_wal/000000010000000000000001"),
            vec![0u8; 7000],
        )
        .unwrap();
        assert_eq!(tree_bytes(&data, true), 5000);
        assert_eq!(tree_bytes(&data, false), 12000);
    }

    #[test]
    fn an_existing_sibling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let kept = dir.path().join("data.pg16");
        std::fs::create_dir_all(&data).unwrap();
        directories(&data, &[&kept]).unwrap();
        std::fs::create_dir_all(&kept).unwrap();
        let err = directories(&data, &[&kept]).unwrap_err();
        assert!(err.to_string().contains("data.pg16 exists"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let err = directories(&link, &[]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
