//! Throwaway roots whose owner is gone, removed outside the way out of a stop.
//!
//! - A stopped throwaway server moves its root out of its name (one rename,
//!   [`private_dir::discard_throwaway`]) and starts a detached sweeper
//!   ([`sweep_in_background`]): removing ~1000 files from `/dev/shm` took 9 ms, which every
//!   `stop` and `exec --ephemeral` waited for.
//! - `exec --ephemeral` runs its server inside its own process under a name of its own
//!   (`exec-<pid>`), so a kill -9 of it leaves a root no later launch of that name would sweep
//!   (the server itself dies with it: parent-death signal).
//!
//! The sweeper, and every ephemeral launch of this user before it claims its own root,
//! removes both ([`sweep_throwaway_roots`]), with the ownership checks of the throwaway root:
//! a real directory of ours holding our marker; for an exec's root also its instance lock free
//! and no postgres running on its data directory. So what a killed sweeper leaves is gone at
//! the next launch: at most one root per server stopped since then.

use crate::instance::private_dir;
use crate::os::paths;
use crate::postmaster::pid_file::PidFile;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// The name prefix of the instances `exec --ephemeral` names itself ([`exec_name`]).
const EXEC_PREFIX: &str = "exec-";

/// The name `exec --ephemeral` gives its instance when none is given.
pub fn exec_name(pid: u32) -> String {
    format!("{EXEC_PREFIX}{pid}")
}

/// The hidden verb of the detached sweeper ([`sweep_in_background`]).
pub const SWEEP_VERB: &str = "sweep-throwaways";

/// Starts `pgwarden sweep-throwaways` detached (a process group of its own, `SCHED_IDLE`,
/// nice 19, idle I/O, its streams `/dev/null`; nobody waits for it): it removes the roots that stopped
/// throwaway servers moved out of their names. Whether it started.
pub fn sweep_in_background() -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let mut command = std::process::Command::new(exe);
    command
        .arg(SWEEP_VERB)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // Not reaped: its starter is on its way out (its parent then becomes the reaper).
    crate::os::background::spawn_idle(&mut command).is_ok()
}

/// Removes this user's throwaway roots that no server uses: those that stopped servers moved
/// out of their names ([`private_dir::discard_throwaway`]), and those of `exec-<pid>`
/// instances whose exec was killed and whose lock nobody holds; what it removed.
pub fn sweep_throwaway_roots() -> Vec<std::path::PathBuf> {
    let probe = paths::ephemeral_root(&exec_name(0));
    let (Some(base), Some(ours)) = (probe.parent(), probe.file_name()) else {
        return Vec::new();
    };
    let ours = ours.to_string_lossy();
    let Some(prefix) = ours.strip_suffix('0') else {
        return Vec::new();
    };
    // `pgwarden-<uid>-`: every throwaway root of this user, whatever its instance's name.
    let user_prefix = prefix.strip_suffix(EXEC_PREFIX).unwrap_or(prefix);
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(user_prefix) && name.contains(private_dir::DISCARDED) {
            // Moved there once its server had stopped: nothing uses it. Two sweepers at it at
            // once are harmless (each skips what the other removed).
            let root = entry.path();
            if private_dir::is_own_throwaway(&root) {
                match private_dir::remove_throwaway(&root) {
                    Ok(()) => removed.push(root),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(root = %root.display(), "cannot remove a stopped throwaway cluster: {e}")
                    }
                }
            }
            continue;
        }
        let exec_pid = name
            .strip_prefix(prefix)
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|pid| pid.parse::<i32>().ok());
        // Its exec still runs: it may not hold the instance lock yet (the root is made first).
        // A reused pid keeps the root until a later sweep; a zombie or a SIGKILLed one does not.
        if exec_pid.is_none_or(crate::instance::lock::live_and_well) {
            continue;
        }
        let root = entry.path();
        if private_dir::is_own_throwaway(&root) && sweep_one(&root) {
            removed.push(root);
        }
    }
    removed
}

/// Removes `root` when its instance lock is free and no postgres runs on its data directory;
/// whether it did.
fn sweep_one(root: &Path) -> bool {
    let data_dir = root.join("data");
    let lock_path = paths::state_dir(&data_dir).join("lock");
    // Held while removing, so that no launch of that name claims it meanwhile.
    let lock = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&lock_path);
    let _held = match lock {
        Ok(file) if file.try_lock().is_ok() => Some(file),
        Ok(_) => return false,
        // No lock file: a root its owner was killed in before it claimed the lock, or whose
        // state directory is gone; the marker says it is ours.
        Err(_) => None,
    };
    if let Some(postmaster) = PidFile::read(&data_dir)
        && nix::sys::signal::kill(postmaster.pid, None).is_ok()
    {
        // Still shutting down (its parent-death signal): the next sweep takes it.
        return false;
    }
    match private_dir::remove_throwaway(root) {
        Ok(()) => {
            tracing::info!(root = %root.display(), "removed the throwaway cluster of an `exec --ephemeral` that was killed");
            true
        }
        Err(e) => {
            tracing::warn!(root = %root.display(), "cannot remove an abandoned throwaway cluster: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_names_are_what_the_sweep_looks_for() {
        let root = paths::ephemeral_root(&exec_name(4242));
        let name = root.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.ends_with("-exec-4242"), "{name}");
    }
}
