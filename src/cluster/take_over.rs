//! Taking over a container's cluster (`data_from`): the first launch copies a stopped
//! PostgreSQL 16 cluster — a `postgres:16` container's data directory — into pgwarden's data
//! directory instead of running initdb, and serves it under pgwarden's own access rules.
//!
//! The source is never modified ([`read_only_copy`]): going back to Docker still works. The
//! copy is made as a first launch is, atomically by marker ([`Creation`]): built in the
//! staging subdirectory while the data directory carries [`CREATING`], completed by
//! [`super::MARKER`] (which names the source). A refusal or a failure leaves the data directory as it
//! was and the source untouched.
//!
//! Refused up front, exit 2 ([`check_source`], called by `run` before anything is created):
//! a source that holds no cluster, a cluster of another major version (`PG_VERSION`), one
//! still running (a process works in it — a container's postmaster too, whose pid in
//! `postmaster.pid` is the container's own), one not shut down cleanly (`global/pg_control`'s
//! state; `--recover` lets PostgreSQL recover it in the copy), one written by another
//! architecture or build ([`crate::pg::control_file`]), a symlink out of it.
//!
//! What changes in the copy, and only there:
//! - `pg_hba.conf` is pgwarden's own (the image's `host all all all scram-sha-256` and its
//!   local `trust` are gone), with the administration role's peer line ([`admin_access`]);
//! - `listen_addresses`, `hba_file` and `ident_file` set in `postgresql.conf` or
//!   `postgresql.auto.conf` are commented out (pgwarden passes its own listen address on the
//!   command line, which wins anyway; the file paths would be the container's);
//! - pgwarden's administration role is created.
//!
//! Roles, passwords, databases and settings stay. Init scripts never run (the image runs
//! them only into an empty data directory). The reconcile at every start would set the
//! configured password on the configured role: a configured password the role does not
//! accept is refused here rather than silently replacing the container's. Where the
//! container's C library sorted text differently from this system's (`datcollversion` against
//! `pg_database_collation_actual_version()`, and per collation: [`collation::survey`]), the
//! indexes on collatable columns are listed with the command that rebuilds them,
//! `pgwarden db reindex-collations`.

use super::{Creation, admin_access, collation, quote_identifier};
use crate::binaries::Install;
use crate::cluster::data_dir::{self, DataDir};
use crate::cluster::read_only_copy;
use crate::config::{ADMIN_ROLE, Config, MAJOR};
use crate::error::{Error, IoContext, Result};
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use crate::pg::control_file::{self, State};
use crate::pg::verifier::{self, Verdict};
use crate::postmaster::temp_server::TempServer;
use std::path::Path;
use std::time::Instant;
use tracing::{info, warn};

/// Settings of the container's that the copy must not keep (see the module docs).
const SET_ASIDE: &[&str] = &["listen_addresses", "hba_file", "ident_file"];

/// The checks on `data_from` that `run` makes before it changes anything, when this launch
/// would take the cluster over (a data directory still to be made). Nothing to check otherwise.
pub fn check_source(config: &Config) -> Result<()> {
    let Some(source) = &config.data_from else {
        return Ok(());
    };
    match data_dir::inspect(&config.data_dir) {
        Ok(DataDir::Missing | DataDir::Empty | DataDir::HalfMade) => {
            examine_source(source, &config.data_dir, config.data_from_recover).map(|_| ())
        }
        // A cluster already there is used as it is; a problem with the data directory is
        // reported by the cluster checks.
        _ => Ok(()),
    }
}

