//! The arguments of `pgwarden exec` (run by [`crate::commands::exec`]).

use crate::cli::RunArgs;
use clap::Args;
use std::ffi::OsString;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Runs CMD with DATABASE_URL (with the password), PGHOST, PGPORT, PGUSER, PGPASSWORD \
and PGDATABASE set for the instance, and the installation's programs (pg_dump, pg_restore, psql, \
pgbench, …) first on PATH — run as the unprivileged user when pgwarden is root —, and exits with CMD's \
exit code (128+N when a signal N ended it). \
The instance must be running, unless --ephemeral: then a throwaway server (its own free port and \
name, fsync off, in memory where /dev/shm exists) is started for CMD and removed after it.",
    after_help = "Examples:\n  pgwarden exec -- psql -c 'select 1'\n  pgwarden exec -- pg_dump -Fc trader > trader.dump\n  pgwarden exec -- npm run migrate\n  pgwarden exec --ephemeral -- cargo test      # a fresh server for one test run"
)]
pub struct ExecArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// How long a throwaway server may take to get ready.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,

    /// The command and its arguments.
    #[arg(value_name = "CMD", last = true, required = true)]
    pub command: Vec<OsString>,
}
