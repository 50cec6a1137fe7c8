//! Where things live by default.
//!
//! A normal user gets the platform's per-user directories (the `directories` crate: on Linux
//! `~/.config/pgwarden`, `~/.local/share/pgwarden`). Root gets the system layout that a service
//! uses (`/etc/pgwarden`, `/var/lib/pgwarden`), because root's home is not traversable by the
//! unprivileged user that runs postgres.

use std::path::{Path, PathBuf};

/// The default locations for one user.
#[derive(Debug, Clone)]
pub struct DefaultPaths {
    pub config_file: PathBuf,
    pub data_root: PathBuf,
}

impl DefaultPaths {
    pub fn for_current_user() -> Self {
        if nix::unistd::geteuid().is_root() {
            return Self::system();
        }
        // A systemd service with `StateDirectory=` (our unit runs as the `pgwarden` system user,
        // whose home is no place for data): the directories systemd made for it.
        if let Some(service) = Self::from_systemd(&|k| std::env::var_os(k)) {
            return service;
        }
        match directories::ProjectDirs::from("", "", "pgwarden") {
            Some(dirs) => Self {
                config_file: dirs.config_dir().join("config.toml"),
                data_root: dirs.data_local_dir().to_path_buf(),
            },
            // No home directory known: fall back to the system layout, which then needs root.
            None => Self::system(),
        }
    }

    /// The layout of a system service from systemd's `$STATE_DIRECTORY` (data) and
    /// `$CONFIGURATION_DIRECTORY` (config file), if set. User units set no `StateDirectory=`.
    pub fn from_systemd(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<Self> {
        let first = |key: &str| {
            env(key).and_then(|v| {
                let text = v.to_string_lossy().into_owned();
                text.split(':')
                    .next()
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            })
        };
        let data_root = first("STATE_DIRECTORY")?;
        let config_file = first("CONFIGURATION_DIRECTORY")
            .map(|d| d.join("config.toml"))
            .unwrap_or_else(|| Self::system().config_file);
        Some(Self {
            config_file,
            data_root,
        })
    }

    pub fn system() -> Self {
        Self {
            config_file: PathBuf::from("/etc/pgwarden/config.toml"),
            data_root: PathBuf::from("/var/lib/pgwarden"),
        }
    }

    /// `<data root>/<major>/data`, e.g. `~/.local/share/pgwarden/16/data`.
    pub fn data_dir(&self, major: u64) -> PathBuf {
        self.data_root.join(major.to_string()).join("data")
    }

    /// The binaries cache: `<data root>/binaries/<version>/{bin,lib,share}`.
    pub fn install_dir(&self) -> PathBuf {
        self.data_root.join("binaries")
    }
}

/// The directory pgwarden keeps beside a data directory for its own per-instance state: the
/// supervisor lock, the status file and the server's Unix socket directory.
/// `/var/lib/pgwarden/16/data` → `/var/lib/pgwarden/16/data.pgwarden`.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".pgwarden");
    data_dir.with_file_name(name)
}

/// Where throwaway (`--ephemeral`) clusters live: `/dev/shm` (memory) when it exists, else the
/// temp dir. One directory per user and instance name, so that a leftover from a killed run is
/// found and swept by the next launch of that name.
pub fn ephemeral_root(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "pgwarden-{}-{name}",
        nix::unistd::geteuid().as_raw()
    ))
}

/// `<ephemeral root>/data`.
pub fn ephemeral_data_dir(name: &str) -> PathBuf {
    ephemeral_root(name).join("data")
}

/// The registry of running instances: `<dir>/<name>` is a symlink to the instance's state
/// directory, so that `pgwarden stop --name N` (or plain `stop`) finds an instance whose data
/// directory it cannot derive, such as an ephemeral one. Root: `/run/pgwarden`; others:
/// `$XDG_RUNTIME_DIR/pgwarden`, else `/tmp/pgwarden-<uid>`.
pub fn registry_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return absolute(Path::new(&dir));
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/pgwarden");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("pgwarden"),
        None => std::env::temp_dir().join(format!("pgwarden-{uid}")),
    }
}

/// Overrides the default data root (`~/.local/share/pgwarden`, `/var/lib/pgwarden`): where
/// instances' data (and, by default, the binaries cache) go.
pub const DATA_ROOT_ENV: &str = "PGWARDEN_DATA_ROOT";

/// Overrides the registry directory of running instances (see [`registry_dir`]).
pub const RUNTIME_DIR_ENV: &str = "PGWARDEN_RUNTIME_DIR";

/// Makes a path absolute against the current directory, without touching the filesystem.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_sits_beside_the_data_dir() {
        assert_eq!(
            state_dir(Path::new("/var/lib/pgwarden/16/data")),
            PathBuf::from("/var/lib/pgwarden/16/data.pgwarden")
        );
    }

    #[test]
    fn a_service_uses_the_directories_systemd_made() {
        let env = |k: &str| match k {
            "STATE_DIRECTORY" => Some("/var/lib/pgwarden:/var/lib/other".into()),
            _ => None,
        };
        let paths = DefaultPaths::from_systemd(&env).unwrap();
        assert_eq!(
            paths.data_dir(16),
            PathBuf::from("/var/lib/pgwarden/16/data")
        );
        assert_eq!(
            paths.config_file,
            PathBuf::from("/etc/pgwarden/config.toml")
        );
        assert!(DefaultPaths::from_systemd(&|_| None).is_none());
    }

    #[test]
    fn default_data_dir_has_the_major_version() {
        let paths = DefaultPaths::system();
        assert_eq!(
            paths.data_dir(16),
            PathBuf::from("/var/lib/pgwarden/16/data")
        );
    }
}