/// Every refusal about the source, in the order a user fixes them; the state its server left
/// it in when it is accepted.
fn examine_source(source: &Path, data_dir: &Path, recover: bool) -> Result<State> {
    let meta = std::fs::symlink_metadata(source).map_err(|e| {
        refused(format!(
            "data_from {}: {e}\n\
             help: point data_from (--data-from) at the container's data directory: the host side of \
             its volume on /var/lib/postgresql/data (a bind mount's directory, or a named volume's \
             /var/lib/docker/volumes/<project>_<volume>/_data)",
            source.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(refused(format!(
            "data_from {} is not a directory (a symlink is not followed)\n\
             help: point data_from (--data-from) at the directory itself",
            source.display()
        )));
    }
    if let (Ok(from), Ok(to)) = (std::fs::canonicalize(source), absolute_parent(data_dir))
        && (to.starts_with(&from) || from.starts_with(&to))
    {
        return Err(refused(format!(
            "data_from {} and the data directory {} overlap; the copy must go elsewhere\n\
             help: pass another --data-dir, outside the container's directory",
            source.display(),
            data_dir.display()
        )));
    }
    let version = std::fs::read_to_string(source.join("PG_VERSION"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    if version.is_empty() {
        return Err(refused(format!(
            "data_from {} holds no PostgreSQL cluster (no PG_VERSION)\n\
             help: point data_from at the directory mounted on /var/lib/postgresql/data (or the \
             container's PGDATA), which holds PG_VERSION",
            source.display()
        )));
    }
    if version != MAJOR.to_string() {
        return Err(refused(format!(
            "data_from {} holds a PostgreSQL {version} cluster; pgwarden runs PostgreSQL {MAJOR} and \
             takes over only a {MAJOR} cluster\n\
             help: keep that container until `pgwarden upgrade` (to come) can take it over, or move \
             the data with pg_dumpall from the container into a new pgwarden cluster",
            source.display()
        )));
    }
    let working: Vec<u32> = crate::os::procfs::working_in(source);
    if let Some(pid) = working.first() {
        let name = crate::os::procfs::comm(*pid).unwrap_or_else(|| "?".into());
        return Err(refused(format!(
            "the cluster in {} is still running (pid {pid}, {name}, works in it); copying a running \
             cluster would copy a torn one\n\
             help: stop the container first (`docker compose stop <service>`), then start again",
            source.display()
        )));
    }
    let control_path = source.join("global").join("pg_control");
    let bytes = std::fs::read(&control_path).map_err(|e| {
        refused(format!(
            "cannot read {}: {e}\nhelp: a PostgreSQL cluster has this file; point data_from at a whole cluster",
            control_path.display()
        ))
    })?;
    let control = control_file::parse(&bytes).map_err(|why| {
        refused(format!(
            "the cluster in {} cannot be run by this PostgreSQL 16: its control file {why}\n\
             help: a cluster moves between machines of one architecture only; move the data with \
             pg_dumpall from the container instead",
            source.display()
        ))
    })?;
    if !control.state.is_clean() && !recover {
        let pid_note = if source.join("postmaster.pid").exists() {
            " and left its postmaster.pid"
        } else {
            ""
        };
        return Err(refused(format!(
            "the cluster in {} was not shut down cleanly (state: {}){pid_note}: its server was \
             killed or crashed\n\
             help: start and stop the container once (`docker compose up -d <service>`, then \
             `docker compose stop <service>`), or pass --recover to let PostgreSQL recover it in \
             pgwarden's copy (the container's directory stays as it is)",
            source.display(),
            control.state.describe()
        )));
    }
    read_only_copy::check(source)?;
    Ok(control.state)
}

/// The data directory with its existing ancestors resolved (it may not exist yet).
fn absolute_parent(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::canonicalize(at) {
            Ok(found) => {
                let mut out = found;
                out.extend(missing.iter().rev());
                return Ok(out);
            }
            Err(e) => {
                let (Some(parent), Some(name)) = (at.parent(), at.file_name()) else {
                    return Err(e);
                };
                missing.push(name.to_os_string());
                at = parent;
            }
        }
    }
}

/// Takes the cluster in `source` over into the (missing, empty or cleared) data directory.
pub(super) fn take_over(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    socket_dir: &Path,
    source: &Path,
) -> Result<()> {
    let started = Instant::now();
    let state = examine_source(source, &config.data_dir, config.data_from_recover)?;
    let (mut creation, staging) = Creation::begin(config, run_as)?;
    info!(
        from = %source.display(),
        data_dir = %config.data_dir.display(),
        "first launch: taking over the cluster in data_from (copied; the original is not modified)"
    );
    let copied = read_only_copy::copy(source, &staging, run_as)?;
    info!(
        files = copied.files,
        mb = copied.bytes / (1 << 20),
        cloned = copied.cloned,
        "copied the cluster"
    );
    set_aside_settings(&staging)?;
    // For the temporary server only: its socket is in pgwarden's private directory, which
    // only root and the server's user can enter (as the image's first start trusts its socket).
    write_file(
        &staging.join("pg_hba.conf"),
        "local all all trust\n",
        run_as,
    )?;
    if !state.is_clean() {
        warn!(
            state = state.describe(),
            "the cluster was not shut down cleanly; PostgreSQL recovers it in the copy (--recover)"
        );
    }
    if config.init_dir.is_some() {
        info!(
            "init scripts are not run over a taken-over cluster (the image runs them only into an empty data directory)"
        );
    }
    bootstrap(config, install, run_as, &staging, socket_dir)?;
    write_file(
        &staging.join("pg_hba.conf"),
        &pgwarden_hba(config, source),
        run_as,
    )?;
    admin_access::grant_peer_access(&staging, run_as)?;
    creation.commit(config, install, run_as, &staging, Some(source))?;
    info!(
        data_dir = %config.data_dir.display(),
        from = %source.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster taken over: roles, passwords, databases and settings kept; pgwarden's access rules \
         replace the container's"
    );
    Ok(())
}

/// pgwarden's `pg_hba.conf`, as initdb writes it for a first launch: the configured method
/// on the Unix socket and on loopback TCP, nothing else.
fn pgwarden_hba(config: &Config, source: &Path) -> String {
    let host = &config.host_auth_method;
    // The image's `trust` applies to every connection (its socket always trusts).
    let local = if host == "trust" {
        "trust"
    } else {
        "scram-sha-256"
    };
    format!(
        "# Written by pgwarden when it took this cluster over from {}.\n\
         # The container's rules (`host all all all scram-sha-256`, local `trust`) are not\n\
         # carried over: pgwarden listens on its listen_address only.\n\
         \n\
         # TYPE  DATABASE        USER            ADDRESS                 METHOD\n\
         local   all             all                                     {local}\n\
         host    all             all             127.0.0.1/32            {host}\n\
         host    all             all             ::1/128                 {host}\n\
         local   replication     all                                     {local}\n\
         host    replication     all             127.0.0.1/32            {host}\n\
         host    replication     all             ::1/128                 {host}\n",
        source.display()
    )
}

/// Comments out [`SET_ASIDE`] settings in `postgresql.conf` and `postgresql.auto.conf`.
fn set_aside_settings(staging: &Path) -> Result<()> {
    for name in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = staging.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let changed = without_set_aside(&text);
        if changed != text {
            std::fs::write(&path, changed).io("cannot write", &path)?;
        }
    }
    Ok(())
}

/// `text` with every active line setting a [`SET_ASIDE`] name commented out.
fn without_set_aside(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let key = line
            .trim_start()
            .split(|c: char| c == '=' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if SET_ASIDE.contains(&key.as_str()) {
            out.push_str("# pgwarden (taken over; pgwarden sets its own): ");
        }
        out.push_str(line);
    }
    out
}

fn write_file(path: &Path, text: &str, run_as: &RunAs) -> Result<()> {
    std::fs::write(path, text).io("cannot write", path)?;
    if run_as.switch {
        nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::GiveTo {
                path: path.to_path_buf(),
                user: run_as.name.clone(),
                source: e,
            }
        })?;
    }
    Ok(())
}

/// On a temporary server over the copy (which recovers it when it was not shut down
/// cleanly): the configured password checked against the configured role, the
/// administration role, the collation check.
fn bootstrap(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    staging: &Path,
    socket_dir: &Path,
) -> Result<()> {
    let never = Cancel::never();
    let server = TempServer::start(config, install, run_as, staging, socket_dir, &never)?;
    let (mut client, role) = connect_any(&server, config, "postgres")?;
    check_configured_password(&mut client, config)?;
    let sql_error = |what: &str, e: postgres::Error| Error::Cluster {
        what: format!("{what}: {}", super::init_scripts::describe(&e)),
    };
    let admin = quote_identifier(ADMIN_ROLE);
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&ADMIN_ROLE])
        .map_err(|e| sql_error("cannot read the roles", e))?
        .is_some();
    let statement = if exists {
        format!("ALTER ROLE {admin} LOGIN SUPERUSER PASSWORD NULL")
    } else {
        format!("CREATE ROLE {admin} LOGIN SUPERUSER")
    };
    client
        .batch_execute(&statement)
        .map_err(|e| sql_error("cannot create pgwarden's administration role", e))?;
    let stale = collation::survey(&mut client, None, |database| {
        server
            .connect(&role, "", database)
            .map_err(|e| Error::Cluster {
                what: format!(
                    "cannot connect to database {database:?} of the copy: {}",
                    super::init_scripts::describe(&e)
                ),
            })
    })?;
    drop(client);
    server.stop()?;
    for database in &stale {
        warn!("{}", describe_stale(database));
    }
    Ok(())
}

