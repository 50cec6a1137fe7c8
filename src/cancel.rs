//! Cancelling a blocking step that runs child processes (the background template fill of
//! [`crate::cluster::template_fill`]): the step reports each child it starts and reaps;
//! [`Cancel::cancel`] kills every child still registered — its whole process group, by pid —
//! and refuses the ones started after it.
//!
//! A leaf: [`crate::temp_server`] and [`crate::cluster`] take a `&Cancel` so that a step
//! nobody cancels (a first launch) passes [`Cancel::never`].

use nix::sys::signal::{Signal, killpg};
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
                let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
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
    fn never_is_never_cancelled() {
        let never = Cancel::never();
        never.cancel();
        assert!(!never.is_cancelled());
        assert_eq!(never.unless_cancelled(|| 2), Some(2));
    }
}
