//! Remembered settings: what an instance was last started with, in its state directory.
//!
//! `<state dir>/settings.json`, written by `pgwarden run` once the port is known: the name,
//! the data directory, the project and config files, the address, user and database, and where
//! the password came from (a file, an environment variable, a config key, the default) — never
//! the password itself. `url`, `env`, `psql`, `check` and `exec` connect with these, so that a
//! command run without the flags or environment the server was started with still reaches it
//! as it runs; `start` and `restart` reuse every flag of the last launch ([`Flags`]) that the
//! environment and the command line do not override, so that a plain `restart` or a later
//! `start` gets the same instance.

use crate::config::{self, Config, Layer, Secret};
use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const FILE: &str = "settings.json";

pub use crate::config::PasswordSource;

impl PasswordSource {
    /// Reads the password again from where it came from. An environment variable is read from
    /// this process's environment, which may not have it: then the error names it.
    pub fn read(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret> {
        match self {
            PasswordSource::Default => Ok(Secret::new(config::DEFAULT_NAME)),
            PasswordSource::Env { name } => env(name).map(Secret::new).ok_or_else(|| Error::Config {
                problems: vec![format!(
                    "the server was started with the password from ${name}, which this command's \
                     environment does not have\n    help: set {name} here too (pgwarden never stores the password)"
                )],
            }),
            PasswordSource::File { path } => {
                let text = std::fs::read_to_string(path).io("cannot read the password file", path)?;
                Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
            PasswordSource::Key { file } => {
                let layer = config::Layer::from_file(file)?;
                Ok(Secret::new(
                    layer
                        .password
                        .unwrap_or_else(|| config::DEFAULT_NAME.into()),
                ))
            }
        }
    }

    /// "POSTGRES_PASSWORD", "file /run/secrets/pw", "password in ./pgwarden.toml", "default".
    pub fn describe(&self) -> String {
        match self {
            PasswordSource::Default => "the default".into(),
            PasswordSource::Env { name } => format!("${name}"),
            PasswordSource::File { path } => format!("the file {}", path.display()),
            PasswordSource::Key { file } => format!("`password` in {}", file.display()),
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub name: String,
    pub named: bool,
    pub data_dir: PathBuf,
    pub ephemeral: bool,
    pub project_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub listen_address: IpAddr,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: PasswordSource,
    /// What the command line set: kept for the next `start` that does not set it again.
    #[serde(default)]
    pub flags: Flags,
}

/// The flags a launch was given that the next launch reuses: every setting flag of `start`
/// except the ones that find the instance (`--name`, `--data-dir`, `--config`, `--system`:
/// the registry links a name to its data directory) and `--ephemeral` (a throwaway instance is
/// asked for each time). A flag given once stays until another value is given (or `pgwarden
/// reset` forgets the instance); the environment and the command line override it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flags {
    pub port: Option<u16>,
    pub listen_address: Option<String>,
    pub http_address: Option<String>,
    pub run_as: Option<String>,
    pub init_dir: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    pub install_dir: Option<PathBuf>,
    pub version: Option<String>,
    pub mirror: Option<String>,
    pub binaries: Option<PathBuf>,
    pub npm_registry: Option<String>,
    /// Without the credentials it may carry: a password is never remembered.
    pub pypi_index: Option<String>,
    pub sha256: Option<String>,
    pub download_timeout: Option<String>,
}

impl Flags {
    /// The remembered part of a command line's `layer`, its paths made absolute (a later
    /// command may run elsewhere).
    pub fn of(layer: &Layer) -> Flags {
        let absolute = |p: &Option<PathBuf>| p.as_deref().map(crate::os::paths::absolute);
        Flags {
            port: layer.port,
            listen_address: layer.listen_address.clone(),
            http_address: layer.http_address.clone(),
            run_as: layer.run_as.clone(),
            init_dir: absolute(&layer.init_dir),
            archive: absolute(&layer.archive),
            install_dir: absolute(&layer.install_dir),
            version: layer.version.clone(),
            mirror: layer.mirror.clone(),
            binaries: absolute(&layer.binaries),
            npm_registry: layer.npm_registry.clone(),
            pypi_index: layer.pypi_index.as_deref().map(|url| {
                config::pip_conf::check_url(url).map_or_else(|_| url.to_string(), |(bare, _)| bare)
            }),
            sha256: layer.sha256.clone(),
            download_timeout: layer.download_timeout.clone(),
        }
    }

    /// These flags as a config layer (the one between the files and the environment).
    pub fn layer(&self) -> Layer {
        Layer {
            port: self.port,
            listen_address: self.listen_address.clone(),
            http_address: self.http_address.clone(),
            run_as: self.run_as.clone(),
            init_dir: self.init_dir.clone(),
            archive: self.archive.clone(),
            install_dir: self.install_dir.clone(),
            version: self.version.clone(),
            mirror: self.mirror.clone(),
            binaries: self.binaries.clone(),
            npm_registry: self.npm_registry.clone(),
            pypi_index: self.pypi_index.clone(),
            sha256: self.sha256.clone(),
            download_timeout: self.download_timeout.clone(),
            ..Layer::default()
        }
    }
}

impl Remembered {
    /// What `config` (with its port chosen) says; `sources` are what it was loaded from: the
    /// remembered flags it was given, overridden by its command line's.
    pub fn of(config: &Config, sources: &config::Sources) -> Remembered {
        Remembered {
            name: config.name.clone(),
            named: config.named,
            data_dir: config.data_dir.clone(),
            ephemeral: config.ephemeral,
            project_file: config.project_file().map(Path::to_path_buf),
            config_file: config.config_file.clone(),
            listen_address: config.listen_address,
            port: config.port,
            user: config.user.clone(),
            database: config.database.clone(),
            password: config.password_source.clone(),
            flags: Flags::of(&sources.remembered.clone().merge(sources.flags.clone())),
        }
    }

    /// The differences that matter to a client between what runs (`self`) and what `config`
    /// asks for, as "port 5433 (running) vs 5434 (asked)" phrases. A port of 0 asks for any.
    pub fn differences(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if config.port != 0 && config.port != self.port {
            out.push(format!(
                "port {} (running) vs {} (asked)",
                self.port, config.port
            ));
        }
        if config.listen_address != self.listen_address {
            out.push(format!(
                "listen_address {} (running) vs {} (asked)",
                self.listen_address, config.listen_address
            ));
        }
        if config.user != self.user {
            out.push(format!(
                "user {} (running) vs {} (asked)",
                self.user, config.user
            ));
        }
        if config.database != self.database {
            out.push(format!(
                "database {} (running) vs {} (asked)",
                self.database, config.database
            ));
        }
        out
    }
}

/// Writes `settings.json` into `state_dir` atomically, 0600: no secret is in it, but where the
/// password comes from, the project and the paths are nobody else's business (no state file is
/// readable by other users).
pub fn write(state_dir: &Path, remembered: &Remembered) -> Result<()> {
    let path = state_dir.join(FILE);
    crate::os::json_file::write(
        &path,
        remembered,
        crate::os::json_file::PRIVATE,
        crate::os::json_file::Durability::Rename,
    )
}

/// Reads `settings.json`; `None` when missing or unreadable (an instance from an older pgwarden).
pub fn read(state_dir: &Path) -> Option<Remembered> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_package_index_keeps_no_credentials() {
        let layer = Layer {
            pypi_index: Some("https://ci:s3cret@pypi.corp.example/simple".into()),
            ..Layer::default()
        };
        let flags = Flags::of(&layer);
        assert_eq!(
            flags.pypi_index.as_deref(),
            Some("https://pypi.corp.example/simple/")
        );
        assert!(!serde_json::to_string(&flags).unwrap().contains("s3cret"));
    }

    #[test]
    fn round_trips_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let remembered = Remembered {
            name: "shop".into(),
            named: true,
            data_dir: "/d".into(),
            ephemeral: false,
            project_file: Some("/p/pgwarden.toml".into()),
            config_file: None,
            listen_address: "127.0.0.1".parse().unwrap(),
            port: 5821,
            user: "app".into(),
            database: "app".into(),
            password: PasswordSource::Env {
                name: "POSTGRES_PASSWORD".into(),
            },
            flags: Flags::default(),
        };
        write(dir.path(), &remembered).unwrap();
        assert_eq!(read(dir.path()), Some(remembered.clone()));
        let err = remembered.password.read(&|_| None).unwrap_err().to_string();
        assert!(err.contains("POSTGRES_PASSWORD"), "{err}");
        let pw = remembered
            .password
            .read(&|k| (k == "POSTGRES_PASSWORD").then(|| "newpw".into()))
            .unwrap();
        assert_eq!(pw.expose(), "newpw");
    }

    #[test]
    fn a_password_key_is_read_again_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgwarden.toml");
        std::fs::write(&file, "password = \"s3cret\"\n").unwrap();
        let source = PasswordSource::Key { file };
        assert_eq!(source.read(&|_| None).unwrap().expose(), "s3cret");
    }

    #[test]
    fn a_launch_keeps_the_flags_it_was_given_and_those_it_remembered() {
        let remembered = Flags {
            port: Some(5821),
            http_address: Some("127.0.0.1:9187".into()),
            archive: Some("/a.tgz".into()),
            sha256: Some("ab".repeat(32)),
            ..Flags::default()
        };
        let sources = config::Sources {
            remembered: remembered.layer(),
            flags: Layer {
                port: Some(5900),
                binaries: Some("/usr/lib/postgresql/16".into()),
                ..Layer::default()
            },
            ..config::Sources::default()
        };
        let kept = Flags::of(&sources.remembered.clone().merge(sources.flags.clone()));
        assert_eq!(kept.port, Some(5900));
        assert_eq!(kept.http_address.as_deref(), Some("127.0.0.1:9187"));
        // A new source replaces the remembered one with its pin: never both.
        assert_eq!(kept.binaries, Some("/usr/lib/postgresql/16".into()));
        assert_eq!((kept.archive, kept.sha256), (None, None));
        // Files written before every flag was kept still read.
        let old: Flags = serde_json::from_str(r#"{"port":5821,"listen_address":null}"#).unwrap();
        assert_eq!(old.port, Some(5821));
    }
}
