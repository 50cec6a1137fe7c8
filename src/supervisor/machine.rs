//! The supervisor's decisions as data: [`step`] takes the [`Machine`] and one [`Event`] and
//! returns the [`Action`]s to perform. No process, no clock, no I/O: what time it is arrives in
//! the events (an exit's instant) or as timers the machine asked for, so every sequence can be
//! replayed in a unit test.
//!
//! ```text
//!  Installing ─▶ Initialising ─▶ Starting ──accepting──▶ Ready
//!                                  ▲   │                   │ exited (or hung, then killed)
//!                         backoff  │   └─exited─▶ Restarting ◀┘
//!                                  └────────────────┘
//!  Starting/Ready ── stop ──▶ Stopping ─▶ Stopped    (Installing, Restarting: straight to Stopped;
//!                                                     Initialising: once first launch is done)
//! ```
//! The restart policy: an exit of a server that had accepted connections always restarts it:
//! the first since it was last stable at once, the next ones after a backoff that doubles from
//! `backoff_initial` to `backoff_max`; both are reset once the server has been ready for
//! `stable_after`. Only failed starts (exits before the server ever accepted a connection)
//! count: `max_failures` of them within `failure_window` end pgwarden.
//!
//! The hang verdict: a ready server that answered no health probe for `hang_after` is killed
//! and restarted. A probe that pgwarden could not even make (out of descriptors itself) is no
//! evidence against the server: it restarts the window instead ([`Event::Unprobed`]).

use crate::config::{ShutdownMode, Supervision};
use crate::instance::status::{LastExit, State};
use crate::postmaster::escalation::{self, Rung};
use crate::supervisor::reconcile::Timing;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The allowed transitions, in one table; [`step`] refuses any other (and says it is a bug).
pub const ALLOWED: &[(State, State)] = &[
    (State::Installing, State::Initialising),
    (State::Installing, State::Stopped),
    (State::Initialising, State::Starting),
    (State::Initialising, State::Stopped),
    (State::Starting, State::Ready),
    (State::Starting, State::Restarting),
    (State::Starting, State::Stopping),
    (State::Starting, State::Stopped),
    (State::Ready, State::Restarting),
    (State::Ready, State::Stopping),
    (State::Restarting, State::Starting),
    (State::Restarting, State::Stopped),
    (State::Stopping, State::Stopped),
];

pub fn allowed(from: State, to: State) -> bool {
    ALLOWED.contains(&(from, to))
}

/// Everything that can happen to the supervisor.
#[derive(Debug)]
pub enum Event {
    /// The binaries are ready.
    Installed {
        version: String,
    },
    /// The cluster is ready; `reconcile` says when to check the role and database.
    Initialised {
        created: bool,
        reconcile: Timing,
    },
    /// Install or first launch failed: nothing to supervise.
    PrepareFailed(String),
    /// A postmaster was spawned.
    Spawned {
        pid: i32,
    },
    SpawnFailed(String),
    /// The current postmaster says ready in its pid file and accepted a probe.
    Accepting,
    /// The before-ready (or after-ready) reconcile finished.
    Reconciled,
    /// A health probe of the ready server: answered (accepting, rejecting) or not.
    Health {
        answered: bool,
    },
    /// A health probe could not be made at all: pgwarden itself is out of descriptors or
    /// memory ([`crate::pg::probe::is_own_exhaustion`]). It says nothing about the server, so it
    /// never counts towards a hang.
    Unprobed,
    /// The postmaster is gone (and what was left of it).
    Exited(ExitReport),
    /// A timer the machine armed went off.
    Timer(Timer),
    /// A stop request: SIGTERM/SIGINT (mode from `pgwarden stop` or the config).
    Stop(ShutdownMode),
    /// A second stop request: at once.
    StopNow,
    /// SIGHUP: re-read the configuration.
    Reload,
    /// `snapshot restore` (SIGUSR1 with its request): stop the server at once, swap the staged
    /// copy in, start it again ([`crate::backup::snapshot_swap`]).
    Swap,
    /// A reload re-read a valid configuration: its policy applies from now on.
    Reconfigured(Policy),
    /// Time to tell systemd's watchdog that pgwarden is alive.
    WatchdogTick,
    /// Time to ask systemd for more start-up time, if still starting.
    ExtendTick,
}

