//! `pgwarden completions bash|zsh|fish`: shell completion scripts, generated from the CLI.

use crate::cli::Cli;
pub use crate::cli::completions::{CompletionShell, CompletionsArgs};
use crate::error::Result;
use clap::CommandFactory;
use clap_complete::Shell;

pub fn run(args: CompletionsArgs) -> Result<i32> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "pgwarden",
        &mut std::io::stdout(),
    );
    Ok(0)
}
