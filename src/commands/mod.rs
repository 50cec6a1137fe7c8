//! The command line, one file per verb: each holds its clap `Args` and its `run`, which returns
//! the process exit code. [`args`] holds what several verbs share: [`Cli`] (the global options),
//! the [`Command`] enum of verbs, the flag groups ([`InstanceArgs`], [`RunArgs`],
//! [`BinaryFlags`], [`Verbosity`], …), the [`Globals`] a background pgwarden is given again, and
//! [`usage_exit_code`]. They are turned into [`crate::config::Sources`] at once; nothing after
//! `config` reads clap's values.

pub mod archive_wal;
pub mod args;
pub mod backup;
pub mod backup_verify;
pub mod check;
pub mod common;
pub mod completions;
pub mod db;
pub mod db_reindex_collations;
pub mod doctor;
pub mod exec;
pub mod export_archive;
pub mod init;
pub mod install;
pub mod logs;
pub mod ls;
pub mod psql;
pub mod reload;
pub mod reset;
pub mod restart;
pub mod restore;
pub mod run;
pub mod service;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod stop;
pub mod url;
pub mod wait;

pub use args::{
    BinariesArgs, BinaryFlags, Cli, Command, Globals, InstanceArgs, LogFormat, RunArgs, SourceArgs,
    Verbosity, usage_exit_code,
};

use crate::error::Result;
pub use crate::instance::lock::BACKGROUND_ENV;
use crate::instance::resolve::{Resolved, resolve};

/// Runs the command. `run_instance` is `run`'s instance when `main` resolved it already (to
/// find the log file); `run` resolves it here otherwise.
pub async fn dispatch(cli: Cli, run_instance: Option<Result<Resolved>>) -> Result<i32> {
    let globals = cli.globals();
    let globals = &globals;
    match cli.command {
        Command::Run(args) => {
            let resolved =
                run_instance.unwrap_or_else(|| resolve(globals.sources(args.sources())))?;
            run::run(args, resolved).await.map(|()| 0)
        }
        Command::Backup(args) => backup::run(args, globals).await,
        Command::ArchiveWal(args) => archive_wal::run(args),
        Command::Restore(args) => restore::run(args, globals).await,
        Command::Snapshot(command) => snapshot::run(command, globals).await,
        Command::Check(args) => check::run(args, globals).await,
        Command::Db(command) => db::run(command, globals).await,
        Command::Wait(args) => wait::run(args, globals).await,
        Command::Status(args) => status::run(args, globals),
        Command::Url(args) => url::url(args, globals),
        Command::Env(args) => url::env(args, globals),
        Command::Psql(args) => psql::run(args, globals),
        Command::Logs(args) => logs::run(args, globals).await,
        Command::Stop(args) => stop::run(args, globals).await,
        Command::Doctor(args) => doctor::run(args, globals),
        Command::Completions(args) => completions::run(args),
        Command::Start(args) => start::start(args, globals).await,
        Command::Init(args) => init::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Restart(args) => restart::run(args, globals).await,
        Command::Reload(args) => reload::run(args, globals).await,
        Command::Reset(args) => reset::run(args, globals).await,
        Command::Exec(args) => exec::run(args, globals).await,
        Command::Install(args) => install::install(args, globals).await,
        Command::ExportArchive(args) => export_archive::export_archive(args, globals).await,
        Command::Service(service::ServiceCommand::Install(args)) => {
            service::install(&args).map(|()| 0)
        }
    }
}