/// The machine's timers (one of each at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The wait before a restart.
    Backoff,
    /// The server has been ready for `stable_after`: reset the backoff.
    Stable,
    /// No health probe was answered for `hang_after`.
    Hang,
}

/// A postmaster's end, as the executor observed it.
#[derive(Debug, Clone)]
pub struct ExitReport {
    pub pid: i32,
    pub status: ExitStatus,
    pub signalled_by_us: bool,
    pub oom_killed: bool,
    /// The memory limit, in words, when the OOM killer struck.
    pub memory_limit: String,
    pub explanation: Option<String>,
    pub at: Instant,
    pub at_ms: u64,
}

/// How the probes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probing {
    Off,
    /// Poll the pid file and probe until the server accepts.
    Readiness,
    /// Probe every `health_interval`.
    Health,
}

/// What systemd (and the terminal) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The ready line on stdout and `READY=1`: once, on the first Starting → Ready edge.
    FirstReady,
    /// `RELOADING=1`, before a ready server is reloaded.
    Reloading,
    /// `READY=1` after that reload.
    Reloaded,
    Status(String),
    Stopping,
    Watchdog,
    ExtendTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// How the supervisor ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Asked to stop, and stopped.
    Stopped,
    /// Gave up on the server (crash loop of failed starts), or could not prepare it.
    Failed(String),
}

/// What the executor does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Install,
    CancelInstall,
    Initialise,
    /// Re-read the configuration and rewrite the server settings file (a queued SIGHUP).
    ApplyConfig,
    Spawn,
    /// SIGHUP to the (ready) postmaster.
    SignalReload,
    /// Stop the postmaster by climbing this ladder.
    Escalate(Vec<Rung>),
    /// A second stop request: cut the escalation's current wait short.
    Hurry,
    Probe(Probing),
    StartReconcile,
    CancelReconcile,
    Arm(Timer, Duration),
    Cancel(Timer),
    Notify(Notice),
    /// Write the status record (the one place it is published).
    WriteStatus,
    /// The server is stopped for a swap: exchange the staged copy with the data directory (the
    /// executor keeps the outcome for [`Action::AnswerSwap`]).
    SwapIn,
    /// Answer the snapshot restore: ready after the swap (`failed: None`, unless the executor's
    /// swap failed), or why not.
    AnswerSwap {
        failed: Option<String>,
    },
    /// A state change, for the log.
    Transition {
        from: State,
        to: State,
        cause: String,
    },
    Log(Level, String),
    /// An impossible transition was asked for: a bug to report; the state is kept.
    Bug(String),
    Finish(Finish),
}

/// The parts of the configuration the machine decides with; replaced on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub supervision: Supervision,
    pub shutdown_timeout: Duration,
}

/// The machine's part of the status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    pub cause: String,
    pub postmaster_pid: Option<i32>,
    pub restarts: u32,
    pub failed_starts: u32,
    pub last_exit: Option<LastExit>,
    pub gave_up: Option<String>,
}

