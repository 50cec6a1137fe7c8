//! The cluster: find the data directory's cluster, or create it atomically on first launch.
//!
//! First launch runs initdb (UTF8, scram-sha-256 for TCP *and* the Unix socket, the configured
//! user as superuser, its password through a 0600 file removed afterwards), then starts a
//! temporary server on the Unix socket only ([`crate::temp_server`]) that creates pgwarden's
//! administration role ([`crate::reconcile`]) and the configured database and runs the init
//! scripts ([`crate::init_scripts`]), all in a staging sibling `.<name>.initdb-*` of the data
//! directory. A completion marker is written last, then the staging directory is renamed into
//! place. A launch killed or failing at any point (a failing init script included) leaves no
//! half cluster at the data path, and the next launch sweeps the staging debris and starts over.
//! An existing cluster is never re-initialised.

mod flush;
mod settings;
mod template;

use flush::{BackgroundFlush, flush_to_disk, sync_dir};
pub use settings::{SETTINGS_FILE, write_server_settings};

use crate::binaries::Install;
use crate::config::{ADMIN_ROLE, Config, MAJOR};
use crate::error::{Error, IoContext, Result};
use crate::init_scripts;
use crate::privilege::RunAs;
use crate::reconcile;
use crate::temp_server::TempServer;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::{info, warn};

/// The completion marker pgwarden writes into a data directory it initialised.
pub const MARKER: &str = "pgwarden.json";

/// A data directory holding a PostgreSQL 16 cluster, ready to be started.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub data_dir: PathBuf,
    /// Private directory (0700, owned by the server's user) for the server's Unix socket.
    pub socket_dir: PathBuf,
    /// True when this launch created the cluster.
    pub created: bool,
}

#[derive(serde::Serialize)]
struct Marker<'a> {
    initialized_by: &'a str,
    postgresql: String,
    user: &'a str,
    database: &'a str,
    created_unix: u64,
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
    run_as.check_traversable(data_dir)?;
    let socket_dir = state_dir.join("socket");
    run_as.own_dir(&socket_dir, 0o700)?;

    let created = match inspect(data_dir)? {
        DataDir::Cluster { major } => {
            check_existing(data_dir, major, run_as)?;
            false
        }
        DataDir::Absent => {
            initialise(config, install, run_as, state_dir, &socket_dir)?;
            true
        }
    };
    write_server_settings(data_dir, &config.server, run_as)?;
    Ok(Cluster {
        data_dir: data_dir.clone(),
        socket_dir,
        created,
    })
}

/// True when `data_dir` holds a cluster already (`PG_VERSION`, as the image checks).
pub fn is_initialised(data_dir: &Path) -> bool {
    matches!(inspect(data_dir), Ok(DataDir::Cluster { .. }))
}

enum DataDir {
    /// Missing, or an empty directory.
    Absent,
    Cluster {
        major: String,
    },
}

fn inspect(data_dir: &Path) -> Result<DataDir> {
    // Like the postgres image: initialised means PG_VERSION exists and is not empty.
    match std::fs::read_to_string(data_dir.join("PG_VERSION")) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(DataDir::Cluster {
                major: text.trim().to_string(),
            });
        }
        _ => {}
    }
    match std::fs::read_dir(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DataDir::Absent),
        Err(e) => Err(e).io("cannot read data directory", data_dir),
        Ok(mut entries) => {
            if entries.next().is_none() {
                Ok(DataDir::Absent)
            } else {
                Err(Error::Cluster {
                    what: format!(
                        "data directory {} is not empty but holds no PostgreSQL cluster (no PG_VERSION); \
                         pgwarden will not initialise over existing files\n\
                         help: point --data-dir at an empty or missing directory, or move these files away",
                        data_dir.display()
                    ),
                })
            }
        }
    }
}

fn check_existing(data_dir: &Path, major: String, run_as: &RunAs) -> Result<()> {
    if major != MAJOR.to_string() {
        return Err(Error::Cluster {
            what: format!(
                "data directory {} holds a PostgreSQL {major} cluster; pgwarden runs PostgreSQL {MAJOR}\n\
                 help: upgrade the cluster with pg_upgrade, or point --data-dir at another directory",
                data_dir.display()
            ),
        });
    }
    let meta = std::fs::metadata(data_dir).io("cannot read data directory", data_dir)?;
    if meta.uid() != run_as.uid.as_raw() {
        return Err(Error::Cluster {
            what: format!(
                "data directory {} is owned by uid {}, but postgres runs as {} (uid {})\n\
                 help: chown -R {}: {}",
                data_dir.display(),
                meta.uid(),
                run_as.name,
                run_as.uid,
                run_as.name,
                data_dir.display()
            ),
        });
    }
    if !data_dir.join(MARKER).is_file() {
        warn!(
            data_dir = %data_dir.display(),
            "this cluster was not created by pgwarden (no {MARKER}); using it as it is: \
             its users, passwords and databases were not checked"
        );
    }
    Ok(())
}

/// Removes the staging directory (and what initdb put in a separate WAL directory) unless the
/// initialisation was committed.
struct Staging {
    path: PathBuf,
    /// `initdb_waldir`, and whether this launch created it (else it was empty).
    waldir: Option<(PathBuf, bool)>,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
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
}

