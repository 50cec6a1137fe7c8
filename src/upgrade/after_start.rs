//! Once the new server accepts connections: `ALTER EXTENSION … UPDATE` in every database whose
//! extensions have a newer default version in the new installation, and
//! `vacuumdb --all --analyze-in-stages` in the background (pg_upgrade carries no planner
//! statistics; the first stage gives usable ones within seconds, the server serves meanwhile).

use crate::binaries::Install;
use crate::cluster::quote_identifier;
use crate::error::{Error, IoContext, Result};
use crate::instance::observe::Instance;
use crate::os::privilege::RunAs;
use std::process::Stdio;
use tracing::{info, warn};

/// The extensions whose installed version is older than the new installation's default.
const OUTDATED: &str = "SELECT e.extname::text FROM pg_extension e \
    JOIN pg_available_extensions a ON a.name = e.extname \
    WHERE a.default_version IS NOT NULL AND a.default_version <> e.extversion";

/// Updates the extensions of every database; returns the `database.extension` names updated.
pub async fn update_extensions(instance: &Instance) -> Result<Vec<String>> {
    let password = instance.password()?;
    let connect = |database: String| {
        let mut config = tokio_postgres::Config::new();
        config
            .host(instance.address().ip().to_string())
            .port(instance.address().port())
            .user(instance.user())
            .password(password.expose())
            .dbname(&database)
            .application_name("pgwarden-upgrade");
        async move {
            let (client, connection) =
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| Error::Upgrade {
                        what: format!(
                            "cannot connect to database {database} of the upgraded server: {e}"
                        ),
                    })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, Error>(client)
        }
    };
    let client = connect(instance.database().to_string()).await?;
    let databases: Vec<String> = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| Error::Upgrade {
            what: format!("cannot list the databases: {e}"),
        })?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut updated = Vec::new();
    for database in databases {
        let client = connect(database.clone()).await?;
        let outdated = client
            .query(OUTDATED, &[])
            .await
            .map_err(|e| Error::Upgrade {
                what: format!("cannot list the extensions of {database}: {e}"),
            })?;
        for row in outdated {
            let extension: String = row.get(0);
            let sql = format!("ALTER EXTENSION {} UPDATE", quote_identifier(&extension));
            match client.batch_execute(&sql).await {
                Ok(()) => updated.push(format!("{database}.{extension}")),
                Err(e) => warn!(%database, %extension, "cannot update the extension: {e}"),
            }
        }
    }
    info!(updated = ?updated, "extensions updated to the new version's defaults");
    Ok(updated)
}

/// Starts `vacuumdb --all --analyze-in-stages` of the new installation in the background, as
/// the server's user, logged in as pgwarden's administration role on the private Unix socket
/// (peer authentication: no password anywhere); its output goes to
/// `<state dir>/upgrade-analyze.log`. Returns that log's path.
pub fn analyze_in_background(
    instance: &Instance,
    new: &Install,
    run_as: &RunAs,
) -> Result<std::path::PathBuf> {
    let log_path = instance.state_dir.join("upgrade-analyze.log");
    let log = crate::instance::private_dir::open_append(&log_path).io("cannot open", &log_path)?;
    let mut command = std::process::Command::new(new.bin("vacuumdb"));
    command
        .args(["--all", "--analyze-in-stages", "--host"])
        .arg(instance.state_dir.join("socket"))
        .arg(format!("--port={}", instance.address().port()))
        .arg(format!("--username={}", crate::config::ADMIN_ROLE))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().io("cannot open", &log_path)?)
        .stderr(log);
    run_as.apply_std(&mut command);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe. Its own session: it outlives this command.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
    }
    let child = command.spawn().map_err(|e| Error::Upgrade {
        what: format!("cannot start vacuumdb --analyze-in-stages: {e}"),
    })?;
    info!(pid = child.id(), log = %log_path.display(), "analyzing the upgraded cluster in the background (vacuumdb --analyze-in-stages)");
    Ok(log_path)
}