/// The current postmaster.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    pid: Option<i32>,
    /// It accepted a probe: its exit is a crash, not a failed start.
    accepted: bool,
    /// pgwarden found it hung and is killing it.
    hung: bool,
    /// The before-ready reconcile is running.
    reconciling: bool,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub record: Record,
    policy: Policy,
    /// The next backoff delay (before jitter).
    next_backoff: Duration,
    /// Crashes since the server was last stable: the first one is restarted at once.
    crashes_since_stable: u32,
    /// When recent failed starts happened, for `failure_window`.
    failures: VecDeque<Instant>,
    run: Option<Run>,
    reconcile: Timing,
    /// `READY=1` was sent.
    announced: bool,
    /// A SIGHUP came while the config could not be applied yet: re-read it before the next spawn.
    reread_before_spawn: bool,
    /// A SIGHUP came while starting: signal the postmaster once it is ready.
    reload_when_ready: bool,
    /// A stop came during first launch, which is not interrupted: stop once it is done.
    stop_pending: bool,
    /// The last health probe could not be made (logged once per such spell).
    unprobed: bool,
    /// A swap was asked for: the server is stopping for it.
    swapping: bool,
    /// The swap is done (or failed): answer once the server is ready again.
    answer_swap: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            next_backoff: policy.supervision.backoff_initial,
            crashes_since_stable: 0,
            record: Record {
                state: State::Installing,
                cause: "launch".into(),
                postmaster_pid: None,
                restarts: 0,
                failed_starts: 0,
                last_exit: None,
                gave_up: None,
            },
            policy,
            failures: VecDeque::new(),
            run: None,
            reconcile: Timing::Skip,
            announced: false,
            reread_before_spawn: false,
            reload_when_ready: false,
            stop_pending: false,
            unprobed: false,
            swapping: false,
            answer_swap: false,
        }
    }

    pub fn state(&self) -> State {
        self.record.state
    }

    /// The first actions, before any event.
    pub fn start(&mut self) -> Vec<Action> {
        vec![
            Action::WriteStatus,
            Action::Notify(Notice::ExtendTimeout),
            Action::Install,
        ]
    }

    /// Moves to `to` (if the table allows it), recording why.
    fn go(&mut self, to: State, cause: impl Into<String>, out: &mut Vec<Action>) -> bool {
        let from = self.record.state;
        let cause = cause.into();
        if !allowed(from, to) {
            out.push(Action::Bug(format!(
                "pgwarden bug: the transition {from} -> {to} ({cause}) is not allowed; staying {from}. \
                 Please report it with this log."
            )));
            return false;
        }
        self.record.state = to;
        out.push(Action::Transition {
            from,
            to,
            cause: cause.clone(),
        });
        out.push(Action::Notify(Notice::Status(format!("{to}: {cause}"))));
        self.record.cause = cause;
        if to == State::Stopped {
            self.record.postmaster_pid = None;
        }
        out.push(Action::WriteStatus);
        true
    }

    /// Re-reads the config if a SIGHUP is queued, then spawns.
    fn spawn(&mut self, cause: String, out: &mut Vec<Action>) {
        if self.go(State::Starting, cause, out) {
            if std::mem::take(&mut self.reread_before_spawn) {
                out.push(Action::ApplyConfig);
            }
            self.run = Some(Run {
                pid: None,
                accepted: false,
                hung: false,
                reconciling: false,
            });
            out.push(Action::Spawn);
        }
    }

    fn ready(&mut self, out: &mut Vec<Action>) {
        if !self.go(State::Ready, "accepting connections", out) {
            return;
        }
        if let Some(run) = self.run.as_mut() {
            run.accepted = true;
            run.reconciling = false;
        }
        let s = &self.policy.supervision;
        out.push(Action::Arm(Timer::Stable, s.stable_after));
        out.push(Action::Arm(Timer::Hang, s.hang_after));
        out.push(Action::Probe(Probing::Health));
        if !self.announced {
            self.announced = true;
            out.push(Action::Notify(Notice::FirstReady));
            if self.reconcile == Timing::AfterReady {
                out.push(Action::StartReconcile);
            }
        } else {
            out.push(Action::Log(
                Level::Info,
                format!("ready again (restarts: {})", self.record.restarts),
            ));
        }
        if std::mem::take(&mut self.reload_when_ready) {
            self.reload_ready(out);
        }
        if std::mem::take(&mut self.answer_swap) {
            out.push(Action::AnswerSwap { failed: None });
        }
    }

    /// A reload of a ready server: `RELOADING=1`, re-read, SIGHUP, `READY=1`.
    fn reload_ready(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Notify(Notice::Reloading));
        out.push(Action::ApplyConfig);
        out.push(Action::SignalReload);
        out.push(Action::Notify(Notice::Reloaded));
    }

    fn stop_server(&mut self, mode: ShutdownMode, out: &mut Vec<Action>) {
        let first = match mode {
            ShutdownMode::Smart => Signal::SIGTERM,
            ShutdownMode::Fast => Signal::SIGINT,
            ShutdownMode::Immediate => Signal::SIGQUIT,
        };
        // The signal first: the log line and the status file are written while it stops.
        let hung = self.run.as_ref().is_some_and(|r| r.hung);
        if !hung {
            out.push(Action::Escalate(escalation::shutdown(
                first,
                self.policy.shutdown_timeout,
            )));
        }
        if self.run.as_ref().is_some_and(|r| r.reconciling) || self.announced {
            out.push(Action::CancelReconcile);
        }
        out.push(Action::Probe(Probing::Off));
        out.push(Action::Cancel(Timer::Stable));
        out.push(Action::Cancel(Timer::Hang));
        self.go(State::Stopping, format!("{} shutdown", mode.name()), out);
        out.push(Action::Notify(Notice::Stopping));
    }

    /// A swap request: only a ready server is swapped (stopped at once: the cluster it runs is
    /// discarded, see [`crate::backup::snapshot_swap`]); otherwise the request is refused.
    fn swap(&mut self, out: &mut Vec<Action>) {
        let state = self.record.state;
        let hung = self.run.as_ref().is_some_and(|r| r.hung);
        if state != State::Ready || hung || self.swapping || self.answer_swap {
            out.push(Action::AnswerSwap {
                failed: Some(format!(
                    "the server is {state}{}, not ready; nothing was changed",
                    if hung { " (hung)" } else { "" }
                )),
            });
            return;
        }
        self.swapping = true;
        out.push(Action::Escalate(escalation::shutdown(
            Signal::SIGQUIT,
            self.policy.shutdown_timeout,
        )));
        if self.run.as_ref().is_some_and(|r| r.reconciling) || self.announced {
            out.push(Action::CancelReconcile);
        }
        out.push(Action::Probe(Probing::Off));
        out.push(Action::Cancel(Timer::Stable));
        out.push(Action::Cancel(Timer::Hang));
        self.go(
            State::Restarting,
            "snapshot restore: stopping for the swap",
            out,
        );
    }

    /// The server stopped for a swap: swap, then start it (or stop, if asked meanwhile).
    fn swapped(&mut self, report: ExitReport, out: &mut Vec<Action>) {
        self.swapping = false;
        self.run = None;
        self.record.postmaster_pid = None;
        self.record.last_exit = Some(last_exit(&report));
        if self.stop_pending {
            out.push(Action::AnswerSwap {
                failed: Some("pgwarden was asked to stop; nothing was changed".into()),
            });
            self.stopped("shutdown during a snapshot restore", out);
            return;
        }
        out.push(Action::SwapIn);
        self.answer_swap = true;
        self.spawn("snapshot restored".into(), out);
    }

    fn stopped(&mut self, cause: &str, out: &mut Vec<Action>) {
        if self.go(State::Stopped, cause, out) {
            out.push(Action::Finish(Finish::Stopped));
        }
    }

    fn fail(&mut self, why: String, out: &mut Vec<Action>) {
        self.record.gave_up = Some(why.clone());
        self.go(State::Stopped, "gave up", out);
        out.push(Action::Finish(Finish::Failed(why)));
    }

    fn exited(&mut self, report: ExitReport, out: &mut Vec<Action>) {
        let run = self.run.take().unwrap_or(Run {
            pid: None,
            accepted: false,
            hung: false,
            reconciling: false,
        });
        if run.pid.is_some_and(|p| p != report.pid) {
            self.run = Some(run);
            return; // Not the current postmaster's (cannot happen: one at a time).
        }
        let last = last_exit(&report);
        self.record.postmaster_pid = None;
        self.record.last_exit = Some(last.clone());
        out.push(Action::Probe(Probing::Off));
        out.push(Action::Cancel(Timer::Stable));
        out.push(Action::Cancel(Timer::Hang));
        if run.reconciling || (run.accepted && self.reconcile == Timing::AfterReady) {
            out.push(Action::CancelReconcile);
        }
        if self.record.state == State::Stopping {
            out.push(Action::Log(
                Level::Info,
                format!("postgres stopped ({})", last.text),
            ));
            self.stopped("shutdown complete", out);
            return;
        }
        // The server's own words, unless the exit is explained otherwise (a kill from outside).
        let quote = match (&report.explanation, last.from_outside || last.oom_killed) {
            (Some(why), false) => why.trim().to_string(),
            _ => String::new(),
        };
        let s = self.policy.supervision.clone();
        if run.accepted {
            self.record.restarts += 1;
            let was = if run.hung { "a hang" } else { "a crash" };
            out.push(Action::Log(
                Level::Error,
                format!(
                    "postgres exited unexpectedly ({was}): {}{}",
                    last.text,
                    if quote.is_empty() {
                        String::new()
                    } else {
                        format!("; server said: {quote}")
                    }
                ),
            ));
            let cause = format!(
                "restart {} after {was} ({})",
                self.record.restarts, last.text
            );
            self.crashes_since_stable += 1;
            if self.crashes_since_stable == 1 {
                // A serving server that crashed once since it was stable is restarted at once:
                // every millisecond is downtime, and its remains are already cleared.
                if self.go(State::Restarting, cause, out) {
                    out.push(Action::Arm(Timer::Backoff, Duration::ZERO));
                }
            } else {
                self.back_off(cause, out);
            }
            return;
        }
        if std::mem::take(&mut self.answer_swap) {
            out.push(Action::AnswerSwap {
                failed: Some(format!(
                    "postgres failed to start after the swap: {}",
                    last.text
                )),
            });
        }
        self.record.failed_starts += 1;
        self.failures.push_back(report.at);
        while self
            .failures
            .front()
            .is_some_and(|t| report.at.saturating_duration_since(*t) > s.failure_window)
        {
            self.failures.pop_front();
        }
        out.push(Action::Log(
            Level::Error,
            format!(
                "postgres failed to start: {}{}",
                last.text,
                if quote.is_empty() {
                    String::new()
                } else {
                    format!("; server said: {quote}")
                }
            ),
        ));
        if self.failures.len() as u32 >= s.max_failures {
            let why = format!(
                "postgres failed to start {} times within {}s (last: {}); giving up\n\
                 server said: {}\n\
                 help: fix the setting or the problem the server names, then start pgwarden again",
                self.failures.len(),
                s.failure_window.as_secs(),
                last.text,
                if quote.is_empty() {
                    "(nothing)"
                } else {
                    quote.as_str()
                }
            );
            self.fail(why, out);
            return;
        }
        let cause = format!(
            "restart after failed start {} ({})",
            self.record.failed_starts, last.text
        );
        self.back_off(cause, out);
    }

    fn back_off(&mut self, cause: String, out: &mut Vec<Action>) {
        if self.go(State::Restarting, cause, out) {
            let delay = self.next_backoff;
            self.next_backoff = (delay * 2).min(self.policy.supervision.backoff_max);
            out.push(Action::Arm(Timer::Backoff, delay));
        }
    }
}

