//! The System V shared memory segment of a postmaster that was killed (SIGKILL: an OOM kill, a
//! kill of its whole cgroup). PostgreSQL removes it when the next postmaster starts on the same
//! data directory; a throwaway cluster gets no next start, so its sweep removes it
//! ([`release`]) — a segment per killed server would otherwise stay until the machine reboots,
//! counted against `kernel.shmmni`. Its dynamic segments live in the cluster's own directory:
//! throwaway servers run with `dynamic_shared_memory_type=mmap`
//! ([`crate::instance::launch::EPHEMERAL_SETTINGS`]).

use super::pid_file::PidFile;
use nix::libc;
use std::path::Path;

/// Removes the segment that `data_dir`'s `postmaster.pid` names (line 7) when it is still there
/// with that key, belongs to the owner of `data_dir` and no process is attached to it — so a
/// pid file written by the server's user names nothing but an unused segment of that user's.
/// Whether one was removed. For a data directory no postmaster runs on.
pub fn release(data_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((key, id)) = PidFile::read(data_dir).and_then(|file| file.shmem) else {
        return false;
    };
    let Ok(owner) = std::fs::symlink_metadata(data_dir).map(|meta| meta.uid()) else {
        return false;
    };
    // SAFETY: an all-zero shmid_ds is valid plain data; IPC_STAT fills it in.
    let mut segment: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `segment` is a shmid_ds of our own for IPC_STAT to write.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut segment) } != 0 {
        return false;
    }
    let perm = &segment.shm_perm;
    if perm.__key as i64 as u64 != key || perm.uid != owner || segment.shm_nattch != 0 {
        return false;
    }
    // SAFETY: IPC_RMID reads no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of our own that the pid file names is removed only when the key matches and
    /// nobody is attached to it.
    #[test]
    fn only_an_unattached_segment_with_the_named_key_is_released() {
        let dir = tempfile::tempdir().unwrap();
        // A private key (0): no clash with a segment that exists already.
        let key = libc::IPC_PRIVATE;
        // SAFETY: plain system calls on a segment this test makes and removes.
        let id = unsafe { libc::shmget(key, 64, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let write = |key: i64| {
            std::fs::write(
                dir.path().join("postmaster.pid"),
                format!("1\n/d\n1\n5432\n/s\n*\n{key:9} {id:9}\nready\n"),
            )
            .unwrap()
        };
        let exists = || {
            // SAFETY: as above.
            let mut s: libc::shmid_ds = unsafe { std::mem::zeroed() };
            unsafe { libc::shmctl(id, libc::IPC_STAT, &mut s) == 0 }
        };
        // Attached: kept.
        write(key as i64);
        // SAFETY: as above; detached below.
        let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        assert!(!release(dir.path()));
        assert!(exists());
        unsafe { libc::shmdt(at) };
        // Another key: kept.
        write(key as i64 + 1);
        assert!(!release(dir.path()));
        assert!(exists());
        // The named one, unattached: removed.
        write(key as i64);
        assert!(release(dir.path()));
        assert!(!exists());
        // Gone: nothing to do.
        assert!(!release(dir.path()));
    }
}
