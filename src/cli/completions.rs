//! The arguments of `pgwarden completions` (run by [`crate::commands::completions`]).

use clap::Args;

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
