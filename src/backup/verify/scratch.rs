//! The verification's throwaway directory: `pgwarden-verify-<uid>-<pid>` in `/dev/shm` (memory)
//! when the restored cluster fits there with memory to spare, else in the temp directory, and
//! refused up front when it fits nowhere ([`choose`]). It holds the throwaway cluster (`data/`,
//! the server's user's), its socket directory (`socket/`, the server's user's, 0700: only that
//! user and root reach the server) and its tablespaces (`tablespaces/<oid>`).
//!
//! Removed on drop. A verify killed with SIGKILL cannot remove it, and its server dies with it
//! (the postmaster is started with a parent-death signal, see
//! [`crate::postmaster::temp_server`]); the next verify sweeps what is left ([`sweep`]): roots of
//! this user whose pid is gone — only real directories of this user holding the marker, never
//! anything else found under the name —, after killing any process still working in their
//! cluster.

use crate::error::{Error, Result};
use crate::instance::private_dir;
use crate::os::privilege::RunAs;
use std::path::{Path, PathBuf};

const PREFIX: &str = "pgwarden-verify-";

/// Memory left to everything else when the cluster is restored into `/dev/shm`.
const MEMORY_HEADROOM: u64 = 512 << 20;

/// A place the throwaway cluster may go, as [`choose`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub dir: PathBuf,
    /// Free bytes on its filesystem.
    pub free: u64,
    /// True for a memory filesystem (`/dev/shm`): what it holds is taken from memory.
    pub in_memory: bool,
}

/// The first place where `need` bytes fit (a memory one only when `memory_available` keeps
/// [`MEMORY_HEADROOM`] beside them); `Err` names every place and why it was refused.
pub fn choose(
    need: u64,
    places: &[Place],
    memory_available: u64,
) -> std::result::Result<Place, String> {
    let mut refused = Vec::new();
    for place in places {
        if place.free < need {
            refused.push(format!(
                "{}: {} free",
                place.dir.display(),
                super::super::human_bytes(place.free)
            ));
        } else if place.in_memory && memory_available < need + MEMORY_HEADROOM {
            refused.push(format!(
                "{}: memory, {} available",
                place.dir.display(),
                super::super::human_bytes(memory_available)
            ));
        } else {
            return Ok(place.clone());
        }
    }
    Err(refused.join("; "))
}

/// `/dev/shm` (when it is a directory) and the temp directory, as they are now.
fn places() -> Vec<Place> {
    let mut out = Vec::new();
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        out.push(Place {
            dir: shm.to_path_buf(),
            free: super::super::free_space(shm).unwrap_or(0),
            in_memory: true,
        });
    }
    let tmp = std::env::temp_dir();
    out.push(Place {
        free: super::super::free_space(&tmp).unwrap_or(0),
        dir: tmp,
        in_memory: false,
    });
    out
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (0 when unreadable).
fn memory_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// The bytes a restore of a backup of `total_bytes` needs: its files, a few WAL segments the
/// replay may add, and the end-of-recovery checkpoint's room.
pub fn need_for(total_bytes: u64, wal_segment_size: u64) -> u64 {
    total_bytes + 4 * wal_segment_size + (64 << 20)
}

