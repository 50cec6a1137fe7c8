//! The cluster: find the data directory's cluster, or create it on first launch, in place and
//! atomically by marker.
//!
//! First launch runs initdb (UTF8, scram-sha-256 for TCP *and* the Unix socket, the configured
//! user as superuser, its password through a 0600 file removed afterwards), then creates
//! pgwarden's administration role (its access set up by `admin_access`, used by
//! [`crate::supervisor::reconcile`]) and the configured database in a single-user backend, or,
//! with init scripts, on a temporary server on the Unix socket only
//! ([`crate::postmaster::temp_server`]) that then runs them ([`crate::cluster::init_scripts`]). Or, with `data_from`, it copies a container's
//! stopped cluster instead ([`take_over`]), under the same markers.
//!
//! Where: always inside the data directory itself, which may be missing (created), or an
//! existing empty directory — a mount point in particular (a disk, a volume, a tmpfs), which
//! cannot be replaced by a rename. Before initdb runs, the marker [`data_dir::CREATING`] goes
//! into the data directory; initdb builds the cluster in the subdirectory
//! [`data_dir::STAGING`] (initdb needs an empty directory of its own), whose entries are moved
//! up when it is complete and flushed to disk; the completion marker [`MARKER`] is written
//! last, then the creating marker removed. A launch killed at any point leaves either a
//! directory marked "being created" without the completion marker — recognised by the next
//! launch as a half-made cluster of pgwarden's, cleared and made again — or a complete
//! cluster. A launch that fails (a failing init script, say) puts the directory back as it was
//! (missing, or empty). A directory pgwarden did not mark is never cleared.
//!
//! Why one path rather than the earlier staging sibling renamed over the data directory: the
//! rename cannot work for a mount point, and a second path for mount points would be a second
//! way to get atomicity right. The markers work for both, and keep a half-made cluster on
//! the volume it belongs to. Their cost over the rename: a few renames within one directory,
//! and a second syncfs after the completion marker (little is left to flush by then); not yet
//! measured separately in the benchmark (row 2 covers first launches as a whole).
//! An existing cluster is never re-initialised.

mod admin_access;
pub mod collation;
mod data_dir;
mod flush;
pub mod init_scripts;
mod read_only_copy;
mod settings;
pub mod spare;
pub mod take_over;
mod template;
pub mod template_fill;

pub use data_dir::{Before, CREATING, DataDir, MARKER, STAGING, empty_except_creating, examine};
use flush::BackgroundFlush;
pub use flush::{flush_to_disk, sync_dir};
pub use settings::{SETTINGS_FILE, write_server_settings};

use crate::binaries::Install;
use crate::config::{ADMIN_ROLE, Config};
use crate::error::{Error, IoContext, Result};
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use crate::postmaster::temp_server::TempServer;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::{info, warn};

/// A step of making a cluster: an info line for a first launch, a debug line for the
/// background template fill (the one cancellable maker), which says only when it is done.
macro_rules! step {
    ($cancel:expr, $($field:tt)+) => {
        if $cancel.can_be_cancelled() {
            tracing::debug!($($field)+)
        } else {
            tracing::info!($($field)+)
        }
    };
}

/// A data directory holding a PostgreSQL 16 cluster, ready to be started.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub data_dir: PathBuf,
    /// Private directory (0700, owned by the server's user) for the server's Unix socket.
    pub socket_dir: PathBuf,
    /// True when this launch created the cluster with initdb, from this configuration. A
    /// cluster taken over ([`take_over`]) is not: its roles were made by the container, so the
    /// reconcile checks them before the ready line.
    pub created: bool,
    /// The template cache entry to fill in the background once the server is ready
    /// ([`template_fill`]): set when this launch ran initdb for a persistent cluster that the
    /// cache could hold.
    pub fill_template: Option<PathBuf>,
    /// The template whose copy is this data directory's reset spare ([`spare::reset`]): set
    /// for a persistent cluster the template cache can hold, when spares are on; for a
    /// throwaway one, the template the pool's entries copy ([`spare::pool`]), when the pool is on.
    pub spare_template: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Marker<'a> {
    initialized_by: &'a str,
    postgresql: String,
    user: &'a str,
    database: &'a str,
    created_unix: u64,
    /// The directory a taken-over cluster was copied from ([`take_over`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    taken_over_from: Option<String>,
}