/// A connection as a role of the taken-over cluster: the configured user, else `postgres`
/// (the image's default superuser). The temporary server trusts its private socket.
fn connect_any(
    server: &TempServer,
    config: &Config,
    database: &str,
) -> Result<(postgres::Client, String)> {
    let mut candidates = vec![config.user.clone(), "postgres".to_string()];
    candidates.dedup();
    let mut last = None;
    for role in candidates {
        match server.connect(&role, "", database) {
            Ok(client) => return Ok((client, role)),
            Err(e) => last = Some(e),
        }
    }
    Err(refused(format!(
        "cannot log in to the taken-over cluster as {:?} or \"postgres\": {}\n\
         help: set user (POSTGRES_USER) to the container's POSTGRES_USER",
        config.user,
        last.map(|e| super::init_scripts::describe(&e))
            .unwrap_or_default()
    )))
}

/// The reconcile at every start sets the configured password on the configured role: a
/// password the container's role does not accept would replace the container's, so it is
/// refused here (a role that does not exist yet is created by the reconcile).
fn check_configured_password(client: &mut postgres::Client, config: &Config) -> Result<()> {
    let password = config.password.expose();
    if !config.reconcile || password.is_empty() {
        return Ok(());
    }
    let row = client
        .query_opt(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&config.user],
        )
        .map_err(|e| Error::Cluster {
            what: format!(
                "cannot read the roles: {}",
                super::init_scripts::describe(&e)
            ),
        })?;
    let Some(stored) = row.and_then(|r| r.get::<_, Option<String>>(0)) else {
        return Ok(());
    };
    if verifier::check(&stored, &config.user, password) == Verdict::Rejects {
        return Err(refused(format!(
            "the role {:?} in the container's cluster has another password than the one pgwarden is \
             configured with; pgwarden sets its configured password at every start, which would \
             replace the container's\n\
             help: set password (POSTGRES_PASSWORD, password_file) to the container's \
             POSTGRES_PASSWORD, or reconcile = false to leave the roles as they are",
            config.user
        )));
    }
    Ok(())
}