/// The throwaway directory; removed (with everything in it) on drop.
#[derive(Debug)]
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    /// Chooses the place for `need` bytes and makes the directory there, with `data/`,
    /// `socket/` and `tablespaces/` for `run_as`.
    pub fn create(need: u64, run_as: &RunAs) -> Result<Scratch> {
        let place = choose(need, &places(), memory_available()).map_err(|refused| Error::Backup {
            what: format!(
                "not enough room to restore the backup for verification: it needs {} ({refused}); \
                 nothing was changed\nhelp: free some space in one of them (or memory), or set TMPDIR \
                 to a directory with room",
                super::super::human_bytes(need)
            ),
        })?;
        let root = place.dir.join(format!(
            "{PREFIX}{}-{}",
            nix::unistd::geteuid().as_raw(),
            crate::os::background::command_pid()
        ));
        private_dir::create_throwaway(&root)?;
        let scratch = Scratch { root };
        for dir in [scratch.data_dir(), scratch.socket_dir()] {
            run_as.own_dir(&dir, 0o700)?;
        }
        let spaces = scratch.root.join("tablespaces");
        std::fs::create_dir(&spaces)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &spaces,
                    std::fs::Permissions::from_mode(private_dir::private_mode()),
                )
            })
            .map_err(|e| Error::Backup {
                what: format!("cannot create {}: {e}", spaces.display()),
            })?;
        Ok(scratch)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    /// Where tablespace `oid` is restored.
    pub fn tablespace(&self, oid: &str) -> PathBuf {
        self.root.join("tablespaces").join(oid)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = private_dir::remove_throwaway(&self.root) {
            tracing::warn!(dir = %self.root.display(), "cannot remove the verification's directory: {e}");
        }
    }
}

/// Removes what killed verifications of this user left: roots whose pid is gone, after
/// killing any process still working in their cluster. Returns the roots removed.
pub fn sweep() -> Vec<PathBuf> {
    let mine = format!("{PREFIX}{}-", nix::unistd::geteuid().as_raw());
    let mut removed = Vec::new();
    for place in places() {
        for entry in std::fs::read_dir(&place.dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&mine).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if alive {
                continue;
            }
            let root = entry.path();
            // Only a real directory of ours with our marker, and its real `data` directory:
            // another user can plant anything under this name in /dev/shm, e.g. a symlink to
            // the directory of a running cluster, whose processes would then be killed.
            let data = root.join("data");
            let own = private_dir::is_own_throwaway(&root)
                && std::fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir());
            if !own {
                tracing::debug!(dir = %root.display(), "not swept: not a verification directory of ours");
                continue;
            }
            for orphan in crate::os::procfs::working_in(&data) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(orphan as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            remove_shared_memory(&data);
            match private_dir::remove_throwaway(&root) {
                Ok(()) => removed.push(root),
                Err(e) => tracing::debug!(dir = %root.display(), "not swept: {e}"),
            }
        }
    }
    removed
}

/// Removes the System V shared memory segment a killed postmaster of `data` left (PostgreSQL
/// removes it at every shutdown but a SIGKILL; a new server on the same data directory would
/// reuse it, and this one is removed with its directory): the key and id in line 7 of its
/// `postmaster.pid`, only when the segment there still has that key and nothing attached.
fn remove_shared_memory(data: &Path) {
    use nix::libc;
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let mut fields = text.lines().nth(6).unwrap_or_default().split_whitespace();
    let (Some(key), Some(id)) = (
        fields.next().and_then(|k| k.parse::<i64>().ok()),
        fields.next().and_then(|i| i.parse::<libc::c_int>().ok()),
    ) else {
        return;
    };
    // SAFETY: shmid_ds is plain data; IPC_STAT fills it or fails.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to the struct above.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return;
    }
    if i64::from(ds.shm_perm.__key) != key || ds.shm_nattch != 0 {
        return;
    }
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(dir: &str, free: u64, in_memory: bool) -> Place {
        Place {
            dir: dir.into(),
            free,
            in_memory,
        }
    }

    #[test]
    fn memory_is_used_only_with_memory_to_spare_and_nothing_that_does_not_fit() {
        let gb = 1 << 30;
        let places = [
            place("/dev/shm", 8 * gb, true),
            place("/tmp", 4 * gb, false),
        ];
        assert_eq!(
            choose(gb, &places, 4 * gb).unwrap().dir,
            Path::new("/dev/shm")
        );
        // Room in /dev/shm, but not in memory: the disk.
        assert_eq!(choose(gb, &places, gb).unwrap().dir, Path::new("/tmp"));
        // Nowhere: refused, naming both.
        let refused = choose(6 * gb, &places, gb).unwrap_err();
        assert!(
            refused.contains("/dev/shm: memory") && refused.contains("/tmp: 4.3 GB free"),
            "{refused}"
        );
    }
}