/// Finds or creates the cluster for `config` with the binaries of `install`, as `run_as`.
/// Must be called with the instance lock held.
pub fn prepare(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    state_dir: &Path,
) -> Result<Cluster> {
    let data_dir = &config.data_dir;
    let found = check(config, run_as)?;
    let socket_dir = state_dir.join("socket");
    run_as.own_dir(&socket_dir, 0o700)?;

    let mut fill_template = None;
    let spares_on = if config.ephemeral {
        config.ephemeral_pool > 0
    } else {
        config.spare
    };
    let spare_template =
        (spares_on && cacheable(config)?).then(|| template::template_dir(config, install, run_as));
    let created = match found {
        DataDir::Cluster { ours } => {
            if !ours {
                warn!(
                    data_dir = %data_dir.display(),
                    "this cluster was not created by pgwarden (no {MARKER}); using it as it is: \
                     its users, passwords and databases were not checked"
                );
            }
            false
        }
        DataDir::Missing | DataDir::Empty => match &config.data_from {
            Some(source) => {
                take_over::take_over(config, install, run_as, &socket_dir, source)?;
                false
            }
            None => {
                fill_template = initialise(config, install, run_as, state_dir, &socket_dir)?;
                true
            }
        },
        DataDir::HalfMade => {
            warn!(
                data_dir = %data_dir.display(),
                "an earlier first launch or restore did not finish this cluster ({CREATING} without \
                 {MARKER}); clearing it and starting over"
            );
            data_dir::clear_half_made(data_dir)?;
            match &config.data_from {
                Some(source) => {
                    take_over::take_over(config, install, run_as, &socket_dir, source)?;
                    false
                }
                None => {
                    fill_template = initialise(config, install, run_as, state_dir, &socket_dir)?;
                    true
                }
            }
        }
    };
    write_server_settings(data_dir, &config.server, run_as)?;
    Ok(Cluster {
        data_dir: data_dir.clone(),
        socket_dir,
        created,
        fill_template,
        spare_template,
    })
}

/// Whether the template cache can hold what a first launch of `config` makes: initdb and the
/// bootstrap only (init scripts and a separate WAL directory make a cluster of its own).
/// The template cluster a first launch of `config` copies (what a spare or a pool entry is a
/// copy of), as [`prepare`] finds it; `None` when `config`'s clusters are not made from the
/// template cache (init scripts, a separate WAL directory).
pub fn template_of(config: &Config, install: &Install, run_as: &RunAs) -> Result<Option<PathBuf>> {
    Ok(cacheable(config)?.then(|| template::template_dir(config, install, run_as)))
}

fn cacheable(config: &Config) -> Result<bool> {
    let has_scripts = match &config.init_dir {
        Some(dir) => !init_scripts::list(dir)?.is_empty(),
        None => false,
    };
    Ok(!has_scripts && config.initdb_waldir.is_none())
}

/// Every check `run` makes before it changes anything, and `doctor` makes too: the data
/// directory ([`examine`]) and, for a new cluster, the separate WAL directory.
pub fn check(config: &Config, run_as: &RunAs) -> Result<DataDir> {
    let found = examine(&config.data_dir, run_as, config.major())?;
    take_over::check_source(config)?;
    if !matches!(found, DataDir::Cluster { .. })
        && config.data_from.is_none()
        && let Some(waldir) = &config.initdb_waldir
    {
        check_waldir(waldir, run_as)?;
    }
    Ok(found)
}

/// True when `data_dir` holds a complete cluster (`PG_VERSION`, as the image checks, and no
/// unfinished first launch).
pub fn is_initialised(data_dir: &Path) -> bool {
    matches!(data_dir::inspect(data_dir), Ok(DataDir::Cluster { .. }))
}

