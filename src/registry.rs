//! The registry of running instances, by name: `<registry dir>/<name>` is a symlink to the
//! instance's state directory. It lets commands find an instance whose data directory they
//! cannot derive from the config (an ephemeral one, or one started with flags the command was
//! not given). Whether the instance really runs is still decided by its lock, never by the link.

use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::paths;
use std::path::{Path, PathBuf};

/// This process's entry; removed on drop if it still points at our state directory.
#[derive(Debug)]
pub struct Registration {
    link: PathBuf,
    target: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).ok().as_deref() == Some(self.target.as_path()) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Records that instance `name` runs with state directory `state_dir` (atomically replacing a
/// stale entry).
pub fn register(name: &str, state_dir: &Path) -> Result<Registration> {
    let dir = paths::registry_dir();
    crate::private_dir::ensure(&dir, 0o700)?;
    let link = dir.join(name);
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(state_dir, &temp).io("cannot create", &temp)?;
    std::fs::rename(&temp, &link).io("cannot create", &link)?;
    Ok(Registration {
        link,
        target: state_dir.to_path_buf(),
    })
}

/// The state directory of the instance `config` addresses: the named data directory's when one
/// was given explicitly, else the registered one for its name, else the default data
/// directory's.
pub fn locate(config: &Config) -> PathBuf {
    let derived = paths::state_dir(&config.data_dir);
    if config.data_dir_explicit {
        return derived;
    }
    std::fs::read_link(paths::registry_dir().join(&config.name))
        .ok()
        .filter(|target| target.is_dir())
        .unwrap_or(derived)
}
