//! Low priority for work nobody waits for (the background template fill, a reset's deletion):
//! nice 19 and the idle I/O class, which the kernel serves only when no one else needs the disk.
//! Both are per thread on Linux and inherited by the processes a thread forks. Best effort.

use std::os::unix::process::CommandExt;

const IOPRIO_WHO_PROCESS: nix::libc::c_int = 1;
const IOPRIO_CLASS_IDLE: nix::libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: nix::libc::c_int = 13;

/// Lowers the calling thread (0: the calling thread; both calls take a thread id on Linux).
/// Returns the error of the first call that failed, if any.
fn lower(tid: nix::libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain system calls on one thread's own id.
    let nice =
        unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, 19) };
    if nice != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let io = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if io != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Nice 19 and idle I/O for the calling thread and what it forks from now on.
pub fn lower_this_thread() {
    if let Err(e) = lower(nix::unistd::gettid().as_raw()) {
        tracing::debug!("cannot lower this thread's priority: {e}");
    }
}

/// Nice 19 and idle I/O for `command`'s process (set between fork and exec).
pub fn lower_command(command: &mut std::process::Command) {
    // SAFETY: two system calls, async-signal-safe; errors are ignored (best effort).
    unsafe {
        command.pre_exec(|| {
            let _ = lower(0);
            Ok(())
        });
    }
}