/// Puts the data directory (and a separate WAL directory) back as they were unless the new
/// cluster was committed: removes what this launch wrote, the directory itself if this launch
/// created it, else restores its mode and owner.
struct Creation {
    data_dir: PathBuf,
    before: Before,
    /// `initdb_waldir`, and whether this launch created it (else it was empty).
    waldir: Option<(PathBuf, bool)>,
    committed: bool,
}

impl Creation {
    /// Marks the data directory as being created ([`CREATING`], made first) and makes the
    /// empty staging subdirectory the new cluster is built in; returns the guard that puts
    /// everything back unless [`Creation::commit`] is reached, and the staging directory.
    fn begin(config: &Config, run_as: &RunAs) -> Result<(Creation, PathBuf)> {
        let data_dir = &config.data_dir;
        let before = Before::of(data_dir);
        if !before.existed()
            && let Some(parent) = data_dir.parent()
        {
            std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
        }
        let creation = Creation {
            data_dir: data_dir.clone(),
            before,
            waldir: None,
            committed: false,
        };
        run_as.own_dir(data_dir, 0o700)?;
        write_owned(
            &data_dir.join(CREATING),
            concat!(
                "This cluster is being created by pgwarden ",
                env!("CARGO_PKG_VERSION"),
                ". Without pgwarden.json beside this file it is unfinished,\n\
                 and the next `pgwarden run` clears this directory and initialises it again.\n"
            ),
            run_as,
        )?;
        if !config.ephemeral {
            sync_dir(data_dir);
        }
        let staging = data_dir.join(STAGING);
        run_as.own_dir(&staging, 0o700)?;
        Ok((creation, staging))
    }

    /// Moves the finished cluster up from `staging`, makes it durable, writes the completion
    /// marker and removes the creating marker.
    fn commit(
        &mut self,
        config: &Config,
        install: &Install,
        run_as: &RunAs,
        staging: &Path,
        taken_over_from: Option<&Path>,
    ) -> Result<()> {
        let data_dir = &config.data_dir;
        // initdb and the temporary server wrote without fsync (and a template copy is plain
        // file copies): one syncfs() makes the cluster (and a separate WAL directory) durable
        // before the completion marker says it is complete. A throwaway cluster needs no
        // durability.
        publish(staging, data_dir)?;
        if !config.ephemeral {
            flush_to_disk(data_dir)?;
            if let Some((waldir, _)) = &self.waldir {
                flush_to_disk(waldir)?;
            }
        }
        write_marker(config, install, run_as, data_dir, taken_over_from)?;
        if !config.ephemeral {
            flush_to_disk(data_dir)?;
        }
        self.committed = true;
        let creating = data_dir.join(CREATING);
        std::fs::remove_file(&creating).io("cannot remove", creating)
    }
}

impl Drop for Creation {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // The completion marker can only be this launch's own while its creating marker is
        // there (a flush after it failed).
        if self.before.existed() && self.data_dir.join(CREATING).exists() {
            let _ = std::fs::remove_file(self.data_dir.join(MARKER));
        }
        self.before.put_back(&self.data_dir);
        match &self.waldir {
            Some((dir, true)) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some((dir, false)) => {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
            None => {}
        }
    }
}

