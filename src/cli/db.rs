//! The arguments of `pgwarden db` (run by [`crate::commands::db`]).

use crate::cli::InstanceArgs;
use clap::{Args, Subcommand, ValueEnum};

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
    ReindexCollations(ReindexCollationsArgs),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// Copy the template's files (two checkpoints): slower on a persistent cluster, a little
    /// faster on an ephemeral one.
    FileCopy,
    /// Copy block by block through the WAL (PostgreSQL's default).
    WalLog,
}
