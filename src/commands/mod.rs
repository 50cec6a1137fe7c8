//! One module per subcommand; each takes its clap args and returns the process exit code.

mod export_archive;
mod install;
mod run;
mod start;

use crate::cli::{Cli, Command};
use crate::error::Result;

pub async fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(args).await.map(|()| 0),
        Command::Start(args) => start::start(args).await,
        Command::Install(args) => install::install(args).await,
        Command::ExportArchive(args) => export_archive::export_archive(args).await,
    }
}