/// Creates the cluster; returns the template cache entry a background fill should make (a
/// persistent, cacheable cluster made by initdb), if any.
fn initialise(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    state_dir: &Path,
    socket_dir: &Path,
) -> Result<Option<PathBuf>> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    let (mut creation, staging) = Creation::begin(config, run_as)?;
    if let Some(waldir) = &config.initdb_waldir {
        creation.waldir = Some((waldir.clone(), prepare_waldir(waldir, run_as)?));
    }
    info!(data_dir = %data_dir.display(), user = %config.user, "first launch: initialising a new cluster");

    // The template cache holds what initdb and the bootstrap make; init scripts and a separate
    // WAL directory make a cluster of its own, so those first launches run initdb every time.
    let cacheable = cacheable(config)?;
    let template = template::template_dir(config, install, run_as);
    // A spare copy of the template, made in the background after an earlier launch, is
    // renamed into place: no copy at all.
    let spare = if config.ephemeral {
        // A throwaway cluster: a ready entry of the pool in memory, taken by one rename.
        (cacheable && config.ephemeral_pool > 0)
            .then(|| spare::pool::take(&template, install, run_as, &staging))
            .flatten()
    } else {
        (cacheable && config.spare)
            .then(|| spare::reset::take(data_dir, &template, install, run_as, &staging))
            .flatten()
    };
    let from_template = cacheable && template.join(template::TEMPLATE_COMPLETE).is_file();
    // The new cluster goes to disk while it is being written, so that the flush before the
    // completion marker has little left to wait for.
    let background =
        (!config.ephemeral && spare.is_none()).then(|| BackgroundFlush::start(&staging));
    if let Some(spare) = spare.as_ref().filter(|_| config.ephemeral) {
        info!(
            template = %template.display(),
            bytes = spare.bytes,
            "the cluster from the pool of throwaway clusters: renamed into place (a copy of the template made in the background)"
        );
    } else if let Some(spare) = &spare {
        info!(
            template = %template.display(),
            bytes = spare.bytes,
            "the cluster from spare: renamed into place (a copy of the template made in the background)"
        );
    } else if from_template {
        info!(template = %template.display(), "copying the cached template cluster instead of running initdb");
        template::copy_tree(&template, &staging, Some(run_as))?;
    } else {
        let never = Cancel::never();
        run_initdb(config, install, run_as, state_dir, &staging, &never)?;
        admin_access::grant_peer_access(&staging, run_as)?;
        bootstrap(config, install, run_as, &staging, socket_dir, &never)?;
        // A throwaway cluster is kept as a template right away; a persistent one's template is
        // made in the background once its server is ready (see template::template_dir).
        if cacheable
            && config.ephemeral
            && let Err(e) = template::save_template(&staging, &template, run_as)
        {
            warn!(template = %template.display(), "cannot keep a template cluster for later first launches: {e}");
        }
    }
    drop(background);

    creation.commit(config, install, run_as, &staging, None)?;
    info!(
        data_dir = %data_dir.display(),
        database = %config.database,
        from_template,
        from_spare = spare.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster initialised"
    );
    Ok((cacheable && !from_template && !config.ephemeral).then_some(template))
}

/// Moves the finished cluster's entries from the staging subdirectory up into the data
/// directory (renames within one filesystem), then removes the staging directory.
fn publish(staging: &Path, data_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(staging).io("cannot read", staging)? {
        let entry = entry.io("cannot read", staging)?;
        let target = data_dir.join(entry.file_name());
        std::fs::rename(entry.path(), &target)
            .io("cannot move the new cluster's file to", &target)?;
    }
    std::fs::remove_dir(staging).io("cannot remove", staging)
}

/// Writes a small file owned by the server's user.
fn write_owned(path: &Path, text: &str, run_as: &RunAs) -> Result<()> {
    let mut file = std::fs::File::create(path).io("cannot write", path)?;
    file.write_all(text.as_bytes()).io("cannot write", path)?;
    if run_as.switch {
        let _ = nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid));
    }
    Ok(())
}

/// The locale for initdb: C.UTF-8 when the system has it, else C (both sort bytewise, which is
/// stable across glibc upgrades; the encoding is UTF8 either way).
pub fn locale() -> &'static str {
    let has_c_utf8 = ["/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"]
        .iter()
        .any(|p| Path::new(p).exists());
    if has_c_utf8 { "C.UTF-8" } else { "C" }
}

