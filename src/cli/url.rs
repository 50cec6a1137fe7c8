//! The arguments of `pgwarden url` (run by [`crate::commands::url`]).

use crate::cli::InstanceArgs;
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Prints the server's connection URL, `postgres://USER@HOST:PORT/DATABASE`; with \
--with-password the password is included (percent-encoded).",
    after_help = "Examples:\n  pgwarden url\n  DATABASE_URL=$(pgwarden url --with-password) ./app"
)]
pub struct UrlArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Include the password in the URL.
    #[arg(long)]
    pub with_password: bool,
}

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Prints DATABASE_URL, PGHOST, PGPORT, PGUSER and PGDATABASE as KEY=value lines (dotenv \
form), or as `export KEY='value'` lines with --shell. With --with-password, DATABASE_URL carries the \
password and PGPASSWORD is added.",
    after_help = "Examples:\n  pgwarden env --with-password > .env\n  eval \"$(pgwarden env --shell --with-password)\" && psql -c 'select 1'"
)]
pub struct EnvArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// `export KEY='value'` lines, for `eval`.
    #[arg(long)]
    pub shell: bool,

    /// Include the password (in DATABASE_URL, and as PGPASSWORD).
    #[arg(long)]
    pub with_password: bool,
}
