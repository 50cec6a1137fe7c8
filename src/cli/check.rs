//! The arguments of `pgwarden check` (run by [`crate::commands::check`]).

use clap::{ArgAction, Args};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    disable_help_flag = true,
    long_about = "Checks whether the server accepts connections, exactly like pg_isready: same options, \
same output line (`127.0.0.1:5433 - accepting connections`), same exit codes: 0 accepting, 1 rejecting \
(starting up, shutting down, recovering), 2 no response, 3 no attempt (unusable parameters). It speaks \
the wire protocol itself (no libpq, no pg_isready process) and, without -h/-p, checks pgwarden's own \
address and port.\n\nWith --query it goes further: it logs in with the configured credentials and runs \
SELECT 1, telling a wrong password (exit 4) and a missing database (exit 5) apart from a server that is \
down (2); any other failed query exits 6.",
    after_help = "Examples:\n  pgwarden check                                   # pgwarden's server\n  pgwarden check -h 127.0.0.1 -p 5433 -U trader     # like pg_isready\n  pgwarden check -d postgres://trader@db:5433/trader -t 1\n  pgwarden check --query                            # log in and run SELECT 1\n  until pgwarden check -q; do sleep 0.1; done"
)]
pub struct CheckArgs {
    /// Database server host or socket directory [default: pgwarden's listen address].
    #[arg(short = 'h', long = "host", value_name = "HOSTNAME")]
    pub host: Option<String>,

    /// Database server port [default: pgwarden's port].
    #[arg(
        short = 'p',
        long = "port",
        value_name = "PORT",
        allow_hyphen_values = true
    )]
    pub port: Option<String>,

    /// User name to connect as [default: the configured user].
    #[arg(short = 'U', long = "username", value_name = "USERNAME")]
    pub username: Option<String>,

    /// Database name, or a connection string (`host=… port=…`) or URI (`postgres://…`).
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME")]
    pub dbname: Option<String>,

    /// Seconds to wait when attempting connection, 0 disables.
    #[arg(
        short = 't',
        long = "timeout",
        value_name = "SECS",
        default_value = "3",
        allow_hyphen_values = true
    )]
    pub timeout: String,

    /// Run quietly: no output, only the exit code.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,

    /// Log in with the configured password and run SELECT 1 (exit 4: wrong password,
    /// 5: database missing, 6: query failed).
    #[arg(long)]
    pub query: bool,

    /// Config file, for the defaults (see `pgwarden run --help`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The instance's data directory, for the defaults.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The instance's name, for the defaults (an ephemeral `--port 0` instance is found by it).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Use the system layout's defaults (see `pgwarden run --help`).
    #[arg(long)]
    pub system: bool,

    /// Print help.
    #[arg(short = '?', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}
