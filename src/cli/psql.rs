//! The arguments of `pgwarden psql` (run by [`crate::commands::psql`]).

use crate::cli::InstanceArgs;
use clap::Args;
use std::ffi::OsString;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Runs psql against the running server with the right host, port, user, database and \
password. Arguments after the pgwarden flags go to psql unchanged (use `--` before psql flags that \
pgwarden also has, such as --port).",
    after_help = "Examples:\n  pgwarden psql\n  pgwarden psql -c 'select version()'\n  pgwarden psql -- -d postgres -f schema.sql"
)]
pub struct PsqlArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Arguments for psql.
    #[arg(
        value_name = "PSQL_ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,
}
