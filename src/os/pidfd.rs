//! Waiting for another process's exit without polling: a pidfd (`pidfd_open(2)`, Linux ≥ 5.3)
//! becomes readable when the process exits. `stop` waited for the supervisor by checking its
//! lock every 5 ms, which added 2.5 ms on average to every stop (BENCHMARKS.md, row 5: a stop
//! 1.33× its floor); this wakes at the exit itself.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A handle on a running process, taken by its pid.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// None when the process is gone already or the kernel has no pidfds (then poll instead).
    pub fn open(pid: u32) -> Option<PidFd> {
        // SAFETY: a plain system call; the descriptor it returns is owned from here on.
        let fd =
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits up to `limit` for the process to exit; true once it has.
    pub fn wait(&self, limit: Duration) -> bool {
        let timeout =
            nix::poll::PollTimeout::try_from(limit.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(nix::poll::PollTimeout::MAX);
        let mut fds = [nix::poll::PollFd::new(
            self.0.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        loop {
            match nix::poll::poll(&mut fds, timeout) {
                Ok(n) => return n > 0,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_wakes_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pidfd = PidFd::open(child.id()).expect("pidfds (Linux ≥ 5.3)");
        assert!(!pidfd.wait(Duration::from_millis(1)), "still running");
        assert!(pidfd.wait(Duration::from_secs(30)), "exited");
        child.wait().unwrap();
    }
}
