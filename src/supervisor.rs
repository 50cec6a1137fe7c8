//! The supervisor: installs, initialises, and keeps one postgres running until asked to stop.
//!
//! A small state machine. Each phase waits in one `tokio::select!` over the sources that can
//! end it (the child's exit, control signals, probe results, timers) and returns an
//! [`Outcome`]; `run` applies it. Every transition is checked against [`State::can_become`],
//! logged with its cause, and reported to systemd (`STATUS=`).
//!
//! ```text
//!  Installing ─▶ Initialising ─▶ Starting ──ready──▶ Ready
//!                                  ▲   │               │ postmaster exited, or hung
//!                         backoff  │   └──exited──▶ Restarting ◀┘
//!                                  └──────────────────┘
//!  any state ── SIGTERM/SIGINT ──▶ Stopping ─▶ Stopped   (Restarting/Installing: straight to Stopped)
//! ```
//! Too many unexpected exits within `failure_window` (a crash loop) end pgwarden with the
//! server's own last error, so that systemd's restart policy can take over.

use crate::binaries::{self, Install};
use crate::cluster::{self, Cluster};
use crate::config::{Config, ShutdownMode, Sources};
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::observe::Observer;
use crate::privilege::RunAs;
use crate::probe::{self, PingStatus};
use crate::reconcile::{self, Timing};
use crate::server::{Server, describe_exit};
use crate::signals::Control;
use crate::status::StatusFile;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// How often readiness is checked while the server starts: every millisecond (as the floor in
/// BENCHMARKS.md polls) for the first [`READY_POLL_FAST_FOR`], which covers a normal start, then
/// every [`READY_POLL_SLOW`] through a long crash recovery.
const READY_POLL: Duration = Duration::from_millis(1);
const READY_POLL_FAST_FOR: Duration = Duration::from_millis(500);
const READY_POLL_SLOW: Duration = Duration::from_millis(10);
/// After an immediate shutdown (SIGQUIT), how long before the group is killed.
const IMMEDIATE_GRACE: Duration = Duration::from_secs(5);
/// How much more time systemd is asked for while a long step runs.
const EXTEND_BY: Duration = Duration::from_secs(60);

/// The supervisor's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Obtaining the PostgreSQL binaries.
    Installing,
    /// Finding the cluster, or creating it on first launch.
    Initialising,
    /// postgres spawned, not yet accepting connections (first start or crash recovery).
    Starting,
    /// postgres accepts connections.
    Ready,
    /// postgres exited unexpectedly (or hung); waiting out the backoff.
    Restarting,
    /// A shutdown was asked for; postgres is being stopped.
    Stopping,
    /// Nothing runs, and nothing will be started again.
    Stopped,
}

impl State {
    /// The allowed transitions, in one place.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Installing, Initialising)
                | (Initialising, Starting)
                | (Starting, Ready)
                | (Starting | Ready, Restarting)
                | (Restarting, Starting)
                | (Starting | Ready, Stopping)
                | (Stopping, Stopped)
                // No server process in these: nothing to stop.
                | (Installing | Initialising | Restarting | Starting, Stopped)
        )
    }
}

/// Restart delays: first retry fast, doubling up to a cap, with ±10% jitter so that several
/// supervisors do not retry in lockstep. Reset once a server has been stable.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            next: initial,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(rand::random_range(0.9..1.1))
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// How a phase ended.
#[derive(Debug)]
enum Outcome {
    Ready,
    Exited(ExitStatus),
    /// The server stopped answering probes for `hang_after`.
    Hung,
    Stop(ShutdownMode),
}

pub struct Supervisor {
    /// Where the config came from, re-read on SIGHUP.
    sources: Sources,
    config: Config,
    run_as: RunAs,
    state_dir: PathBuf,
    events: UnboundedReceiver<Control>,
    notifier: Notifier,
    backoff: Backoff,
    /// When recent unexpected exits happened, for crash-loop detection.
    failures: VecDeque<Instant>,
    state: State,
    restarts: u32,
    announced: bool,
    /// The status file `pgwarden status/stop/wait` read (issue 5).
    status: StatusFile,
    /// Feeds the HTTP endpoint: every status record, a heartbeat, the probes' answers.
    observer: Observer,
}

