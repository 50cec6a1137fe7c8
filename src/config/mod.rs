//! Configuration: defaults < config file < environment < flags, validated into one [`Config`].
//!
//! Nothing after this module reads the environment or the command line: they are turned into
//! [`Layer`]s here, merged, and checked once, with every problem reported together. Files found
//! rather than given (the project file, npmrc, pip.conf, .netrc) are read only through [`trust`].

//!
//! Files by job: `layers` (the [`Layer`] type and how layers merge), `load` (reading the
//! files and the environment, and the order of the layers), `validate` (the merged layer
//! turned into a checked [`Config`]).

mod layers;
mod load;
mod validate;
pub use layers::{Layer, ReadFrom};
pub use load::{Loaded, Sources};
pub use validate::parse_duration;
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

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The PostgreSQL major version pgwarden runs by default (the `postgres:16` service it replaces).
pub const MAJOR: u64 = 16;

/// The largest snapshot that gets a spare copy by default, in MB.
pub const DEFAULT_SPARE_MAX_MB: u64 = 1024;
/// Ready throwaway clusters kept in the pool per settings by default.
pub const DEFAULT_EPHEMERAL_POOL: u32 = 1;

/// Every major version pgwarden installs and runs: [`MAJOR`], the one before it (an older
/// container's volume comes to 16 by `pgwarden upgrade`) and the one after it (the way off 16,
/// by the same command). A cluster runs with binaries of its own major only.
pub const MAJORS: [u64; 3] = [15, 16, 17];

/// "15, 16 or 17".
pub fn majors_text() -> String {
    let (last, rest) = MAJORS.split_last().expect("not empty");
    let rest: Vec<String> = rest.iter().map(u64::to_string).collect();
    format!("{} or {last}", rest.join(", "))
}

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
    /// Whether this process's environment set the password (`POSTGRES_PASSWORD[_FILE]`): it
    /// then wins over what a running instance was started with.
    pub password_from_env: bool,
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
    /// Spare clusters (`spare`, `--no-spare`, `PGWARDEN_SPARE`; on by default): after a launch
    /// is ready, the next cluster a `reset` or a `snapshot restore` needs is prepared in the
    /// background, so that the command is a rename ([`crate::cluster::spare`]).
    pub spare: bool,
    /// No snapshot larger than this many MB gets a spare copy (`spare_max_mb`): a spare
    /// doubles a snapshot's disk use.
    pub spare_max_mb: u64,
    /// The pool of throwaway clusters (`ephemeral_pool`, `PGWARDEN_EPHEMERAL_POOL`; default 1,
    /// 0 = off): once an `--ephemeral` server is ready, its supervisor keeps up to this many
    /// ready copies of its template per settings in memory, so that the next `--ephemeral`
    /// start is a rename ([`crate::cluster::spare::pool`]).
    pub ephemeral_pool: u32,
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
    /// The major version of the binaries this configuration asks for (`version`'s).
    pub fn major(&self) -> u64 {
        self.version.comparators.first().map_or(MAJOR, |c| c.major)
    }

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

#[cfg(test)]
mod tests {
    use super::validate::parse_version;
    use super::*;
    use crate::error::Result;
    use crate::os::paths::{self, DefaultPaths};
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
        let file = "listen_address = \"localhost:1\"\nversion = \"18\"\npassword = \"\"\n";
        let text = load(Some(file), &[("PGWARDEN_PORT", "abc")], Layer::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "listen_address",
            "version \"18\"",
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
    fn versions_other_than_15_16_and_17_are_refused() {
        let mut problems = vec![];
        assert!(parse_version("16.4.0", &mut problems).matches(&semver::Version::new(16, 4, 0)));
        assert!(parse_version("16", &mut problems).matches(&semver::Version::new(16, 14, 0)));
        assert!(parse_version("17", &mut problems).matches(&semver::Version::new(17, 10, 0)));
        assert!(problems.is_empty());
        parse_version("18", &mut problems);
        parse_version("14.2", &mut problems);
        parse_version("latest", &mut problems);
        assert_eq!(problems.len(), 3);
        assert!(problems[0].contains("15, 16 or 17"), "{problems:?}");
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
