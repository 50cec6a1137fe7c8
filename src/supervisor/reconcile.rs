//! Reconcile: at every start, make sure the configured role, its password and the database
//! exist, so that a changed `POSTGRES_PASSWORD` (or user, or database) takes effect without
//! wiping data — what the image's users have asked for for years (the image only looks at them
//! on first initialisation).
//!
//! How pgwarden gets in when the password changed: the configured password no longer matches
//! the one in the cluster, so it cannot log in with it. First launch therefore creates an
//! administration role [`ADMIN_ROLE`] (superuser, no password) and puts one line at the top of
//! `pg_hba.conf`: `local all pgwarden_admin peer map=pgwarden`, with `pg_ident.conf` mapping
//! the OS users that run pgwarden (`root`, and the server's own user) to it. Only connections
//! asking for that role are affected: every other role keeps scram-sha-256 on the socket and on
//! TCP, and over TCP the role has no password, so it cannot log in at all. The socket lives in a
//! private 0700 directory, which only root and the server's user (who owns the data anyway)
//! can enter.
//!
//! Then, after the first ready probe, over the Unix socket as that role:
//! 1. the role: created (superuser, as the image makes it) if missing;
//! 2. its password: the configured password is checked against the stored verifier
//!    (`pg_authid.rolpassword`) here, without a second login ([`crate::pg::verifier`]); if it does
//!    not match, the password is set — as a SCRAM verifier computed here, so the clear text
//!    never reaches the server's log. A stored format pgwarden cannot read is checked by a
//!    login with the configured password (or, under `trust`, where a login proves nothing, set);
//! 3. the database: created, owned by the role, if missing.
//!
//! One log line says what was found and done. A failure is logged, not fatal: the server runs.
//!
//! When: before the ready line if the configuration changed since the last reconcile (so a
//! new password works as soon as pgwarden says ready), else right after it ([`Timing`]).

use crate::cluster::{Cluster, quote_identifier};
use crate::config::{ADMIN_ROLE, Config};
use crate::error::{Error, Result};
use crate::pg::verifier::{self, Verdict};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tracing::{info, warn};

/// How long the whole reconcile may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// When the reconcile runs, relative to the ready line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// `reconcile = false`, or this launch created the cluster from this very configuration.
    Skip,
    /// The configuration (role, password, database) changed since the last reconcile, or none
    /// is on record: whoever waits for the ready line gets the configured ones.
    BeforeReady,
    /// Same configuration as at the last reconcile: only a change made by hand inside the
    /// server (a dropped database, an `ALTER ROLE … PASSWORD`) could be found, and it is put
    /// back a few milliseconds after the ready line instead of delaying it (BENCHMARKS.md, row 3).
    AfterReady,
}

/// Where the last reconciled configuration is recorded: `<state dir>/reconciled`.
const RECORD: &str = "reconciled";

/// Decides when this start's reconcile runs; for a cluster this launch created, records its
/// configuration as reconciled.
pub fn timing(config: &Config, cluster: &Cluster, state_dir: &Path) -> Timing {
    if !config.reconcile {
        return Timing::Skip;
    }
    if cluster.created {
        record(config, state_dir);
        return Timing::Skip;
    }
    let recorded = std::fs::read_to_string(state_dir.join(RECORD)).unwrap_or_default();
    match recorded.split_whitespace().collect::<Vec<_>>()[..] {
        ["v1", salt, digest] if fingerprint(config, salt) == digest => Timing::AfterReady,
        _ => Timing::BeforeReady,
    }
}

/// A salted digest of what reconcile applies (the password is in it, so never a bare hash).
fn fingerprint(config: &Config, salt: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [
        salt,
        &config.user,
        config.password.expose(),
        &config.database,
        &config.host_auth_method,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Records `config` as reconciled (0600, written atomically); a failure only costs the next
/// start its fast path.
fn record(config: &Config, state_dir: &Path) {
    let salt = hex::encode(rand::random::<[u8; 16]>());
    let line = format!("v1 {salt} {}\n", fingerprint(config, &salt));
    let path = state_dir.join(RECORD);
    let temp = state_dir.join(format!(".{RECORD}.tmp"));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(line.as_bytes())
        })
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        warn!(path = %path.display(), "cannot record the reconciled configuration: {e}");
    }
}

