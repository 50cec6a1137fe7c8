//! The cluster: find the data directory's cluster, or create it atomically on first launch.
//!
//! First launch runs initdb (UTF8, scram-sha-256 for TCP *and* the Unix socket, the configured
//! user as superuser, its password through a 0600 file removed afterwards) and creates the
//! configured database, all in a staging sibling `.<name>.initdb-*` of the data directory. A
//! completion marker is written last, then the staging directory is renamed into place. A launch
//! killed at any point leaves no half cluster at the data path, and the next launch sweeps the
//! staging debris and starts over. An existing cluster is never re-initialised.

use crate::binaries::Install;
use crate::config::{Config, MAJOR};
use crate::error::{Error, IoContext, Result};
use crate::privilege::RunAs;
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
            initialise(config, install, run_as, state_dir)?;
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

/// The file holding the config's `[server]` settings, included from postgresql.conf. Settings
/// given as `postgres -c` could not change on reload; from this file, SIGHUP applies them.
pub const SETTINGS_FILE: &str = "pgwarden.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgwarden.conf'\t# [server] settings from pgwarden's config; rewritten by pgwarden";

/// Writes `[server]` settings to `pgwarden.conf` (owned by the server's user, 0600) and makes
/// sure postgresql.conf includes it. Returns whether the file changed.
pub fn write_server_settings(
    data_dir: &Path,
    settings: &std::collections::BTreeMap<String, String>,
    run_as: &RunAs,
) -> Result<bool> {
    let conf = data_dir.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).io("cannot read", &conf)?;
    if !text.lines().any(|l| {
        l.trim_start()
            .starts_with("include_if_exists = 'pgwarden.conf'")
    }) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .io("cannot update", &conf)?;
        writeln!(file, "\n{INCLUDE_LINE}").io("cannot update", &conf)?;
    }
    let mut body = String::from(
        "# Written by pgwarden from the [server] table of its config; edits here are overwritten.\n",
    );
    for (key, value) in settings {
        body.push_str(&format!(
            "{key} = '{}'\n",
            value.replace('\\', "\\\\").replace('\'', "''")
        ));
    }
    let path = data_dir.join(SETTINGS_FILE);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(body.as_str()) {
        return Ok(false);
    }
    let temp = data_dir.join(format!(".{SETTINGS_FILE}.tmp"));
    std::fs::write(&temp, &body).io("cannot write", &temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .io("cannot set the mode of", &temp)?;
    if run_as.switch {
        nix::unistd::chown(&temp, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::Privilege {
                what: format!("cannot give {} to {}: {e}", temp.display(), run_as.name),
            }
        })?;
    }
    std::fs::rename(&temp, &path).io("cannot write", &path)?;
    Ok(true)
}

/// Removes the staging directory unless the initialisation was committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn initialise(config: &Config, install: &Install, run_as: &RunAs, state_dir: &Path) -> Result<()> {
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

    let staging = Staging {
        path: parent.join(format!("{prefix}{}", std::process::id())),
        committed: false,
    };
    run_as.own_dir(&staging.path, 0o700)?;
    info!(data_dir = %data_dir.display(), user = %config.user, "first launch: initialising a new cluster");

    run_initdb(config, install, run_as, state_dir, &staging.path)?;
    if config.database != "postgres" {
        create_database(install, run_as, &staging.path, &config.database)?;
    }
    write_marker(config, install, run_as, &staging.path)?;

    // initdb and the single-user run wrote without fsync; one syncfs() makes the whole staging
    // directory durable before the rename publishes it (see `flush_to_disk`).
    flush_to_disk(&staging.path)?;
    // rename(2) replaces an empty directory at the target, so an empty data dir is fine.
    std::fs::rename(&staging.path, data_dir).io("cannot move the new cluster to", data_dir)?;
    let mut staging = staging;
    staging.committed = true;
    sync_dir(parent);
    info!(
        data_dir = %data_dir.display(),
        database = %config.database,
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
fn locale() -> &'static str {
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
    let mut pwfile = tempfile::Builder::new()
        .prefix(".pwfile-")
        .tempfile_in(state_dir)
        .io("cannot create a password file in", state_dir)?;
    pwfile
        .write_all(config.password.expose().as_bytes())
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
    let mut command = Command::new(install.bin("initdb"));
    command
        .arg("--pgdata")
        .arg(target)
        .arg(format!("--username={}", config.user))
        .arg("--pwfile")
        .arg(pwfile.path())
        .args([
            "--encoding=UTF8",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
        ])
        .arg(format!("--locale={locale}"))
        .arg("--no-instructions")
        // Its per-file fsync pass is slow (about a thousand fsyncs); `initialise` flushes the
        // whole staging directory once instead, before publishing it.
        .arg("--no-sync");
    info!(locale, "running initdb");
    run_checked(command, run_as, "initdb", None)?;
    drop(pwfile);
    Ok(())
}

/// Creates the database in single-user mode: no server, no socket, no password needed.
fn create_database(install: &Install, run_as: &RunAs, target: &Path, database: &str) -> Result<()> {
    let mut command = Command::new(install.bin("postgres"));
    command
        .arg("--single")
        // Durability comes from `flush_to_disk` before the rename, as for initdb --no-sync.
        .args(["-c", "fsync=off"])
        .arg("-D")
        .arg(target)
        .arg("postgres");
    let sql = format!("CREATE DATABASE {}\n", quote_identifier(database));
    info!(database, "creating the database");
    run_checked(command, run_as, "create database", Some(sql))
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

/// Makes everything written under `dir` durable with one `syncfs(2)` of its filesystem.
///
/// The staging cluster is written with fsync off (initdb --no-sync, single-user run with
/// fsync=off); nothing reads it before the rename, so one flush before the rename gives the
/// same guarantee as flushing along the way. One syncfs costs one journal commit; initdb's
/// own pass costs one per file and took 0.6–3 s more per first launch here (BENCHMARKS.md).
/// syncfs reports write-back errors of the filesystem (Linux ≥ 5.8), so a failed write fails
/// the launch rather than publishing a damaged cluster.
fn flush_to_disk(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).io("cannot open", dir)?;
    nix::unistd::syncfs(&handle).map_err(|e| Error::Cluster {
        what: format!(
            "cannot flush the new cluster in {} to disk: {e}\n\
             help: check the disk and the kernel log (dmesg), then start pgwarden again",
            dir.display()
        ),
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
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
