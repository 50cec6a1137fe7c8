//! Cancelling a blocking step that runs child processes (the background template fill of
//! [`crate::cluster::template_fill`]): the step reports each child it starts and reaps;
//! [`Cancel::cancel`] kills every child still registered — its whole process group, by pid,
//! and the children it has in other groups (a postmaster's children each call `setsid()`) —
//! and refuses the ones started after it.
//!
//! Below [`crate::postmaster::temp_server`] and [`crate::cluster`], which take a `&Cancel` so that a step
//! nobody cancels (a first launch) passes [`Cancel::never`]; it uses only [`crate::os::procfs`].

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct Cancel(Option<Arc<Mutex<Children>>>);

#[derive(Default)]
struct Children {
    cancelled: bool,
    /// Process group leaders (each child runs in a group of its own), not yet reaped.
    groups: Vec<i32>,
}

impl Cancel {
    /// A step nobody cancels.
    pub fn never() -> Cancel {
        Cancel(None)
    }

    /// A step that [`Cancel::cancel`] can stop.
    pub fn new() -> Cancel {
        Cancel(Some(Arc::default()))
    }

    fn children(&self) -> Option<MutexGuard<'_, Children>> {
        self.0
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A child was spawned, leading its own process group. Killed on the spot when the step
    /// was cancelled meanwhile (the check and the registration are one step under the lock, so
    /// no child escapes a cancel that runs beside its spawn).
    pub fn started(&self, pid: u32) {
        if let Some(mut children) = self.children() {
            if children.cancelled {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            children.groups.push(pid as i32);
        }
    }

    /// The child was reaped: its pid may be reused from now on, so it is never signalled again.
    pub fn ended(&self, pid: u32) {
        if let Some(mut children) = self.children() {
            children.groups.retain(|p| *p != pid as i32);
        }
    }

    /// Kills every registered child's process group (SIGKILL: what they were making is thrown
    /// away) and marks the step cancelled. Returns at once.
    pub fn cancel(&self) {
        if let Some(mut children) = self.children() {
            children.cancelled = true;
            for group in &children.groups {
                // Read before the leader dies: then its children are init's.
                let own = crate::os::procfs::children(*group as u32);
                let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
                for child in own {
                    let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
                }
            }
        }
    }

    /// False for [`Cancel::never`].
    pub fn can_be_cancelled(&self) -> bool {
        self.0.is_some()
    }

    pub fn is_cancelled(&self) -> bool {
        self.children().is_some_and(|c| c.cancelled)
    }

    /// Runs `commit` unless the step was cancelled, holding the lock that [`Cancel::cancel`]
    /// takes: a cancel either comes before (and `commit` does not run) or waits for it.
    pub fn unless_cancelled<T>(&self, commit: impl FnOnce() -> T) -> Option<T> {
        match self.children() {
            Some(children) if children.cancelled => None,
            Some(_guard) => Some(commit()),
            None => Some(commit()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_cancel_kills_the_started_group_and_refuses_what_comes_after() {
        let cancel = Cancel::new();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        cancel.started(child.id());
        assert_eq!(cancel.unless_cancelled(|| 1), Some(1));
        cancel.cancel();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        cancel.ended(child.id());
        assert!(cancel.is_cancelled());
        assert_eq!(cancel.unless_cancelled(|| 1), None);

        // Started after the cancel: killed at once.
        let mut late = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        cancel.started(late.id());
        assert!(!late.wait().unwrap().success());
        cancel.ended(late.id());
    }

    #[test]
    fn a_cancel_also_kills_children_in_sessions_of_their_own() {
        use std::io::BufRead;
        // sh, and below it a sleep in a new session (as a postmaster's children are).
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(parent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild = Pid::from_raw(line.trim().parse().unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while nix::unistd::getsid(Some(grandchild)).ok() != Some(grandchild) {
            assert!(std::time::Instant::now() < deadline, "no setsid sleep");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let cancel = Cancel::new();
        cancel.started(parent.id());
        cancel.cancel();
        parent.wait().unwrap();
        cancel.ended(parent.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let gone = stat.map_or(true, |s| {
                s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z')
            });
            if gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the setsid child survived"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn never_is_never_cancelled() {
        let never = Cancel::never();
        never.cancel();
        assert!(!never.is_cancelled());
        assert_eq!(never.unless_cancelled(|| 2), Some(2));
    }
}
