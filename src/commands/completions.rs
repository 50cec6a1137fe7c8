//! `pgwarden completions bash|zsh|fish`: shell completion scripts, generated from the CLI.

use crate::commands::Cli;
use crate::error::Result;
use clap::Args;
use clap::CommandFactory;
use clap_complete::Shell;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  pgwarden completions bash > /etc/bash_completion.d/pgwarden\n  pgwarden completions zsh > \"${fpath[1]}/_pgwarden\"\n  pgwarden completions fish > ~/.config/fish/completions/pgwarden.fish"
)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

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
