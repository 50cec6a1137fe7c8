//! The registry of instances, by name: `<registry dir>/<key>` is a symlink to the instance's
//! state directory, and `<key>.lock` is flocked by the pgwarden that runs it (and removed by
//! it at stop, while still held: [`lock_name`] says why that is safe).
//!
//! It lets commands find an instance whose data directory they cannot derive from the config
//! (an ephemeral one, a project's, or one started with flags the command was not given), and it
//! makes names exclusive: a name belongs to one data directory while it runs, because starting
//! takes the name's lock first. The link stays after a stop (the name keeps pointing at its
//! data, for `ls`, `reset` and the next `start`); whether the instance runs is decided by its
//! instance lock, never by the link.
//!
//! The key is the instance's name, except for an unnamed instance with a data directory of its
//! own (`run --data-dir X`, no name): it is keyed `@<digest of X>`, listed by `ls` but never
//! reached by a command that names neither it nor its data directory — a bare `pgwarden stop`
//! reaches only the unnamed instance in the default place.

use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::instance::lock;
use crate::os::paths;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// This process's entry: the name's lock, held while it runs.
#[derive(Debug)]
pub struct Registration {
    /// Flocked until dropped; its file is removed just before (see [`lock_name`]).
    lock: File,
    lock_path: PathBuf,
    pub key: String,
    /// A throwaway instance's entry goes with it (its state directory is removed anyway).
    remove_on_drop: Option<PathBuf>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(link) = &self.remove_on_drop {
            let _ = std::fs::remove_file(link);
        }
        // Removed while still held: a start that opened this file meanwhile finds it unlinked
        // once it gets the lock, and opens the path again.
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.lock.unlock();
    }
}

/// The registry key of the instance `config` describes.
pub fn key(config: &Config) -> String {
    if config.named || !config.data_dir_explicit {
        return config.name.clone();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(config.data_dir.as_os_str().as_encoded_bytes());
    format!("@{}", &hex::encode(digest)[..16])
}

/// Whether a key is an instance name (not a data-dir key).
pub fn is_name(key: &str) -> bool {
    !key.starts_with('@')
}

/// Records that the instance of `config` runs with state directory `state_dir`, or refuses
/// when its name already runs with another data directory.
pub fn register(config: &Config, state_dir: &Path) -> Result<Registration> {
    let dir = paths::registry_dir();
    crate::instance::private_dir::ensure(&dir, 0o700)?;
    let key = key(config);
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = lock_name(&lock_path)?;
    let link = dir.join(&key);
    let linked = std::fs::read_link(&link).ok();
    let other = linked.clone().filter(|t| t != state_dir);
    // Held: the name runs elsewhere. Not held but the linked instance runs: it was started
    // by a pgwarden that did not lock names; also elsewhere.
    let busy = lock.is_none() || other.as_deref().and_then(lock::holder).is_some();
    let Some(lock) = lock.filter(|_| !busy) else {
        let other = other.or(linked).unwrap_or_else(|| state_dir.to_path_buf());
        let pid = lock::holder(&other).map_or_else(|| "unknown".into(), |p| p.to_string());
        return Err(name_taken(
            &config.name,
            &data_dir_of(&other),
            &pid,
            &config.data_dir,
        ));
    };
    let temp = dir.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(state_dir, &temp).io("cannot create", &temp)?;
    std::fs::rename(&temp, &link).io("cannot create", &link)?;
    Ok(Registration {
        lock,
        lock_path,
        key,
        remove_on_drop: config.ephemeral.then_some(link),
    })
}

/// The name's lock at `path`, flocked by this process; `None` when another holds it.
///
/// The lock file is removed at stop ([`Registration`]'s drop, while still holding it), so a
/// lock taken on a file that was unlinked meanwhile would lock nothing: after `try_lock`, the
/// path must still name the very file locked, else the open is retried on the new file.
fn lock_name(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..100 {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .io("cannot open", path)?;
        if file.try_lock().is_err() {
            return Ok(None);
        }
        let held = file.metadata().io("cannot read", path)?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok(Some(file)),
            // Removed (or replaced) by the pgwarden that stopped just before the lock was
            // taken: that file locks nothing any more.
            _ => continue,
        }
    }
    Err(Error::Server {
        what: format!(
            "cannot lock {}: it is removed and created again continually
             help: another program is deleting files in {}; stop it",
            path.display(),
            path.parent().unwrap_or(Path::new("/")).display()
        ),
    })
}

