//! The arguments of `pgwarden init` (run by [`crate::commands::init`]).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Writes pgwarden.toml, the project file, into DIR (default: the current directory): \
the seed's service (127.0.0.1:5433, user, password and database `trader`), every key commented. \
Every pgwarden command run in that directory or below it then uses it, like compose.yaml. An \
existing file is never overwritten.

With --from-compose, pgwarden.toml is written beside a docker compose file instead, from its \
postgres:16 service: port, user, database, password file, initdb arguments, server settings, init \
scripts and the data volume to take over (data_from), one comment per key, and a summary of what \
pgwarden handles itself and what is not carried over. Without FILE the compose file is found as \
docker compose finds it (compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml in this \
directory, then its parents), and read only if you or root own it and every directory above it.",
    after_help = "Examples:\n  pgwarden init && pgwarden start\n  pgwarden init ./services/api\n  \
pgwarden init --from-compose && pgwarden start\n  pgwarden init --from-compose deploy/compose.yaml --service db"
)]
pub struct InitArgs {
    /// The project directory [default: the current directory].
    #[arg(value_name = "DIR")]
    #[arg(conflicts_with = "from_compose")]
    pub dir: Option<PathBuf>,

    /// Write pgwarden.toml from the postgres service of a docker compose file (FILE, else the
    /// one found from here upwards), beside that file.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub from_compose: Option<Option<PathBuf>>,

    /// The compose service to take (needed when several run the postgres image).
    #[arg(long, value_name = "NAME", requires = "from_compose")]
    pub service: Option<String>,
}