impl Supervisor {
    pub fn new(
        sources: Sources,
        config: Config,
        run_as: RunAs,
        state_dir: PathBuf,
        events: UnboundedReceiver<Control>,
        notifier: Notifier,
    ) -> Self {
        let backoff = Backoff::new(
            config.supervision.backoff_initial,
            config.supervision.backoff_max,
        );
        let status = StatusFile::new(&config, &state_dir);
        Self {
            status,
            sources,
            config,
            run_as,
            state_dir,
            events,
            notifier,
            backoff,
            failures: VecDeque::new(),
            state: State::Installing,
            restarts: 0,
            announced: false,
            observer: Observer::detached(),
        }
    }

    /// Publishes the status records, a heartbeat from the loop and the probes' answers to
    /// `observer` (the HTTP endpoint's feed).
    pub fn observed(mut self, observer: Observer) -> Self {
        self.status.on_write(observer.status_listener());
        self.observer = observer;
        self
    }

    fn transition(&mut self, to: State, cause: &str) {
        debug_assert!(self.state.can_become(to), "{:?} -> {to:?}", self.state);
        info!(from = ?self.state, to = ?to, cause, "state");
        self.state = to;
        self.status.transition(to, cause, self.restarts);
        self.notifier
            .status(&format!("{to:?}: {cause}").to_lowercase());
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::new(self.config.listen_address, self.config.port)
    }

    /// Runs until a shutdown is asked for (Ok) or the server cannot be kept up (Err).
    pub async fn run(mut self) -> Result<()> {
        info!(state = ?self.state, data_dir = %self.config.data_dir.display(), "pgwarden starting");
        let result = self.run_phases().await;
        if let Err(e) = &result
            && self.state != State::Stopped
        {
            self.transition(State::Stopped, &format!("error: {e}"));
        }
        result
    }

    async fn run_phases(&mut self) -> Result<()> {
        self.notifier.extend_timeout(EXTEND_BY);
        let install = {
            let ensure = binaries::ensure(
                &self.config.source,
                &self.config.install_dir,
                &self.config.version,
            );
            tokio::select! {
                install = ensure => install?,
                _ = self.observer.pulse() => unreachable!("the pulse never ends"),
                _ = shutdown_requested(&mut self.events) => {
                    self.transition(State::Stopped, "shutdown while installing");
                    return Ok(());
                }
            }
        };
        self.run_as.check_traversable(&install.dir)?;

        self.transition(
            State::Initialising,
            &format!("PostgreSQL {}", install.version),
        );
        self.notifier.extend_timeout(EXTEND_BY);
        let cluster = if cluster::is_initialised(&self.config.data_dir) {
            // A few file checks: done here, without waiting for a thread of the blocking pool.
            cluster::prepare(&self.config, &install, &self.run_as, &self.state_dir)?
        } else {
            let (config, install, run_as, state_dir) = (
                self.config.clone(),
                install.clone(),
                self.run_as.clone(),
                self.state_dir.clone(),
            );
            // Not interrupted: a first launch completes (or fails) as a whole.
            let task = tokio::task::spawn_blocking(move || {
                cluster::prepare(&config, &install, &run_as, &state_dir)
            });
            tokio::select! {
                prepared = task => prepared.expect("cluster task panicked")?,
                _ = self.observer.pulse() => unreachable!("the pulse never ends"),
            }
        };
        if self.take_pending_shutdown() {
            self.transition(State::Stopped, "shutdown while initialising");
            return Ok(());
        }
        self.serve(&install, &cluster).await
    }

