//! One module per subcommand; each takes its clap args and returns the process exit code.

pub mod archive_wal;
pub mod backup;
pub mod check;
mod common;
pub mod completions;
pub mod db;
pub mod doctor;
pub mod exec;
mod export_archive;
pub mod init;
mod install;
pub mod logs;
pub mod ls;
pub mod psql;
pub mod reload;
pub mod reset;
mod restart;
pub mod restore;
mod run;
mod service;
pub mod snapshot;
mod start;
pub mod status;
pub mod stop;
pub mod url;
pub mod wait;

use crate::cli::{Cli, Command};

use crate::config::Config;
use crate::error::Result;
pub use crate::instance::lock::BACKGROUND_ENV;

/// Runs the command. `run_config` is `run`'s config when `main` loaded it already (to find
/// the log file); `run` loads it here otherwise.
pub async fn dispatch(cli: Cli, run_config: Option<Result<Config>>) -> Result<i32> {
    let globals = cli.globals();
    match cli.command {
        Command::Run(args) => {
            let config = run_config.unwrap_or_else(|| Config::load(&args.sources()))?;
            run::run(args, config).await.map(|()| 0)
        }
        Command::Backup(args) => backup::run(args).await,
        Command::ArchiveWal(args) => archive_wal::run(args),
        Command::Restore(args) => restore::run(args, &globals).await,
        Command::Snapshot(command) => snapshot::run(command, &globals).await,
        Command::Check(args) => check::run(args).await,
        Command::Db(command) => db::run(command).await,
        Command::Wait(args) => wait::run(args).await,
        Command::Status(args) => status::run(args),
        Command::Url(args) => url::url(args),
        Command::Env(args) => url::env(args),
        Command::Psql(args) => psql::run(args),
        Command::Logs(args) => logs::run(args).await,
        Command::Stop(args) => stop::run(args).await,
        Command::Doctor(args) => doctor::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Start(args) => start::start(args, &globals).await,
        Command::Init(args) => init::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Restart(args) => restart::run(args, &globals).await,
        Command::Reload(args) => reload::run(args).await,
        Command::Reset(args) => reset::run(args).await,
        Command::Exec(args) => exec::run(args, &globals).await,
        Command::Install(args) => install::install(args).await,
        Command::ExportArchive(args) => export_archive::export_archive(args).await,
        Command::Service(crate::cli::ServiceCommand::Install(args)) => {
            service::install(&args).map(|()| 0)
        }
    }
}