fn run_initdb(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    state_dir: &Path,
    target: &Path,
    cancel: &Cancel,
) -> Result<()> {
    // The password goes through a 0600 file owned by the server's user, deleted on drop.
    // No password (only allowed with host_auth_method = trust): no file, as in the image.
    let password = config.password.expose();
    let mut pwfile = tempfile::Builder::new()
        .prefix(".pwfile-")
        .tempfile_in(state_dir)
        .io("cannot create a password file in", state_dir)?;
    pwfile
        .write_all(password.as_bytes())
        .and_then(|_| pwfile.flush())
        .io("cannot write the password file", pwfile.path())?;
    std::fs::set_permissions(pwfile.path(), std::fs::Permissions::from_mode(0o600))
        .io("cannot set the mode of", pwfile.path())?;
    if run_as.switch {
        nix::unistd::chown(pwfile.path(), Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::GiveTo {
                path: pwfile.path().to_path_buf(),
                user: run_as.name.clone(),
                source: e,
            }
        })?;
    }
    let locale = locale();
    // The image's `trust` applies to every connection (its socket always trusts).
    let local_auth = if config.host_auth_method == "trust" {
        "trust"
    } else {
        "scram-sha-256"
    };
    let mut command = Command::new(install.bin("initdb"));
    command
        .arg("--pgdata")
        .arg(target)
        .arg(format!("--username={}", config.user));
    if !password.is_empty() {
        command.arg("--pwfile").arg(pwfile.path());
    }
    command
        .arg("--encoding=UTF8")
        .arg(format!("--auth-host={}", config.host_auth_method))
        .arg(format!("--auth-local={local_auth}"))
        .arg(format!("--locale={locale}"))
        .arg("--no-instructions")
        // Its per-file fsync pass is slow (about a thousand fsyncs); `initialise` flushes the
        // whole staging directory once instead, before publishing it.
        .arg("--no-sync");
    if let Some(waldir) = &config.initdb_waldir {
        command.arg("--waldir").arg(waldir);
    }
    // After pgwarden's own, so that e.g. `--locale=de_DE.UTF-8` or `-E LATIN1` win.
    command.args(&config.initdb_args);
    step!(cancel, locale, args = ?config.initdb_args, "running initdb");
    run_checked(command, run_as, "initdb", None, cancel)?;
    drop(pwfile);
    Ok(())
}

/// `initdb_waldir` for a new cluster: empty or missing (true when missing), reachable.
fn check_waldir(waldir: &Path, run_as: &RunAs) -> Result<bool> {
    let missing = match std::fs::read_dir(waldir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Cluster {
                    what: format!(
                        "initdb_waldir {} is not empty; initdb needs an empty or missing directory\n\
                         help: empty it (a first launch that was killed leaves its WAL there), or choose another",
                        waldir.display()
                    ),
                });
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).io("cannot read initdb_waldir", waldir),
    };
    run_as.check_traversable(waldir)?;
    Ok(missing)
}

/// Creates an empty WAL directory for initdb, owned by the server's user; true if it was missing.
fn prepare_waldir(waldir: &Path, run_as: &RunAs) -> Result<bool> {
    let created = check_waldir(waldir, run_as)?;
    run_as.own_dir(waldir, 0o700)?;
    Ok(created)
}

/// pgwarden's administration role, the database, the init scripts: on a temporary server when
/// there are init scripts, else by a single-user backend.
fn bootstrap(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    target: &Path,
    socket_dir: &Path,
    cancel: &Cancel,
) -> Result<()> {
    let scripts = match &config.init_dir {
        Some(dir) => init_scripts::list(dir)?,
        None => Vec::new(),
    };
    if scripts.is_empty() {
        return bootstrap_single_user(config, install, run_as, target, cancel);
    }
    let server = TempServer::start(config, install, run_as, target, socket_dir, cancel)?;
    let sql_error = |what: &str, e: postgres::Error| Error::Cluster {
        what: format!("{what}: {}", init_scripts::describe(&e)),
    };
    let mut client = server
        .connect(&config.user, config.password.expose(), "postgres")
        .map_err(|e| sql_error("cannot connect to the temporary server", e))?;
    client
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN SUPERUSER",
            quote_identifier(ADMIN_ROLE)
        ))
        .map_err(|e| sql_error("cannot create pgwarden's administration role", e))?;
    if config.database != "postgres" {
        step!(cancel, database = %config.database, "creating the database");
        // FILE_COPY: with fsync off its two checkpoints cost nothing, and it copies template1's
        // ~7 MB once, where WAL_LOG writes them to the WAL and again at the shutdown checkpoint
        // (then syncfs flushes both): 40–75 vs 64–112 ms here on a fresh temporary server.
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} STRATEGY FILE_COPY",
                quote_identifier(&config.database)
            ))
            .map_err(|e| sql_error("cannot create the database", e))?;
    }
    drop(client);
    init_scripts::run_all(&scripts, &server, config, install, run_as)?;
    server.stop()
}

