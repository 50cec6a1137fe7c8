//! One supervisor per data directory: an exclusive flock held for pgwarden's whole life.
//!
//! The lock file lives in the instance's state directory (beside the data directory, see
//! [`crate::paths::state_dir`]) and holds the holder's pid, so that a second pgwarden can say
//! who is already there. The kernel drops an flock when its holder dies, whatever the cause, so
//! a killed pgwarden never leaves a stale lock behind.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while this process supervises the data directory; released on drop or death.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub state_dir: PathBuf,
}

impl InstanceLock {
    /// Takes the lock without waiting, or says which pid holds it.
    pub fn acquire(state_dir: &Path, data_dir: &Path) -> Result<InstanceLock> {
        std::fs::create_dir_all(state_dir).io("cannot create state directory", state_dir)?;
        let path = state_dir.join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .io("cannot open lock file", &path)?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::AlreadyRunning {
                data_dir: data_dir.to_path_buf(),
                pid: Some(pid.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "unknown".into()),
            });
        }
        file.set_len(0).io("cannot write lock file", &path)?;
        file.rewind().io("cannot write lock file", &path)?;
        writeln!(file, "{}", std::process::id()).io("cannot write lock file", &path)?;
        Ok(InstanceLock {
            _file: file,
            state_dir: state_dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("data.pgwarden");
        let first = InstanceLock::acquire(&state, Path::new("/d")).unwrap();
        let err = InstanceLock::acquire(&state, Path::new("/d"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        InstanceLock::acquire(&state, Path::new("/d")).unwrap();
    }
}