/// The exit in words and as data.
fn last_exit(report: &ExitReport) -> LastExit {
    let status = report.status;
    let signal = status.signal();
    // A signal the process would raise itself (a crash) does not come from outside.
    let own = signal.is_some_and(|s| {
        [
            Signal::SIGSEGV,
            Signal::SIGABRT,
            Signal::SIGBUS,
            Signal::SIGFPE,
            Signal::SIGILL,
            Signal::SIGSYS,
            Signal::SIGTRAP,
        ]
        .iter()
        .any(|o| *o as i32 == s)
    });
    let oom_killed = report.oom_killed && signal == Some(Signal::SIGKILL as i32);
    let from_outside = signal.is_some() && !own && !report.signalled_by_us && !oom_killed;
    let mut text = crate::supervisor::server::describe_exit(status);
    if oom_killed {
        text.push_str(&format!(
            ", killed by the kernel's OOM killer (memory limit: {})",
            report.memory_limit
        ));
    } else if from_outside {
        text.push_str(", sent from outside pgwarden");
    }
    LastExit {
        code: status.code(),
        signal,
        from_outside,
        oom_killed,
        text,
        at_ms: report.at_ms,
    }
}

/// Decides what `event` means in the machine's current state.
pub fn step(m: &mut Machine, event: Event) -> Vec<Action> {
    use State::*;
    let mut out = Vec::new();
    let state = m.record.state;
    match event {
        Event::Installed { version } => {
            if m.go(Initialising, format!("PostgreSQL {version}"), &mut out) {
                out.push(Action::Notify(Notice::ExtendTimeout));
                out.push(Action::Initialise);
            }
        }
        Event::Initialised { created, reconcile } => {
            m.reconcile = reconcile;
            if m.stop_pending {
                m.stopped("shutdown while initialising", &mut out);
            } else {
                let cause = if created {
                    "new cluster"
                } else {
                    "existing cluster"
                };
                m.spawn(cause.into(), &mut out);
            }
        }
        Event::PrepareFailed(why) => m.fail(why, &mut out),
        Event::Spawned { pid } => {
            if let Some(run) = m.run.as_mut() {
                run.pid = Some(pid);
            }
            m.record.postmaster_pid = Some(pid);
            out.push(Action::Probe(Probing::Readiness));
            out.push(Action::WriteStatus);
        }
        Event::SpawnFailed(why) => m.fail(why, &mut out),
        Event::Accepting if state == Starting => {
            let reconciling = m.run.as_ref().is_some_and(|r| r.reconciling);
            if !m.announced && m.reconcile == Timing::BeforeReady {
                if !reconciling {
                    if let Some(run) = m.run.as_mut() {
                        run.reconciling = true;
                        run.accepted = true;
                    }
                    out.push(Action::Probe(Probing::Off));
                    out.push(Action::Log(
                        Level::Info,
                        "the server accepts connections; reconciling the role and database before the ready line".into(),
                    ));
                    out.push(Action::StartReconcile);
                }
            } else {
                m.ready(&mut out);
            }
        }
        Event::Accepting => {}
        Event::Reconciled => {
            if state == Starting && m.run.as_ref().is_some_and(|r| r.reconciling) {
                m.ready(&mut out);
            }
        }
        Event::Health { answered } if state == Ready => {
            m.unprobed = false;
            let hung = m.run.as_ref().is_some_and(|r| r.hung);
            if answered && !hung {
                out.push(Action::Arm(Timer::Hang, m.policy.supervision.hang_after));
            } else if !answered {
                out.push(Action::Log(
                    Level::Warn,
                    "postgres did not answer a health probe".into(),
                ));
            }
        }
        Event::Health { .. } => {}
        Event::Unprobed if state == Ready => {
            // The hang window starts again: a verdict needs probes that reached the server.
            let hung = m.run.as_ref().is_some_and(|r| r.hung);
            if !hung {
                out.push(Action::Arm(Timer::Hang, m.policy.supervision.hang_after));
            }
            if !std::mem::replace(&mut m.unprobed, true) {
                out.push(Action::Log(
                    Level::Warn,
                    "pgwarden could not open a socket to probe postgres (it is out of file \
                     descriptors or memory itself): no hang verdict until a probe reaches the server"
                        .into(),
                ));
            }
        }
        Event::Unprobed => {}
        Event::Exited(report) if state == Restarting && m.swapping => m.swapped(report, &mut out),
        Event::Exited(report) => {
            if matches!(state, Starting | Ready | Stopping) {
                m.exited(report, &mut out);
            }
        }
        Event::Timer(Timer::Backoff) if state == Restarting => {
            let cause = m.record.cause.clone();
            m.spawn(cause, &mut out);
        }
        Event::Timer(Timer::Stable) if state == Ready => {
            m.next_backoff = m.policy.supervision.backoff_initial;
            m.crashes_since_stable = 0;
        }
        Event::Timer(Timer::Hang) if state == Ready && m.unprobed => {
            // The window ran out while pgwarden could not probe: no verdict, a new window.
            out.push(Action::Arm(Timer::Hang, m.policy.supervision.hang_after));
        }
        Event::Timer(Timer::Hang) if state == Ready => {
            if let Some(run) = m.run.as_mut() {
                run.hung = true;
            }
            out.push(Action::Probe(Probing::Off));
            out.push(Action::Cancel(Timer::Stable));
            out.push(Action::Log(
                Level::Error,
                format!(
                    "postgres is running but has not answered for {} ms: a hang, not a crash; restarting it",
                    m.policy.supervision.hang_after.as_millis()
                ),
            ));
            out.push(Action::Escalate(escalation::hang()));
        }
        Event::Timer(_) => {}
        Event::Stop(mode) => match state {
            Installing => {
                out.push(Action::CancelInstall);
                m.stopped("shutdown while installing", &mut out);
            }
            Initialising => {
                m.stop_pending = true;
                out.push(Action::Log(
                    Level::Info,
                    "stop requested: the first launch completes first, then pgwarden stops".into(),
                ));
            }
            Starting | Ready => m.stop_server(mode, &mut out),
            Restarting if m.swapping => {
                m.stop_pending = true;
                out.push(Action::Log(
                    Level::Info,
                    "stop requested: pgwarden stops once the server has stopped for the swap"
                        .into(),
                ));
            }
            Restarting => {
                out.push(Action::Cancel(Timer::Backoff));
                m.stopped("shutdown while restarting", &mut out);
            }
            Stopping => out.push(Action::Hurry),
            Stopped => {}
        },
        Event::StopNow => match state {
            Stopping => out.push(Action::Hurry),
            _ => return step(m, Event::Stop(ShutdownMode::Immediate)),
        },
        Event::Reload => match state {
            Installing | Initialising | Restarting => {
                m.reread_before_spawn = true;
                out.push(Action::Log(
                    Level::Info,
                    format!("reload queued: applied when the server starts ({state})"),
                ));
            }
            Starting => {
                // The settings file is rewritten now; the postmaster is signalled once ready
                // (before that, a SIGHUP can reach it before its handlers and kill it).
                m.reload_when_ready = true;
                out.push(Action::ApplyConfig);
            }
            Ready => m.reload_ready(&mut out),
            Stopping | Stopped => {}
        },
        Event::Swap => m.swap(&mut out),
        Event::Reconfigured(policy) => {
            m.policy = policy;
            m.next_backoff = m.next_backoff.clamp(
                m.policy.supervision.backoff_initial,
                m.policy.supervision.backoff_max,
            );
        }
        Event::WatchdogTick => {
            let hung = m.run.as_ref().is_some_and(|r| r.hung);
            // systemd's watchdog runs from READY=1 on.
            if m.announced && state != Stopped && !hung {
                out.push(Action::Notify(Notice::Watchdog));
            }
        }
        Event::ExtendTick => {
            if matches!(state, Installing | Initialising | Starting) {
                out.push(Action::Notify(Notice::ExtendTimeout));
            }
        }
    }
    out
}
