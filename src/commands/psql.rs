//! `pgwarden psql [args…]`: psql, connected to the running server.
//!
//! The installed binaries' psql when the install has one, else the first psql on PATH. The
//! installation's psql is one of its programs, so it runs as they all do
//! ([`binaries::program_user`]: the unprivileged user when pgwarden is root); a psql from PATH is
//! the caller's own program, run as the caller, as `pgwarden exec` runs the caller's command.
//! The connection goes through PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD in psql's environment
//! (never on its command line, where `ps` would show the password); arguments are passed on
//! unchanged, so they can override any of it. pgwarden replaces itself with psql (exec), so
//! Ctrl-C and the exit code are psql's own.

use crate::binaries;
use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::commands::url::variables;
use crate::error::{Error, Result};
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;

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

pub fn run(args: PsqlArgs, instance: Instance) -> Result<i32> {
    instance.require_running()?;
    let (psql, mut command) = match find_psql(&instance)? {
        Psql::Installed(install) => (
            install.bin("psql"),
            install.command("psql", &instance.config.install_policy),
        ),
        Psql::OnPath(path) => (path.clone(), std::process::Command::new(path)),
    };
    command.args(&args.args);
    for (key, value) in variables(&instance, true)? {
        if key != "DATABASE_URL" {
            command.env(key, value);
        }
    }
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    Err(Error::Server {
        what: format!("cannot run {}: {error}", psql.display()),
    })
}

/// Which psql runs.
enum Psql {
    /// The installation's own (the one `binaries` names, an existing installation included).
    Installed(binaries::Install),
    /// The first on the caller's PATH.
    OnPath(PathBuf),
}

fn find_psql(instance: &Instance) -> Result<Psql> {
    let config = &instance.config;
    let install = binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    )?;
    let installed = install.as_ref().map(|install| install.bin("psql"));
    if let Some(install) = install.filter(|i| i.bin("psql").is_file()) {
        return Ok(Psql::Installed(install));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("psql"))
            .find(|p| is_executable(p))
    });
    on_path.map(Psql::OnPath).ok_or_else(|| Error::Server {
        what: format!(
            "no psql found: the PostgreSQL install{} has none, and there is no psql on PATH\n\
             help: install the PostgreSQL client (Debian/Ubuntu: `apt install postgresql-client`), or connect with `pgwarden url`",
            installed
                .as_ref()
                .and_then(|p| p.parent())
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        ),
    })
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