fn initialise(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    state_dir: &Path,
    socket_dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    let parent = data_dir.parent().ok_or_else(|| Error::Cluster {
        what: format!(
            "data directory {} has no parent directory",
            data_dir.display()
        ),
    })?;
    std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.initdb-");
    sweep(parent, &prefix);

    let mut staging = Staging {
        path: parent.join(format!("{prefix}{}", std::process::id())),
        waldir: None,
        committed: false,
    };
    run_as.own_dir(&staging.path, 0o700)?;
    if let Some(waldir) = &config.initdb_waldir {
        staging.waldir = Some((waldir.clone(), prepare_waldir(waldir, run_as)?));
    }
    info!(data_dir = %data_dir.display(), user = %config.user, "first launch: initialising a new cluster");

    // The template cache holds what initdb and the bootstrap make; init scripts and a separate
    // WAL directory make a cluster of its own, so those first launches run initdb every time.
    let has_scripts = match &config.init_dir {
        Some(dir) => !init_scripts::list(dir)?.is_empty(),
        None => false,
    };
    let cacheable = !has_scripts && config.initdb_waldir.is_none();
    let template = template::template_dir(config, install, run_as);
    let from_template = cacheable && template.join(template::TEMPLATE_COMPLETE).is_file();
    // The new cluster goes to disk while it is being written, so that the flush before the
    // rename has little left to wait for.
    let background = (!config.ephemeral).then(|| BackgroundFlush::start(&staging.path));
    if from_template {
        info!(template = %template.display(), "copying the cached template cluster instead of running initdb");
        template::copy_tree(&template, &staging.path, Some(run_as))?;
    } else {
        run_initdb(config, install, run_as, state_dir, &staging.path)?;
        reconcile::grant_peer_access(&staging.path, run_as)?;
        bootstrap(config, install, run_as, &staging.path, socket_dir)?;
        // Only throwaway clusters are kept as templates (see template::template_dir).
        if cacheable
            && config.ephemeral
            && let Err(e) = template::save_template(&staging.path, &template)
        {
            warn!(template = %template.display(), "cannot keep a template cluster for later first launches: {e}");
        }
    }
    drop(background);
    write_marker(config, install, run_as, &staging.path)?;

    // initdb and the temporary server wrote without fsync (and a template copy is plain file
    // copies): one syncfs() makes the staging directory (and a separate WAL directory) durable
    // before the rename publishes it. A throwaway cluster needs no durability at all.
    if !config.ephemeral {
        flush_to_disk(&staging.path)?;
        if let Some(waldir) = &config.initdb_waldir {
            flush_to_disk(waldir)?;
        }
    }
    sync_dir(&staging.path);
    // rename(2) replaces an empty directory at the target, so an empty data dir is fine.
    std::fs::rename(&staging.path, data_dir).io("cannot move the new cluster to", data_dir)?;
    staging.committed = true;
    sync_dir(parent);
    info!(
        data_dir = %data_dir.display(),
        database = %config.database,
        from_template,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster initialised"
    );
    Ok(())
}

/// Removes staging directories left behind by a first launch that was killed.
fn sweep(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            warn!(path = %entry.path().display(), "removing the remains of an interrupted first launch");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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
            Error::Privilege {
                what: format!("cannot give the password file to {}: {e}", run_as.name),
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
    info!(locale, args = ?config.initdb_args, "running initdb");
    run_checked(command, run_as, "initdb", None)?;
    drop(pwfile);
    Ok(())
}

/// Creates an empty WAL directory for initdb, owned by the server's user; true if it was missing.
fn prepare_waldir(waldir: &Path, run_as: &RunAs) -> Result<bool> {
    let created = match std::fs::read_dir(waldir) {
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
    run_as.own_dir(waldir, 0o700)?;
    Ok(created)
}

/// On a temporary server: pgwarden's administration role, the database, the init scripts.
fn bootstrap(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    target: &Path,
    socket_dir: &Path,
) -> Result<()> {
    let scripts = match &config.init_dir {
        Some(dir) => init_scripts::list(dir)?,
        None => Vec::new(),
    };
    let server = TempServer::start(config, install, run_as, target, socket_dir)?;
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
        info!(database = %config.database, "creating the database");
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

fn write_marker(config: &Config, install: &Install, run_as: &RunAs, target: &Path) -> Result<()> {
    let marker = Marker {
        initialized_by: concat!("pgwarden ", env!("CARGO_PKG_VERSION")),
        postgresql: install.version.to_string(),
        user: &config.user,
        database: &config.database,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let path = target.join(MARKER);
    let mut file = std::fs::File::create(&path).io("cannot write", &path)?;
    file.write_all(
        serde_json::to_string_pretty(&marker)
            .expect("serialisable")
            .as_bytes(),
    )
    .io("cannot write", &path)?;
    if run_as.switch {
        let _ = nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid));
    }
    Ok(())
}

/// Runs a PostgreSQL tool as the server's user with a clean environment; fails with its output
/// when it exits non-zero or reports an ERROR/FATAL line (single-user mode exits 0 on errors).
fn run_checked(
    mut command: Command,
    run_as: &RunAs,
    what: &str,
    stdin: Option<String>,
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
    let mut child = command.spawn().map_err(|e| Error::Cluster {
        what: format!(
            "cannot run {what} ({}): {e}",
            command.get_program().to_string_lossy()
        ),
    })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(input.as_bytes())
            .io("cannot write to", command.get_program())?;
    }
    let output = child
        .wait_with_output()
        .io("cannot wait for", command.get_program())?;
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

    #[test]
    fn non_empty_foreign_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = inspect(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not empty"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(inspect(empty.path()).unwrap(), DataDir::Absent));
        assert!(matches!(
            inspect(&empty.path().join("missing")).unwrap(),
            DataDir::Absent
        ));
    }

    #[test]
    fn other_major_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        let DataDir::Cluster { major } = inspect(dir.path()).unwrap() else {
            panic!("expected a cluster");
        };
        let me = RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap();
        let err = check_existing(dir.path(), major, &me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PostgreSQL 15 cluster"), "{err}");
    }
}