/// The take-over's warning for one database with a stale collation ([`collation::survey`]):
/// what differs, the indexes whose order depends on it, and the command that rebuilds them.
fn describe_stale(stale: &collation::Stale) -> String {
    format!(
        "database {:?}: {} (the container's C library and this system's); text may sort \
         differently, and these indexes on collatable columns need rebuilding: {}\n\
         help: once pgwarden serves the cluster, run `pgwarden db reindex-collations` (--dry-run \
         lists what it would do): it runs REINDEX on them, then ALTER DATABASE {} REFRESH \
         COLLATION VERSION",
        stale.database,
        stale.summary(),
        stale.index_list(),
        quote_identifier(&stale.database),
    )
}

fn refused(what: String) -> Error {
    Error::TakeOver { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containers_listen_and_hba_settings_are_commented_out() {
        let conf = "max_connections = 37\nlisten_addresses = '*'\n#listen_addresses = 'localhost'\n  hba_file='/etc/x'\nport = 5432\n";
        let out = without_set_aside(conf);
        let active: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert_eq!(active, ["max_connections = 37", "port = 5432"], "{out}");
        assert!(
            out.contains("# pgwarden (taken over; pgwarden sets its own): listen_addresses = '*'")
        );
    }

    #[test]
    fn a_stale_collation_names_the_indexes_and_the_command() {
        let stale = collation::Stale {
            database: "shop".into(),
            default: Some(collation::Versions {
                recorded: "2.36".into(),
                actual: "2.39".into(),
            }),
            collations: vec![],
            indexes: vec![
                collation::Qualified {
                    schema: "public".into(),
                    name: "items_name_idx".into(),
                },
                collation::Qualified {
                    schema: "public".into(),
                    name: "t_pkey".into(),
                },
            ],
        };
        let text = describe_stale(&stale);
        for needle in [
            "2.36",
            "2.39",
            "public.items_name_idx, public.t_pkey",
            "pgwarden db reindex-collations",
            "ALTER DATABASE \"shop\" REFRESH COLLATION VERSION",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn the_source_is_refused_for_each_reason_with_a_help_line() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("pgdata");
        let data = dir.path().join("data");
        let err = examine_source(&source, &data, false).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        std::fs::create_dir(&source).unwrap();
        let err = examine_source(&source, &data, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no PG_VERSION") && err.contains("help:"),
            "{err}"
        );
        std::fs::write(source.join("PG_VERSION"), "15\n").unwrap();
        let err = examine_source(&source, &data, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PostgreSQL 15 cluster") && err.contains("pgwarden upgrade"),
            "{err}"
        );
        let err = examine_source(&source, &source.join("inside"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlap"), "{err}");
    }
}
