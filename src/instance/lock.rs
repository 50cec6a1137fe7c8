//! One supervisor per data directory: an exclusive flock held for pgwarden's whole life.
//!
//! The lock file lives in the instance's state directory (beside the data directory, see
//! [`crate::os::paths::state_dir`]) and holds the holder's pid, so that a second pgwarden can say
//! who is already there. The kernel drops an flock when its holder dies, whatever the cause, so
//! a killed pgwarden never leaves a stale lock behind.
//!
//! But not at once: a SIGKILLed pgwarden is several threads (tokio's blocking pool), and its
//! thread-group leader becomes a zombie — "dead" to `ps` and `kill -0`'s readers — while the
//! other threads are still exiting; the open files, and with them the flock, are released only
//! when the last one is gone. A `pgwarden run` right after `kill -9` of the previous one could
//! find the lock held by a dead pid (1 in 15 here). So when the pid in the lock file is dead,
//! dying (a zombie, or SIGKILL pending) or unknown, [`InstanceLock::acquire`] waits for the lock
//! (bounded, [`DYING_HOLDER_WAIT`]) instead of refusing; a live holder is refused at once.

/// Set by `pgwarden start` for the `pgwarden run` it puts in the background (read by `main`,
/// and dropped by a relaunch, [`crate::backup::relaunch`]).
pub const BACKGROUND_ENV: &str = "PGWARDEN_BACKGROUND";

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock held by a dead or dying pgwarden is waited for.
pub const DYING_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// Held while this process supervises the data directory; released on drop or death.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub state_dir: PathBuf,
}

impl InstanceLock {
    /// Takes the lock without waiting, or says which pid holds it.
    pub fn acquire(state_dir: &Path, data_dir: &Path) -> Result<InstanceLock> {
        if let Err(e) = std::fs::create_dir_all(state_dir) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(Error::Privilege {
                    what: format!(
                        "cannot create {}: permission denied\n\
                         help: pgwarden keeps its lock, status and staging directories beside the data \
                         directory, so it must be able to write to {}; choose a --data-dir in a directory \
                         you can write to, or run pgwarden as a user who can",
                        state_dir.display(),
                        state_dir.parent().unwrap_or(state_dir).display()
                    ),
                });
            }
            return Err(e).io("cannot create state directory", state_dir);
        }
        let path = state_dir.join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .io("cannot open lock file", &path)?;
        let deadline = Instant::now() + DYING_HOLDER_WAIT;
        let mut said = false;
        while file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim().to_string();
            let live = pid.parse::<i32>().is_ok_and(live_and_well);
            if live || Instant::now() >= deadline {
                let others = crate::os::procfs::fd_holders(|target| target == path);
                if !live && !others.is_empty() {
                    tracing::warn!(
                        ?others,
                        "the lock is still held through an open descriptor by these processes"
                    );
                }
                return Err(Error::AlreadyRunning {
                    data_dir: data_dir.to_path_buf(),
                    pid: Some(pid)
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "unknown".into()),
                });
            }
            if !said {
                said = true;
                tracing::info!(
                    pid = %pid,
                    "the instance lock is still held by a pgwarden that is exiting; waiting for it"
                );
            }
            std::thread::sleep(Duration::from_millis(5));
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

/// Alive, not a zombie, and not being killed (SIGKILL pending).
fn live_and_well(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    let state = field("State:");
    // SIGKILL is signal 9: bit 8 of the pending masks (hex).
    let kill_pending = |mask: &str| u64::from_str_radix(mask, 16).is_ok_and(|m| m & (1 << 8) != 0);
    let dying = state.starts_with('Z')
        || state.starts_with('X')
        || kill_pending(field("ShdPnd:"))
        || kill_pending(field("SigPnd:"));
    !dying
}

/// The pid of the live supervisor holding `state_dir`'s lock, or `None` when no pgwarden runs
/// for it.
///
/// Asked of the kernel (`/proc/locks`: the flocks on the lock file's device and inode) rather
/// than by trying the lock: a probe that took the lock for a moment could make a `pgwarden run`
/// starting at that instant fail with "already running". Falls back to trying the lock where
/// /proc/locks cannot be read.
pub fn holder(state_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = state_dir.join("lock");
    let meta = std::fs::metadata(&path).ok()?;
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return holder_by_trying(&path);
    };
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 8978 fe:00:5423182 0 EOF" (blocked waiters start with "->").
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

fn holder_by_trying(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    if file.try_lock_shared().is_ok() {
        return None;
    }
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    Some(pid.trim().parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_is_read_from_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("data.pgwarden");
        assert_eq!(holder(&state), None);
        let lock = InstanceLock::acquire(&state, Path::new("/d")).unwrap();
        assert_eq!(holder(&state), Some(std::process::id()));
        assert_eq!(
            holder_by_trying(&state.join("lock")),
            Some(std::process::id())
        );
        drop(lock);
        assert_eq!(holder(&state), None);
        assert_eq!(holder_by_trying(&state.join("lock")), None);
    }

    #[test]
    fn a_lock_that_names_a_dead_pid_is_waited_for_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("data.pgwarden");
        std::fs::create_dir(&state).unwrap();
        let lock = state.join("lock");
        // The lock names a pid that is gone, while the flock is still held for a moment (as
        // by the last exiting thread of a SIGKILLed pgwarden).
        std::fs::write(&lock, format!("{}\n", i32::MAX)).unwrap();
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sleep", "0.4"])
            .spawn()
            .unwrap();
        let held = Instant::now() + Duration::from_secs(5);
        while holder_by_trying(&lock).is_none() && Instant::now() < held {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            holder_by_trying(&lock).is_some(),
            "flock did not take the lock"
        );
        let started = Instant::now();
        InstanceLock::acquire(&state, Path::new("/d")).expect("waited for, not refused");
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        holder.wait().unwrap();
    }

    #[test]
    fn a_dead_or_dying_pid_is_not_live() {
        assert!(live_and_well(std::process::id() as i32));
        assert!(!live_and_well(i32::MAX));
        // A zombie: a child that exited and was not reaped yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while live_and_well(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!live_and_well(pid));
        child.wait().unwrap();
    }

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
