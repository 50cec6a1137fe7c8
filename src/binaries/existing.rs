//! An installation already on this machine (`--binaries /usr/lib/postgresql/16`): checked,
//! validated and used in place. Nothing here writes to it.
//!
//! Its programs run with the rights of whoever starts pgwarden's children, and a `binaries`
//! setting can name any directory, so before anything in it runs the installation must pass the
//! binaries cache's ownership rule ([`crate::instance::private_dir::untrusted_ancestor`]: it and every
//! directory above it owned by root or the current user and writable by no one else) — and,
//! because pgwarden did not write what is inside it as it writes the cache, so must everything in
//! it (a root-owned directory whose `bin/` another user owns is no safer), symlinks judged where
//! they lead. `/usr/lib/postgresql/16` from a package passes. Even then its `postgres --version`
//! runs as the unprivileged user ([`super::postgres_version`]), never as root.

use super::{Install, Policy, postgres_version};
use crate::config::{MAJOR, MAJORS, majors_text};
use crate::error::{Error, IoContext, Result};
use crate::instance::private_dir::{foreign_or_writable, untrusted_ancestor};
use std::path::{Path, PathBuf};

/// Checks that `dir` holds a runnable PostgreSQL 16 (`bin/postgres --version`, `bin/initdb`)
/// that no other user could have written to.
pub fn validate(dir: &Path, policy: &Policy) -> Result<Install> {
    let refuse = |why: String, help: &str| Error::Binaries {
        what: format!(
            "{} is not a usable PostgreSQL {MAJOR} installation: {why}\nhelp: {help}",
            dir.display()
        ),
    };
    if !dir.is_dir() {
        return Err(refuse(
            "no such directory".into(),
            "name the directory that holds bin/postgres, e.g. /usr/lib/postgresql/16",
        ));
    }
    check_owner(dir)?;
    let postgres = dir.join("bin/postgres");
    if !postgres.is_file() {
        return Err(refuse(
            "it has no bin/postgres".into(),
            "name the directory that holds bin/postgres (on Debian: apt install postgresql-16, \
             then --binaries /usr/lib/postgresql/16)",
        ));
    }
    let version = postgres_version(&postgres, policy)?;
    if !MAJORS.contains(&version.major) {
        return Err(refuse(
            format!(
                "bin/postgres is PostgreSQL {}.{}",
                version.major, version.minor
            ),
            &format!(
                "pgwarden runs PostgreSQL {}; point --binaries at a {MAJOR}.x installation",
                majors_text()
            ),
        ));
    }
    if !dir.join("bin/initdb").is_file() {
        return Err(refuse(
            "it has no bin/initdb".into(),
            "install the server package (not only the client) of PostgreSQL 16",
        ));
    }
    Ok(Install {
        dir: dir.to_path_buf(),
        version,
    })
}

/// Refuses (exit 2) an existing installation that another user could have written to: the
/// directory, a directory above it, or anything inside it. Runs nothing.
pub fn check_owner(dir: &Path) -> Result<()> {
    let canonical = dir.canonicalize().io("cannot resolve", dir)?;
    let found = match untrusted_ancestor(&canonical)? {
        Some(found) => Some(found),
        None => untrusted_inside(&canonical)?,
    };
    match found {
        None => Ok(()),
        Some((at, problem)) => Err(Error::UntrustedPrograms {
            what: "existing installation",
            dir: dir.to_path_buf(),
            at,
            problem,
            help: "use an installation that only root (or you) can write to, nor any directory \
                   above it, such as /usr/lib/postgresql/16 (apt install postgresql-16); or copy \
                   this one to such a place after checking what it holds"
                .to_string(),
        }),
    }
}

/// The first entry below `dir` (not following symlinks) that another user owns or may write to;
/// a symlink is judged by where it leads, and every directory above that.
fn untrusted_inside(dir: &Path) -> Result<Option<(PathBuf, String)>> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).io("cannot read", &at)? {
            let path = entry.io("cannot read", &at)?.path();
            let meta = std::fs::symlink_metadata(&path).io("cannot read", &path)?;
            if meta.file_type().is_symlink() {
                if let Some(found) = untrusted_ancestor(&path)? {
                    return Ok(Some(found));
                }
                continue;
            }
            if let Some(problem) = foreign_or_writable(&meta, true) {
                return Ok(Some((path, problem)));
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/postgres"), "#!/bin/sh\n").unwrap();
        for p in [dir, &dir.join("bin")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(
            dir.join("bin/postgres"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn an_installation_only_its_owner_can_write_passes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("16");
        layout(&dir);
        check_owner(&dir).unwrap();
    }

    #[test]
    fn anything_inside_that_others_can_write_is_refused_by_name() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("16");
        layout(&dir);
        std::fs::set_permissions(dir.join("bin"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_owner(&dir).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains(&format!("{}:", dir.display())), "{text}");
        assert!(
            text.contains("/16/bin is writable by other users"),
            "{text}"
        );
        assert!(text.contains("help:"), "{text}");
    }

    #[test]
    fn a_symlink_is_judged_where_it_leads() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("16");
        layout(&dir);
        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join("psql"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(open.join("psql"), dir.join("bin/psql")).unwrap();
        let text = check_owner(&dir).unwrap_err().to_string();
        assert!(text.contains("/open is writable by other users"), "{text}");
    }
}