/// The role and the database of [`bootstrap`] without init scripts (the default): by a
/// single-user backend (`postgres --single`, as initdb makes `postgres` and `template0`), not a
/// temporary server — no postmaster, no sockets, no connection — which saved ~27 ms of every
/// first launch that runs initdb (BENCHMARKS.md, row 2). The session is the bootstrap superuser's, the
/// configured user, who owns the database as before. `exit_on_error` makes any error end the
/// backend with a failure; fsync is off (`-F`): the staging directory is flushed once before
/// it is published.
fn bootstrap_single_user(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    target: &Path,
    cancel: &Cancel,
) -> Result<()> {
    // One statement a line: the backend runs each line as it comes (no -j). Names with a
    // control character are refused before anything is created.
    let mut sql = format!(
        "CREATE ROLE {} LOGIN SUPERUSER\n",
        quote_identifier(ADMIN_ROLE)
    );
    if config.database != "postgres" {
        step!(cancel, database = %config.database, "creating the database");
        sql.push_str(&format!(
            "CREATE DATABASE {} STRATEGY FILE_COPY\n",
            quote_identifier(&config.database)
        ));
    }
    let mut command = Command::new(install.bin("postgres"));
    command
        .arg("--single")
        .arg("-F")
        .args(["-c", "exit_on_error=on", "-c", "listen_addresses="])
        .arg("-D")
        .arg(target)
        .arg("postgres");
    run_checked(
        command,
        run_as,
        "the bootstrap (postgres --single)",
        Some(sql),
        cancel,
    )
}

fn write_marker(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    target: &Path,
    taken_over_from: Option<&Path>,
) -> Result<()> {
    let marker = Marker {
        taken_over_from: taken_over_from.map(|p| p.display().to_string()),
        initialized_by: concat!("pgwarden ", env!("CARGO_PKG_VERSION")),
        postgresql: install.version.to_string(),
        user: &config.user,
        database: &config.database,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let text = serde_json::to_string_pretty(&marker).expect("serialisable");
    write_owned(&target.join(MARKER), &text, run_as)
}

/// Runs a PostgreSQL tool as the server's user with a clean environment; fails with its output
/// when it exits non-zero or reports an ERROR/FATAL line (single-user mode exits 0 on errors).
fn run_checked(
    mut command: Command,
    run_as: &RunAs,
    what: &str,
    stdin: Option<String>,
    cancel: &Cancel,
) -> Result<()> {
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_as.apply_std(&mut command);
    // Its own process group: a terminal's Ctrl-C reaches pgwarden, which finishes the step.
    // And killed if pgwarden dies (SIGKILL): otherwise it would run on, orphaned, in a staging
    // directory the next launch sweeps. PDEATHSIG follows the forking thread, which is blocked
    // right here waiting for this child, so it cannot fire early.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        what: what.to_string(),
        program: command.get_program().into(),
        source,
    })?;
    cancel.started(child.id());
    let pid = child.id();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(input.as_bytes())
            .io("cannot write to", command.get_program())?;
    }
    let output = child.wait_with_output();
    if output.is_ok() {
        cancel.ended(pid);
    }
    let output = output.io("cannot wait for", command.get_program())?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(stderr.lines())
    {
        tracing::debug!(target: "postgres", "{what}: {line}");
    }
    let reported_error = stderr
        .lines()
        .find(|l| l.contains(" ERROR: ") || l.contains(" FATAL: ") || l.contains(" PANIC: "));
    if output.status.success() && reported_error.is_none() {
        return Ok(());
    }
    let detail = reported_error
        .map(str::to_string)
        .unwrap_or_else(|| last_lines(&stderr, 8));
    Err(Error::Cluster {
        what: format!("{what} failed ({}): {}", output.status, detail.trim()),
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `"name"` with embedded quotes doubled: safe for any identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("trader"), "\"trader\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
    }
}