/// Runs the reconcile (a log line says what it found and did) and records the configuration
/// when it succeeded. A failure is logged, not fatal: the server runs.
pub async fn run(config: &Config, cluster: &Cluster, state_dir: &Path) {
    match tokio::time::timeout(TIMEOUT, reconcile(config, cluster)).await {
        Ok(Ok(report)) => {
            info!(
                role = %config.user,
                database = %config.database,
                "reconciled: {report}"
            );
            record(config, state_dir);
        }
        Ok(Err(e)) => warn!(
            "reconcile failed, the server runs with the role, password and database it had: {e}"
        ),
        Err(_) => warn!(
            "reconcile did not finish within {}s; skipped",
            TIMEOUT.as_secs()
        ),
    }
}

async fn connect(
    cluster: &Cluster,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&cluster.socket_dir)
        .port(port)
        .user(user)
        .dbname(database)
        .application_name("pgwarden-reconcile")
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Does the work; returns what it found and did, for the log.
pub async fn reconcile(config: &Config, cluster: &Cluster) -> Result<String> {
    let failed = |what: &str, e: tokio_postgres::Error| Error::Server {
        what: format!("{what}: {}", crate::cluster::init_scripts::describe(&e)),
    };
    let admin = connect(cluster, config.port, ADMIN_ROLE, None, "postgres")
        .await
        .map_err(|e| {
            failed(
                &format!(
                    "cannot log in as {ADMIN_ROLE} on the Unix socket in {} (a cluster created by an \
                     older pgwarden has no such role)",
                    cluster.socket_dir.display()
                ),
                e,
            )
        })?;
    let user = quote_identifier(&config.user);
    let password = config.password.expose();
    // An empty password (only allowed with host_auth_method = trust) means none, as in the image.
    let set_password = if password.is_empty() {
        format!("ALTER ROLE {user} PASSWORD NULL")
    } else {
        format!(
            "ALTER ROLE {user} PASSWORD '{}'",
            postgres_protocol::password::scram_sha_256(password.as_bytes())
        )
    };
    let mut done = Vec::new();

    // One round trip (no prepare): the role's stored password, whether it exists, whether the
    // database exists.
    let found = admin
        .query_typed_one(
            "SELECT (SELECT rolpassword FROM pg_authid WHERE rolname = $1), \
                    EXISTS (SELECT 1 FROM pg_authid WHERE rolname = $1), \
                    EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)",
            &[(&config.user, Type::TEXT), (&config.database, Type::TEXT)],
        )
        .await
        .map_err(|e| failed("cannot look up the role and the database", e))?;
    let (stored, role_exists, database_exists): (Option<String>, bool, bool) =
        (found.get(0), found.get(1), found.get(2));

    let verdict = match (&stored, password.is_empty()) {
        (None, true) => Verdict::Accepts,
        (None, false) | (Some(_), true) => Verdict::Rejects,
        (Some(stored), false) => verifier::check(stored, &config.user, password),
    };
    let verdict = match verdict {
        // A stored format this version cannot read. Under trust a login proves nothing: set it.
        Verdict::Unknown if config.host_auth_method == "trust" => Verdict::Rejects,
        // Else a login with the configured password decides.
        Verdict::Unknown => {
            match connect(
                cluster,
                config.port,
                &config.user,
                Some(password),
                "postgres",
            )
            .await
            {
                Ok(_) => Verdict::Accepts,
                Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => Verdict::Rejects,
                Err(e) => return Err(failed("cannot check the role's password", e)),
            }
        }
        known => known,
    };
    if !role_exists {
        admin
            .batch_execute(&format!("CREATE ROLE {user} LOGIN SUPERUSER"))
            .await
            .map_err(|e| failed("cannot create the role", e))?;
    }
    if !role_exists || verdict == Verdict::Rejects {
        admin
            .batch_execute(&set_password)
            .await
            .map_err(|e| failed("cannot set the role's password", e))?;
    }
    done.push(match (role_exists, verdict) {
        (false, _) => format!("role {} created (superuser)", config.user),
        (true, Verdict::Accepts) => format!("role {} exists, password unchanged", config.user),
        (true, _) => format!(
            "role {} exists, password updated to the configured one",
            config.user
        ),
    });

    if database_exists {
        done.push(format!("database {} exists", config.database));
    } else {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {user}",
                quote_identifier(&config.database)
            ))
            .await
            .map_err(|e| failed("cannot create the database", e))?;
        done.push(format!(
            "database {} created (owner {})",
            config.database, config.user
        ));
    }
    Ok(done.join(", "))
}
