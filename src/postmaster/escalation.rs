//! Stopping a server process: a signal, a wait, a stronger signal, and finally SIGKILL of
//! everything that is left of it. The one routine behind a requested stop, a hung server, a
//! postmaster left running by a killed pgwarden, and the temporary server of first launch.
//!
//! Each [`Rung`] sends its signal to the postmaster only (graceful signals are the postmaster's
//! to pass on) and waits up to its time; past the last rung, [`Target::kill_all`] SIGKILLs the
//! group and every process working in the data directory (postgres children `setsid()`, see
//! [`crate::supervisor::server`]). A hurry request (a second stop request) cuts the current wait short.

use nix::sys::signal::Signal;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::Notify;

/// One step of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub signal: Signal,
    /// Sent right after `signal` (SIGCONT, so that a stopped process can act on a SIGQUIT).
    pub then: Option<Signal>,
    /// How long to wait for the exit before the next rung.
    pub wait: Duration,
}

impl Rung {
    pub const fn new(signal: Signal, wait: Duration) -> Rung {
        Rung {
            signal,
            then: None,
            wait,
        }
    }
}

/// After an immediate shutdown (SIGQUIT), how long before the group is killed.
pub const IMMEDIATE_GRACE: Duration = Duration::from_secs(5);

/// PostgreSQL's shutdown: `first` (SIGTERM smart, SIGINT fast) for `timeout`, then an immediate
/// shutdown (SIGQUIT) for [`IMMEDIATE_GRACE`]; `first = SIGQUIT` is the immediate one alone.
pub fn shutdown(first: Signal, timeout: Duration) -> Vec<Rung> {
    match first {
        Signal::SIGQUIT => vec![Rung::new(Signal::SIGQUIT, IMMEDIATE_GRACE)],
        _ => vec![
            Rung::new(first, timeout),
            Rung::new(Signal::SIGQUIT, IMMEDIATE_GRACE),
        ],
    }
}

/// A hung server: SIGQUIT (with SIGCONT, in case it was stopped) for 2 s, then SIGKILL.
pub fn hang() -> Vec<Rung> {
    vec![Rung {
        signal: Signal::SIGQUIT,
        then: Some(Signal::SIGCONT),
        wait: Duration::from_secs(2),
    }]
}

/// Something that can be stopped this way.
pub trait Target {
    /// Signals the main process (only while it has not been reaped, so a reused pid is never hit).
    fn signal(&mut self, signal: Signal);
    /// Resolves once the main process is gone; with its status when it was our child.
    fn exited(&mut self) -> impl Future<Output = Option<ExitStatus>> + Send;
    /// SIGKILLs everything that is left of it and waits until it is gone.
    fn kill_all(&mut self) -> impl Future<Output = ()> + Send;
}

/// How an escalation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalated {
    pub status: Option<ExitStatus>,
    /// How many rungs were climbed (1 = the first signal sufficed).
    pub rungs: usize,
    /// It took SIGKILL.
    pub killed: bool,
}

/// Climbs `ladder` until the target exits; `hurry` (when given) skips the rest of a wait.
pub async fn escalate<T: Target>(
    target: &mut T,
    ladder: &[Rung],
    hurry: Option<&Notify>,
) -> Escalated {
    for (i, rung) in ladder.iter().enumerate() {
        if i > 0 {
            tracing::warn!(
                signal = rung.signal.as_str(),
                "the server did not stop in time (or a second stop request came); escalating"
            );
        }
        target.signal(rung.signal);
        if let Some(then) = rung.then {
            target.signal(then);
        }
        let hurried = async {
            match hurry {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = target.exited() => return Escalated { status, rungs: i + 1, killed: false },
            _ = tokio::time::sleep(rung.wait) => {}
            _ = hurried => {}
        }
    }
    tracing::warn!("the server ignored its shutdown signals; killing what is left of it");
    target.kill_all().await;
    let status = target.exited().await;
    Escalated {
        status,
        rungs: ladder.len(),
        killed: true,
    }
}

/// Runs `escalate` from blocking code (the temporary server runs on tokio's blocking pool; a
/// caller outside any runtime gets a small one of its own).
pub fn escalate_blocking<T: Target>(target: &mut T, ladder: &[Rung]) -> Escalated {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(escalate(target, ladder, None)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime for the escalation")
            .block_on(escalate(target, ladder, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A fake that exits on the n-th signal it receives (or never), recording what it got.
    struct Fake {
        got: Vec<Signal>,
        exits_on: Option<Signal>,
        killed: bool,
    }

    impl Target for Fake {
        fn signal(&mut self, signal: Signal) {
            self.got.push(signal);
        }
        async fn exited(&mut self) -> Option<ExitStatus> {
            if self.killed || self.exits_on.is_some_and(|s| self.got.contains(&s)) {
                return Some(ExitStatus::from_raw(0));
            }
            std::future::pending().await
        }
        async fn kill_all(&mut self) {
            self.killed = true;
        }
    }

    #[tokio::test]
    async fn climbs_until_the_target_exits() {
        let mut fake = Fake {
            got: vec![],
            exits_on: Some(Signal::SIGQUIT),
            killed: false,
        };
        let e = escalate(
            &mut fake,
            &shutdown(Signal::SIGINT, Duration::from_millis(20)),
            None,
        )
        .await;
        assert_eq!(fake.got, [Signal::SIGINT, Signal::SIGQUIT]);
        assert_eq!((e.rungs, e.killed), (2, false));
    }

    #[tokio::test]
    async fn ends_with_sigkill_and_hang_sends_sigcont() {
        let mut fake = Fake {
            got: vec![],
            exits_on: None,
            killed: false,
        };
        let ladder = [Rung {
            wait: Duration::from_millis(20),
            ..hang()[0]
        }];
        let e = escalate(&mut fake, &ladder, None).await;
        assert_eq!(fake.got, [Signal::SIGQUIT, Signal::SIGCONT]);
        assert!(e.killed && fake.killed);
    }

    #[tokio::test]
    async fn a_hurry_skips_the_wait() {
        let notify = Notify::new();
        notify.notify_one();
        let mut fake = Fake {
            got: vec![],
            exits_on: Some(Signal::SIGQUIT),
            killed: false,
        };
        let started = tokio::time::Instant::now();
        escalate(
            &mut fake,
            &shutdown(Signal::SIGTERM, Duration::from_secs(3600)),
            Some(&notify),
        )
        .await;
        assert_eq!(fake.got, [Signal::SIGTERM, Signal::SIGQUIT]);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
