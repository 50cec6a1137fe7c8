//! `pgwarden db create NAME [--template T]` / `pgwarden db drop NAME`: per-test databases.
//! (`pgwarden db reindex-collations` is [`super::db_reindex_collations`].)
//!
//! A CI job that wants one database per test prepares a template once (migrated, seeded) and
//! clones it per test. Cloning uses `CREATE DATABASE … TEMPLATE … STRATEGY`: `FILE_COPY`
//! copies the template's files and checkpoints, `WAL_LOG` copies block by block through the
//! WAL. The default is `WAL_LOG` (PostgreSQL's own): on a persistent cluster (fsync on) it
//! took a third of `FILE_COPY`'s time, whose two checkpoints flush to disk, and on a throwaway
//! one (fsync off) the two are within a few milliseconds (BENCHMARKS.md, row 11).

use crate::cluster::quote_identifier;
use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::config::ADMIN_ROLE;
use crate::error::{Error, Result};
use clap::{Args, Subcommand, ValueEnum};
use tokio_postgres::error::SqlState;

#[derive(Debug, Clone, Subcommand)]
pub enum DbCommand {
    /// Create a database, empty or as a copy of a template database; prints its URL.
    #[command(
        after_help = "Examples:\n  pgwarden db create app_template\n  pgwarden db create test_42 --template app_template\n  pgwarden db create test_42 --template app_template --name ci --with-password"
    )]
    Create(CreateArgs),
    /// Drop a database.
    #[command(
        after_help = "Examples:\n  pgwarden db drop test_42\n  pgwarden db drop test_42 --force   # terminate its connections first"
    )]
    Drop(DropArgs),
    /// Rebuild the indexes whose text order came from another C library (a cluster taken over
    /// from a container), then record this system's collation versions.
    #[command(
        after_help = "Examples:\n  pgwarden db reindex-collations --dry-run   # list what it would do\n  pgwarden db reindex-collations\n  pgwarden db reindex-collations --database shop --locking"
    )]
    ReindexCollations(super::db_reindex_collations::ReindexCollationsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The new database's name.
    pub database: String,

    /// Copy this database instead of the empty template1. It must have no open connections.
    #[arg(long, value_name = "DATABASE")]
    pub template: Option<String>,

    /// How the template is copied.
    #[arg(long, value_enum, default_value_t = Strategy::WalLog)]
    pub strategy: Strategy,

    /// Put the password into the printed URL.
    #[arg(long)]
    pub with_password: bool,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DropArgs {
    /// The database to drop.
    pub database: String,

    /// Succeed when it does not exist.
    #[arg(long)]
    pub if_exists: bool,

    /// Terminate its open connections first (DROP DATABASE … WITH (FORCE)).
    #[arg(long)]
    pub force: bool,

    /// Do not ask before dropping the instance's main database.
    #[arg(long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// Copy the template's files (two checkpoints): slower on a persistent cluster, a little
    /// faster on an ephemeral one.
    FileCopy,
    /// Copy block by block through the WAL (PostgreSQL's default).
    WalLog,
}

pub async fn run(command: DbCommand, instance: Instance) -> Result<i32> {
    match command {
        DbCommand::Create(args) => create(args, instance).await,
        DbCommand::Drop(args) => drop_database(args, instance).await,
        DbCommand::ReindexCollations(args) => {
            super::db_reindex_collations::run(args, instance).await
        }
    }
}

async fn create(args: CreateArgs, instance: Instance) -> Result<i32> {
    instance.require_running()?;
    let client = connect(&instance).await?;
    // Owned by the configured user whichever role the connection logged in as.
    let mut sql = format!(
        "CREATE DATABASE {} OWNER {}",
        quote_identifier(&args.database),
        quote_identifier(instance.user())
    );
    if let Some(template) = &args.template {
        let strategy = match args.strategy {
            Strategy::FileCopy => "FILE_COPY",
            Strategy::WalLog => "WAL_LOG",
        };
        sql.push_str(&format!(
            " TEMPLATE {} STRATEGY {strategy}",
            quote_identifier(template)
        ));
    }
    client.batch_execute(&sql).await.map_err(|e| {
        let template = args.template.as_deref().unwrap_or("template1");
        explain(&e, &args.database, Some(template), &args.instance)
    })?;
    let password = args
        .with_password
        .then(|| instance.password())
        .transpose()?;
    println!(
        "{}",
        crate::pg::connection::database_url(
            instance.user(),
            password.as_ref().map(|p| p.expose()),
            instance.address(),
            &args.database
        )
    );
    Ok(0)
}

async fn drop_database(args: DropArgs, instance: Instance) -> Result<i32> {
    instance.require_running()?;
    if args.database == instance.database() && !args.yes {
        confirm_main(&args.database)?;
    }
    let client = connect(&instance).await?;
    if args.if_exists {
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&args.database],
            )
            .await
            .map_err(|e| explain(&e, &args.database, None, &args.instance))?;
        if found.is_none() {
            println!("no such database: {} (nothing dropped)", args.database);
            return Ok(0);
        }
    }
    let sql = format!(
        "DROP DATABASE {}{}{}",
        if args.if_exists { "IF EXISTS " } else { "" },
        quote_identifier(&args.database),
        if args.force { " WITH (FORCE)" } else { "" }
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| explain(&e, &args.database, None, &args.instance))?;
    println!("dropped: {}", args.database);
    Ok(0)
}

