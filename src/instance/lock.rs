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
pub fn live_and_well(pid: i32) -> bool {
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
/// Asked of the kernel rather than by trying the lock: a probe that took the lock for a moment
/// could make a `pgwarden run` starting at that instant fail with "already running". First the
/// process the lock file names: its own descriptors' `/proc/<pid>/fdinfo` list the locks each
/// holds, exactly. Then `/proc/locks`, every flock of the machine, for a holder that has not
/// yet written its pid: that file is made a page per read, each read starting again by line
/// number, so while other locks are released (fifty instances stopping at once) a line can be
/// skipped between two pages — read alone it once made a running instance look stopped, and
/// `stop` left it running. Falls back to trying the lock where /proc cannot be read.
pub fn holder(state_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = state_dir.join("lock");
    let meta = std::fs::metadata(&path).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let named = std::fs::read_to_string(&path)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok());
    if let Some(pid) = named
        && holds(pid, &wanted)
    {
        return Some(pid);
    }
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return holder_by_trying(&path);
    };
    locks.lines().find_map(|line| flock_on(line, &wanted))
}

/// The pid in a lock line of /proc/locks or of an fdinfo ("lock:" stripped) when it is an
/// flock on the file `wanted` ("major:minor:inode" in hex, hex, decimal):
/// "1: FLOCK  ADVISORY  WRITE 8978 fe:00:5423182 0 EOF" (blocked waiters have "->" after "1:").
fn flock_on(line: &str, wanted: &str) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted))
        .then(|| fields.get(4)?.parse().ok())
        .flatten()
}

/// Whether process `pid` holds an flock on `wanted` through one of its descriptors.
fn holds(pid: u32, wanted: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_to_string(fd.path()).is_ok_and(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| flock_on(l, wanted) == Some(pid))
        })
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

    /// Many other flocks taken and released meanwhile (as when fifty instances stop at once)
    /// shift the lines of /proc/locks between the pages it is read in; a running instance must
    /// never look stopped then. Read from /proc/locks alone, this saw `None` here.
    #[test]
    fn a_holder_is_seen_while_other_locks_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("data.pgwarden");
        let _lock = InstanceLock::acquire(&state, Path::new("/d")).unwrap();
        let others: Vec<File> = (0..300)
            .map(|i| File::create(dir.path().join(format!("other-{i}"))).unwrap())
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let missed = std::thread::scope(|scope| {
            let churn = scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for file in &others {
                        file.lock().unwrap();
                    }
                    for file in &others {
                        file.unlock().unwrap();
                    }
                }
            });
            let missed = (0..2000).filter(|_| holder(&state).is_none()).count();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            churn.join().unwrap();
            missed
        });
        assert_eq!(
            missed, 0,
            "the running holder looked absent {missed} times in 2000"
        );
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