/// The state directory the registry links `key` to, if it still exists.
pub fn lookup(key: &str) -> Option<PathBuf> {
    std::fs::read_link(paths::registry_dir().join(key))
        .ok()
        .filter(|target| target.is_dir())
}

/// The state directory of the instance `config` addresses: the named data directory's when one
/// was given explicitly (refused when a name was given too and that name runs elsewhere), else
/// the registered one for its key, else the configured data directory's.
pub fn locate(config: &Config) -> Result<PathBuf> {
    let derived = paths::state_dir(&config.data_dir);
    if config.data_dir_explicit {
        if config.named
            && let Some(registered) = lookup(&config.name)
            && registered != derived
            && lock::holder(&registered).is_some()
        {
            return Err(Error::Server {
                what: format!(
                    "instance {:?} runs with data directory {}, not {}\n\
                     help: drop --data-dir (the name finds it), or drop --name to address {}",
                    config.name,
                    data_dir_of(&registered).display(),
                    config.data_dir.display(),
                    config.data_dir.display()
                ),
            });
        }
        return Ok(derived);
    }
    Ok(lookup(&key(config)).unwrap_or(derived))
}

/// The data directory of the instance whose state directory is `state_dir`.
pub fn data_dir_of(state_dir: &Path) -> PathBuf {
    if let Some(r) = crate::instance::remembered::read(state_dir) {
        return r.data_dir;
    }
    let name = state_dir.file_name().unwrap_or_default().to_string_lossy();
    state_dir.with_file_name(name.strip_suffix(".pgwarden").unwrap_or(&name))
}

/// One registry entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub state_dir: PathBuf,
}

/// Every entry of this user's registry whose state directory still exists, by key.
pub fn entries() -> Vec<Entry> {
    entries_in(&paths::registry_dir())
}

/// The entries of the registry in `dir`.
pub fn entries_in(dir: &Path) -> Vec<Entry> {
    let mut out: Vec<Entry> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let key = e.file_name().to_str()?.to_string();
            if key.starts_with('.') || key.ends_with(".lock") {
                return None;
            }
            let state_dir = std::fs::read_link(e.path()).ok().filter(|t| t.is_dir())?;
            Some(Entry { key, state_dir })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The error for a name that already runs with another data directory.
fn name_taken(name: &str, running: &Path, pid: &str, wanted: &Path) -> Error {
    Error::Server {
        what: format!(
            "instance {name:?} already runs with data directory {} (pid {pid}); a name belongs to \
             one data directory, so {} cannot run under it\n\
             help: stop it first (`pgwarden stop --name {name}`), or give this one another --name",
            running.display(),
            wanted.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_lock_is_removed_at_stop_and_a_stale_open_never_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.lock");
        let held = lock_name(&path).unwrap().expect("free");
        assert!(lock_name(&path).unwrap().is_none(), "held elsewhere");
        // A start that opened the file just before the stop removed it...
        let stale = File::open(&path).unwrap();
        let registration = Registration {
            lock: held,
            lock_path: path.clone(),
            key: "shop".into(),
            remove_on_drop: None,
        };
        drop(registration);
        assert!(!path.exists(), "removed at stop");
        // ...gets its flock, but the name's lock is the new file: one holder only.
        stale.try_lock().unwrap();
        let new = lock_name(&path).unwrap().expect("the new file is free");
        assert!(path.exists());
        assert!(lock_name(&path).unwrap().is_none());
        drop((stale, new));
    }

    #[test]
    fn unnamed_instances_with_their_own_data_dir_are_keyed_by_it() {
        let mut config = crate::config::Config::load_with(
            &Default::default(),
            &|_| None,
            &crate::os::paths::DefaultPaths::system(),
        )
        .unwrap();
        assert_eq!(key(&config), "default");
        config.data_dir_explicit = true;
        let k = key(&config);
        assert!(k.starts_with('@') && !is_name(&k), "{k}");
        config.named = true;
        config.name = "shop".into();
        assert_eq!(key(&config), "shop");
    }
}