    /// The start → ready → (crash → restart)* → stop loop.
    async fn serve(&mut self, install: &Install, cluster: &Cluster) -> Result<()> {
        let mut cause = String::from(if cluster.created {
            "new cluster"
        } else {
            "existing cluster"
        });
        self.status.prepared(install, cluster);
        // A reconcile running after the ready line; a stop cancels it (rather than failing it).
        let mut late_reconcile: Option<JoinHandle<()>> = None;
        loop {
            self.transition(State::Starting, &cause);
            let mut server = Server::spawn(&self.config, install, cluster, &self.run_as)?;
            self.status.postmaster(server.pid.as_raw());
            let ended = match self.wait_ready(&mut server, &cluster.data_dir).await {
                Outcome::Ready => {
                    let timing = match self.announced {
                        true => Timing::Skip,
                        false => reconcile::timing(&self.config, cluster, &self.state_dir),
                    };
                    if timing == Timing::BeforeReady {
                        reconcile::run(&self.config, cluster, &self.state_dir).await;
                    }
                    self.on_ready(install, cluster);
                    if timing == Timing::AfterReady {
                        let (config, cluster, state_dir) =
                            (self.config.clone(), cluster.clone(), self.state_dir.clone());
                        late_reconcile = Some(tokio::spawn(async move {
                            reconcile::run(&config, &cluster, &state_dir).await
                        }));
                    }
                    let ready_since = Instant::now();
                    let outcome = self.watch(&mut server, &cluster.data_dir).await;
                    if ready_since.elapsed() >= self.config.supervision.stable_after {
                        self.backoff.reset();
                    }
                    outcome
                }
                other => other,
            };
            let was = match (&ended, self.state) {
                (Outcome::Hung, _) => "hang",
                (_, State::Ready) => "crash",
                _ => "failed start",
            };
            let status = match ended {
                Outcome::Stop(mode) => {
                    if let Some(task) = late_reconcile.take() {
                        task.abort();
                    }
                    return self.stop(server, mode).await;
                }
                Outcome::Exited(status) => status,
                Outcome::Hung => {
                    error!(
                        hang_after_ms = self.config.supervision.hang_after.as_millis() as u64,
                        "postgres is running but has stopped answering: a hang, not a crash; restarting it"
                    );
                    // SIGQUIT (with SIGCONT, in case it was stopped), then SIGKILL of the group.
                    server.signal(Signal::SIGQUIT);
                    server.signal(Signal::SIGCONT);
                    match tokio::time::timeout(Duration::from_secs(2), server.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            server.clear_remains().await;
                            server.wait().await
                        }
                    }
                }
                Outcome::Ready => unreachable!("watch does not report readiness"),
            };
            server.clear_remains().await;
            server.drain_log().await;
            self.status.exited(describe_exit(status));
            let why = server.log.explain().unwrap_or_default();
            error!(exit = %describe_exit(status), last_log = %why, "postgres exited unexpectedly ({was})");
            self.restarts += 1;
            cause = format!(
                "restart {} after {was} ({})",
                self.restarts,
                describe_exit(status)
            );
            self.transition(State::Restarting, &cause);
            self.check_crash_loop(status, &why)?;
            // A serving server that crashed once (the first exit within failure_window) is
            // restarted at once: every millisecond is downtime, and its remains are already
            // cleared. Failed starts and repeated crashes back off.
            if was == "crash" && self.failures.len() == 1 {
                info!("restarting at once (first crash within failure_window)");
                continue;
            }
            if !self.back_off().await {
                return Ok(());
            }
        }
    }

    /// Records an unexpected exit; an error once `max_failures` fall within `failure_window`.
    fn check_crash_loop(&mut self, status: ExitStatus, why: &str) -> Result<()> {
        let now = Instant::now();
        let policy = &self.config.supervision;
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.failure_window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() < policy.max_failures as usize {
            return Ok(());
        }
        let failures = self.failures.len();
        let window = policy.failure_window;
        self.transition(State::Stopped, "crash loop");
        Err(Error::Server {
            what: format!(
                "postgres exited {failures} times within {}s (last: {}); giving up\n\
                 server said: {}\n\
                 help: fix the setting or the problem the server names, then start pgwarden again",
                window.as_secs(),
                describe_exit(status),
                if why.is_empty() {
                    "(nothing)"
                } else {
                    why.trim()
                }
            ),
        })
    }

    fn on_ready(&mut self, install: &Install, cluster: &Cluster) {
        self.transition(State::Ready, "accepting connections");
        let line = format!(
            "ready: {} (PostgreSQL {}, data {})",
            self.config.url(),
            install.short_version(),
            cluster.data_dir.display()
        );
        if !self.announced {
            self.announced = true;
            info!(binaries = %binaries::provenance(install), "PostgreSQL binaries from");
            // The one line a user (or a script) waits for; on stdout, unlike the log.
            println!("{line}");
            self.notifier.ready(&line);
        } else {
            info!(restarts = self.restarts, "ready again");
            self.notifier.status(&line);
        }
    }

    /// Sleeps out the backoff; false when a shutdown arrived meanwhile.
    async fn back_off(&mut self) -> bool {
        let delay = self.backoff.next_delay();
        info!(
            delay_ms = delay.as_millis() as u64,
            "waiting before the restart"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.observer.pulse() => unreachable!("the pulse never ends"),
            _ = shutdown_requested(&mut self.events) => {
                self.transition(State::Stopped, "shutdown while restarting");
                false
            }
        }
    }

    /// True (and consumed) if a shutdown was asked for while an uninterruptible step ran.
    fn take_pending_shutdown(&mut self) -> bool {
        let mut asked = false;
        while let Ok(event) = self.events.try_recv() {
            asked |= matches!(event, Control::Shutdown { .. } | Control::Immediate);
        }
        asked
    }

    /// Waits until the server accepts connections, exits, or a stop is asked for.
    async fn wait_ready(&mut self, server: &mut Server, data_dir: &Path) -> Outcome {
        let address = self.address();
        let (user, database) = (self.config.user.clone(), self.config.database.clone());
        let pid = server.pid;
        let mut tick = tokio::time::interval(READY_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slow_from = Instant::now() + READY_POLL_FAST_FOR;
        // Crash recovery can take long: keep asking systemd for time while it runs.
        let mut extend = tokio::time::interval(EXTEND_BY / 2);
        loop {
            tokio::select! {
                status = server.wait() => return Outcome::Exited(status),
                event = next_event(&mut self.events) => match event {
                    Control::Reload => self.reload(pid, data_dir),
                    Control::Immediate => return Outcome::Stop(ShutdownMode::Immediate),
                    Control::Shutdown { .. } => return Outcome::Stop(self.config.shutdown_mode),
                },
                _ = extend.tick() => self.notifier.extend_timeout(EXTEND_BY),
                _ = tick.tick() => {
                    self.observer.beat();
                    // The postmaster says "ready" in its pid file before anything connects (as
                    // pg_ctl -w reads it); probing only then keeps "the database system is
                    // starting up" out of the server log. The probe confirms the TCP listener.
                    if pid_file_says_ready(data_dir, pid)
                        && probe::ping(address, &user, &database, Duration::from_secs(1)).await == PingStatus::Accepting
                    {
                        let policy = &self.config.supervision;
                        self.observer.probed(true, policy.health_interval + policy.health_timeout);
                        return Outcome::Ready;
                    }
                    if tick.period() == READY_POLL && Instant::now() >= slow_from {
                        tick = tokio::time::interval(READY_POLL_SLOW);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
            }
        }
    }

    /// Watches a ready server: its exit, control events, periodic health probes (a hang is
    /// `hang_after` without an answer), and systemd's watchdog while healthy.
    async fn watch(&mut self, server: &mut Server, data_dir: &Path) -> Outcome {
        let pid = server.pid;
        let policy = self.config.supervision.clone();
        let (address, user, database) = (
            self.address(),
            self.config.user.clone(),
            self.config.database.clone(),
        );
        let mut health = tokio::time::interval(policy.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await; // the server was just probed
        let watchdog_every = self.notifier.watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        // Probes run as tasks so that a slow probe never delays noticing the child's exit.
        let (probe_tx, mut probe_rx) = mpsc::channel::<PingStatus>(1);
        let mut probing = false;
        let mut last_answer = Instant::now();
        loop {
            tokio::select! {
                status = server.wait() => return Outcome::Exited(status),
                event = next_event(&mut self.events) => match event {
                    Control::Reload => self.reload(pid, data_dir),
                    Control::Immediate => return Outcome::Stop(ShutdownMode::Immediate),
                    Control::Shutdown { .. } => return Outcome::Stop(self.config.shutdown_mode),
                },
                _ = self.observer.pulse() => unreachable!("the pulse never ends"),
                _ = health.tick(), if !probing => {
                    probing = true;
                    let (tx, user, database) = (probe_tx.clone(), user.clone(), database.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(probe::ping(address, &user, &database, policy.health_timeout).await).await;
                    });
                }
                Some(status) = probe_rx.recv() => {
                    probing = false;
                    self.observer.probed(status == PingStatus::Accepting, policy.health_interval + policy.health_timeout);
                    if status != PingStatus::NoResponse {
                        last_answer = Instant::now();
                    } else if last_answer.elapsed() >= policy.hang_after {
                        return Outcome::Hung;
                    } else {
                        warn!(silent_ms = last_answer.elapsed().as_millis() as u64, "postgres did not answer a health probe");
                    }
                }
                _ = watchdog.tick(), if watchdog_every.is_some() => {
                    if last_answer.elapsed() < policy.hang_after {
                        self.notifier.watchdog();
                    }
                }
            }
        }
    }

    /// SIGHUP: re-read the config; write the new `[server]` settings and signal the postmaster.
    /// An invalid config is reported and the running settings kept.
    fn reload(&mut self, pid: Pid, data_dir: &Path) {
        self.notifier.reloading();
        match Config::load(&self.sources) {
            Err(e) => error!("reload: the config is invalid, keeping the running settings:\n{e}"),
            Ok(new) => {
                let needs_restart = [
                    (
                        "listen_address",
                        new.listen_address != self.config.listen_address,
                    ),
                    ("port", new.port != self.config.port),
                    ("data_dir", new.data_dir != self.config.data_dir),
                    (
                        "user/password/database",
                        new.user != self.config.user
                            || new.password != self.config.password
                            || new.database != self.config.database,
                    ),
                ];
                for (key, changed) in needs_restart {
                    if changed {
                        warn!("reload: {key} changed; it takes effect when pgwarden is restarted");
                    }
                }
                match cluster::write_server_settings(data_dir, &new.server, &self.run_as) {
                    Ok(changed) => info!(changed, "reload: server settings written"),
                    Err(e) => error!("reload: cannot write the server settings: {e}"),
                }
                self.config.server = new.server;
                self.config.shutdown_mode = new.shutdown_mode;
                self.config.shutdown_timeout = new.shutdown_timeout;
                self.config.supervision = new.supervision;
            }
        }
        info!("reloading the server's configuration (SIGHUP)");
        let _ = kill(pid, Signal::SIGHUP);
        self.notifier.ready("ready (reloaded)");
    }

    /// Stops the server in `mode`, escalating to immediate (SIGQUIT) after the shutdown
    /// timeout or a second signal, then to SIGKILL of the whole group.
    async fn stop(&mut self, mut server: Server, mode: ShutdownMode) -> Result<()> {
        // `pgwarden stop --mode` asks through the state dir; a second signal stays immediate.
        let mode = match mode {
            ShutdownMode::Immediate => mode,
            _ => self.status.take_stop_request().unwrap_or(mode),
        };
        let (first, limit) = match mode {
            ShutdownMode::Smart => (Signal::SIGTERM, self.config.shutdown_timeout),
            ShutdownMode::Fast => (Signal::SIGINT, self.config.shutdown_timeout),
            ShutdownMode::Immediate => (Signal::SIGQUIT, IMMEDIATE_GRACE),
        };
        // The signal first: the log line and the status file can be written while it stops.
        server.signal(first);
        self.transition(
            State::Stopping,
            &format!("{mode:?} shutdown").to_lowercase(),
        );
        self.notifier.stopping();
        let escalate = mode != ShutdownMode::Immediate;
        let status = match self.wait_or_escalate(&mut server, limit, escalate).await {
            Some(status) => status,
            None => {
                warn!(
                    "postgres did not stop in time (or a second stop request came); immediate shutdown"
                );
                server.signal(Signal::SIGQUIT);
                match self
                    .wait_or_escalate(&mut server, IMMEDIATE_GRACE, false)
                    .await
                {
                    Some(status) => status,
                    None => {
                        warn!("postgres ignored SIGQUIT; killing its process group");
                        server.clear_remains().await;
                        server.wait().await
                    }
                }
            }
        };
        // A postmaster that exited 0 waited for all its children first (it exits last): nothing
        // remains, and the /proc scan would only delay the exit.
        if !status.success() {
            server.clear_remains().await;
        }
        server.drain_log().await;
        self.status.exited(describe_exit(status));
        info!(exit = %describe_exit(status), "postgres stopped");
        self.transition(State::Stopped, "shutdown complete");
        Ok(())
    }

    /// Waits up to `limit` for the server to exit; `None` on timeout, or at once on a second
    /// stop request when `escalate_on_signal`.
    async fn wait_or_escalate(
        &mut self,
        server: &mut Server,
        limit: Duration,
        escalate_on_signal: bool,
    ) -> Option<ExitStatus> {
        let sleep = tokio::time::sleep(limit);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                status = server.wait() => return Some(status),
                _ = &mut sleep => return None,
                _ = self.observer.pulse() => unreachable!("the pulse never ends"),
                event = next_event(&mut self.events) => {
                    if escalate_on_signal && matches!(event, Control::Immediate | Control::Shutdown { .. }) {
                        return None;
                    }
                }
            }
        }
    }
}

