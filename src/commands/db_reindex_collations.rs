//! `pgwarden db reindex-collations [--database NAME] [--dry-run] [--locking]`: rebuilds the
//! indexes whose text order came from another C library and records this system's collation
//! versions ([`crate::cluster::collation`]: what is stale, which indexes, which statements).
//!
//! The case: a cluster taken over from a `postgres:16` container (glibc 2.36) served on a host
//! with another glibc; the take-over's warning names this command. Nothing stale: it says so
//! and exits 0, so running it again is harmless.
//!
//! `REINDEX INDEX CONCURRENTLY` by default: the instance is serving its applications when this
//! runs, and a plain REINDEX blocks writes to the table, and every query planned on it, until
//! the index is rebuilt. The concurrent form costs two passes over the table and cannot run in
//! a transaction; interrupted, it leaves an invalid index `<name>_ccnew` behind (the error says
//! how to drop it). `--locking` takes the plain form for a maintenance window: faster, and
//! nothing left behind on failure. Each database's versions are refreshed only after all its
//! indexes were rebuilt, so a failure leaves them stale and the next run does the rest.

use crate::cluster::collation::{self, Reindex, Stale, Statement};
use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::config::Secret;
use crate::error::{Error, Result};
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// What a connection needs, owned, for the blocking task.
struct Target {
    address: SocketAddr,
    user: String,
    password: Secret,
}

impl Target {
    fn connect(&self, database: &str) -> Result<postgres::Client> {
        postgres::Config::new()
            .host(&self.address.ip().to_string())
            .port(self.address.port())
            .user(&self.user)
            .password(self.password.expose())
            .dbname(database)
            .application_name("pgwarden db reindex-collations")
            .connect_timeout(Duration::from_secs(30))
            .connect(postgres::NoTls)
            .map_err(|e| Error::Server {
                what: format!(
                    "cannot connect to database {database:?} at {} as {}: {}",
                    self.address,
                    self.user,
                    crate::cluster::init_scripts::describe(&e)
                ),
            })
    }
}
#[derive(Debug, Clone, Args)]
pub struct ReindexCollationsArgs {
    /// Only this database (default: every database that allows connections).
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,

    /// List the stale collations, the indexes and the statements; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Plain REINDEX instead of REINDEX CONCURRENTLY: faster, but writes to each table (and
    /// queries planned on it) wait while its index is rebuilt. For a maintenance window.
    #[arg(long)]
    pub locking: bool,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

pub async fn run(args: ReindexCollationsArgs, instance: Instance) -> Result<i32> {
    instance.require_running()?;
    let flags = Instance::flags_hint(&args.instance);
    let target = Target {
        address: instance.address(),
        user: instance.user().to_string(),
        password: instance.password()?,
    };
    // The blocking client (shared with the take-over's survey) runs off the async runtime.
    tokio::task::spawn_blocking(move || reindex(&target, &args, &flags))
        .await
        .map_err(|e| Error::Server {
            what: format!("the reindex task failed: {e}"),
        })?
}

fn reindex(target: &Target, args: &ReindexCollationsArgs, flags: &str) -> Result<i32> {
    let mut maintenance = target.connect("postgres")?;
    let stale = collation::survey(&mut maintenance, args.database.as_deref(), |database| {
        target.connect(database)
    })?;
    drop(maintenance);
    if stale.is_empty() {
        match &args.database {
            Some(name) => {
                println!("collation versions of database {name:?} are current: nothing to do")
            }
            None => println!("collation versions are current in every database: nothing to do"),
        }
        return Ok(0);
    }
    let how = if args.locking {
        Reindex::Locking
    } else {
        Reindex::Concurrently
    };
    for database in &stale {
        println!("database {:?}: {}", database.database, database.summary());
        let statements = database.statements(how);
        if args.dry_run {
            for statement in &statements {
                println!("  would run: {}", statement.sql);
            }
            continue;
        }
        let mut client = target.connect(&database.database)?;
        for (n, statement) in statements.iter().enumerate() {
            println!("  [{}/{}] {}", n + 1, statements.len(), statement.sql);
            client
                .batch_execute(&statement.sql)
                .map_err(|e| failed(database, statement, &e, how, flags))?;
        }
    }
    if args.dry_run {
        println!("dry run: nothing changed; run `pgwarden db reindex-collations{flags}` to do it");
    } else {
        let indexes: usize = stale.iter().map(|s| s.indexes.len()).sum();
        println!(
            "done: {indexes} index(es) rebuilt, collation versions refreshed in {} database(s)",
            stale.len()
        );
    }
    Ok(0)
}

/// A statement's failure, naming the database and the object, with what to do.
fn failed(
    database: &Stale,
    statement: &Statement,
    e: &postgres::Error,
    how: Reindex,
    flags: &str,
) -> Error {
    let again = format!("`pgwarden db reindex-collations{flags}`");
    let unique = e
        .code()
        .is_some_and(|c| *c == postgres::error::SqlState::UNIQUE_VIOLATION);
    let help = if unique {
        format!(
            "with this system's collation the unique {} finds duplicate keys; remove the \
             duplicates, then run {again} again",
            statement.target
        )
    } else if how == Reindex::Concurrently && statement.sql.starts_with("REINDEX") {
        format!(
            "an interrupted REINDEX CONCURRENTLY leaves an invalid index named like \
             `<index>_ccnew` beside the {}; drop it (DROP INDEX CONCURRENTLY …), fix the cause \
             and run {again} again, or pass --locking",
            statement.target
        )
    } else {
        format!("fix the cause and run {again} again")
    };
    Error::Server {
        what: format!(
            "database {:?}: {} of {} failed: {}\n\
             help: {help}; what is not yet refreshed stays stale, so the next run finds it",
            database.database,
            statement.sql,
            statement.target,
            crate::cluster::init_scripts::describe(e)
        ),
    }
}
