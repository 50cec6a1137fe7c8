//! One module per subcommand; each takes its clap args and returns the process exit code.

mod run;
mod service;

use crate::cli::{Cli, Command};
use crate::error::Result;

pub async fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(args).await.map(|()| 0),
        Command::Service(crate::cli::ServiceCommand::Install(args)) => {
            service::install(&args).map(|()| 0)
        }
    }
}