/// Whether `postmaster.pid` belongs to `pid` and its status line (line 8) reads `ready` (or
/// `standby`). The file is rewritten in place, so a short or torn read just means "not yet".
fn pid_file_says_ready(data_dir: &Path, pid: Pid) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.as_raw().to_string().as_str())
        && lines
            .get(7)
            .is_some_and(|l| matches!(l.trim(), "ready" | "standby"))
}

/// The next control event; never resolves once the sender is gone (no busy loop on a closed
/// channel).
async fn next_event(events: &mut UnboundedReceiver<Control>) -> Control {
    match events.recv().await {
        Some(event) => event,
        None => std::future::pending().await,
    }
}

/// Resolves on the first stop request (reloads are ignored).
async fn shutdown_requested(events: &mut UnboundedReceiver<Control>) {
    while next_event(events).await == Control::Reload {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((90..=110).contains(&d[0]), "{d:?}");
        assert!((180..=220).contains(&d[1]), "{d:?}");
        assert!((315..=385).contains(&d[2]), "{d:?}");
        assert!((315..=385).contains(&d[3]), "{d:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(110));
    }

    #[test]
    fn the_lifecycle_edges_are_allowed() {
        for (from, to) in [
            (Installing, Initialising),
            (Initialising, Starting),
            (Starting, Ready),
            (Ready, Restarting),
            (Starting, Restarting),
            (Restarting, Starting),
            (Ready, Stopping),
            (Starting, Stopping),
            (Stopping, Stopped),
            (Restarting, Stopped),
            (Installing, Stopped),
            (Initialising, Stopped),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?} should be allowed");
        }
    }

    #[test]
    fn impossible_edges_are_refused() {
        for (from, to) in [
            (Installing, Ready),
            (Ready, Starting),
            (Ready, Stopped),
            (Stopped, Starting),
            (Stopping, Starting),
            (Restarting, Ready),
            (Restarting, Stopping),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?} should be refused");
        }
    }
}