/// A connection to the maintenance database `postgres` (so that the user's own database, or a
/// template, is never held open by this command).
///
/// Root and the server's own user (who can enter the private socket directory) log in as
/// pgwarden's administration role on the Unix socket: peer authentication, mapped in
/// `pg_ident.conf` to those two OS users only ([`crate::cluster::admin_access`]), so no password
/// is read and no SCRAM exchange is made (~5 ms of a `db create`, BENCHMARKS.md, row 11). Anyone
/// else, and a cluster pgwarden did not create (no such line), uses TCP and the configured
/// user's password, as before.
pub(crate) async fn connect(instance: &Instance) -> Result<tokio_postgres::Client> {
    if let Some(socket_dir) = peer_socket_dir(instance)
        && let Ok(client) = connect_admin(instance, &socket_dir).await
    {
        return Ok(client);
    }
    connect_tcp(instance).await
}

/// The private socket directory, when this process could log in on it as the administration
/// role: it runs as root or as the directory's owner (the server's user), and the server's
/// socket is there. The server decides (peer); this only spares a refused attempt.
fn peer_socket_dir(instance: &Instance) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let socket_dir = instance
        .status
        .as_ref()
        .map(|s| s.socket_dir.clone())
        .unwrap_or_else(|| instance.state_dir.join("socket"));
    let owner = std::fs::symlink_metadata(&socket_dir).ok()?.uid();
    let me = nix::unistd::geteuid();
    (me.is_root() || me.as_raw() == owner).then_some(socket_dir)
}

/// As [`ADMIN_ROLE`] on the Unix socket in `socket_dir` (peer authentication).
async fn connect_admin(
    instance: &Instance,
    socket_dir: &std::path::Path,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(instance.address().port())
        .user(ADMIN_ROLE)
        .dbname("postgres")
        .application_name("pgwarden db");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// As the configured user over TCP, with its password (SCRAM).
async fn connect_tcp(instance: &Instance) -> Result<tokio_postgres::Client> {
    let address = instance.address();
    let mut config = tokio_postgres::Config::new();
    config
        .host(address.ip().to_string())
        .port(address.port())
        .user(instance.user())
        .password(instance.password()?.expose())
        .dbname("postgres")
        .application_name("pgwarden db");
    let (client, connection) =
        config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Server {
                what: format!(
                    "cannot connect to {address} as {}: {}",
                    instance.user(),
                    db_message(&e)
                ),
            })?;
    tokio::spawn(connection);
    Ok(client)
}

/// The server's error, in words that say what to do.
fn explain(
    e: &tokio_postgres::Error,
    database: &str,
    template: Option<&str>,
    instance: &InstanceArgs,
) -> Error {
    // The user's own instance flags, so that the suggested command reaches the same instance.
    let flags = Instance::flags_hint(instance);
    let what = match (e.code(), template) {
        (Some(code), _) if *code == SqlState::DUPLICATE_DATABASE => format!(
            "database {database:?} already exists\nhelp: drop it first (`pgwarden db drop {database}{flags}`) or pick another name"
        ),
        (Some(code), Some(template)) if *code == SqlState::OBJECT_IN_USE => format!(
            "template database {template:?} is in use: {}\n\
             help: a template must have no open connections while it is copied; close them (or end them with \
             `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'`)",
            db_message(e)
        ),
        (Some(code), None) if *code == SqlState::OBJECT_IN_USE => format!(
            "database {database:?} is in use: {}\nhelp: close its connections, or pass --force to end them",
            db_message(e)
        ),
        (Some(code), Some(template)) if *code == SqlState::INVALID_CATALOG_NAME => format!(
            "template database {template:?} does not exist\nhelp: create and prepare it first (`pgwarden db create {template}{flags}`)"
        ),
        (Some(code), None) if *code == SqlState::INVALID_CATALOG_NAME => {
            format!("database {database:?} does not exist (pass --if-exists to accept that)")
        }
        _ => db_message(e),
    };
    Error::Server { what }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// The main database (the one `url` points at) is dropped only after a yes on a terminal, or
/// with --yes.
fn confirm_main(database: &str) -> Result<()> {
    match super::common::ask_yes_no(&format!(
        "{database:?} is the instance's main database. Drop it and all its data?"
    )) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::Server {
            what: "not dropped".into(),
        }),
        None => Err(Error::Server {
            what: format!(
                "{database:?} is the instance's main database (the one DATABASE_URL names); not dropping it without a confirmation\n\
                 help: add --yes if you mean it"
            ),
        }),
    }
}
