//! An installation already on this machine (`--binaries /usr/lib/postgresql/16`): validated and
//! used in place. Nothing here writes to it.

use super::{Install, postgres_version};
use crate::config::MAJOR;
use crate::error::{Error, Result};
use std::path::Path;

/// Checks that `dir` holds a runnable PostgreSQL 16 (`bin/postgres --version`, `bin/initdb`).
pub fn validate(dir: &Path) -> Result<Install> {
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
    let postgres = dir.join("bin/postgres");
    if !postgres.is_file() {
        return Err(refuse(
            "it has no bin/postgres".into(),
            "name the directory that holds bin/postgres (on Debian: apt install postgresql-16, \
             then --binaries /usr/lib/postgresql/16)",
        ));
    }
    let version = postgres_version(&postgres)?;
    if version.major != MAJOR {
        return Err(refuse(
            format!(
                "bin/postgres is PostgreSQL {}.{}",
                version.major, version.minor
            ),
            &format!(
                "pgwarden runs PostgreSQL {MAJOR} only; point --binaries at a {MAJOR}.x installation"
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
