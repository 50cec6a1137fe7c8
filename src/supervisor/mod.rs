//! The supervisor: installs, initialises, and keeps one postgres running until asked to stop.
//!
//! Built the way nextest's runner is: one loop ([`Supervisor::run`]) with one `tokio::select!`
//! turns every source — control signals, the postmaster's exit, probe results, timers, the
//! install / first-launch / reconcile tasks — into an [`Event`]; the pure [`step`]
//! ([`machine`]) decides, and returns [`Action`]s; the executor (`Supervisor::perform`) carries
//! them out.
//! Nothing else decides: a signal means the same thing in every state because one function
//! reads it, and a new event is a new arm of one `match`.
//!
//! The executor owns the effects: the postmaster's handle ([`Server`], whose child has one
//! owner, its keeper task), the tasks, the timers the machine armed, the probes, systemd's
//! notifications, and the status record (`Supervisor::write_status` is the one place it is
//! published: the file, and the listener that feeds the HTTP endpoint).

pub mod machine;
pub mod notify;
pub mod reconcile;
pub mod server;
pub mod signals;
mod spares;

pub use machine::{Action, Event, Machine, step};

use crate::backup::snapshot_swap;
use crate::binaries::{self, Install};
use crate::cluster::template_fill::TemplateFill;
use crate::cluster::{self, Cluster};
use crate::config::{Config, Sources};
use crate::error::{Error, Result};
use crate::instance::launch::{self, Launch};
use crate::instance::resolve;
use crate::instance::status::{self, State, Status, StatusFile};
use crate::observe::Observer;
use crate::os::privilege::RunAs;
use crate::pg::probe::{self, PingStatus};
use crate::postmaster::pid_file::{self, Readiness};
use machine::{ExitReport, Finish, Level, Notice, Policy, Probing, Timer};
use nix::sys::signal::Signal;
use notify::Notifier;
use server::{Exit, Server};
use signals::Control;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// How often readiness is checked while the server starts: every millisecond (as the floor in
/// BENCHMARKS.md polls) for the first [`READY_POLL_FAST_FOR`], which covers a normal start, then
/// every [`READY_POLL_SLOW`] through a long crash recovery.
const READY_POLL: Duration = Duration::from_millis(1);
const READY_POLL_FAST_FOR: Duration = Duration::from_millis(500);
const READY_POLL_SLOW: Duration = Duration::from_millis(10);
/// How much more time systemd is asked for while a long step runs.
const EXTEND_BY: Duration = Duration::from_secs(60);

/// What woke the loop (turned into an [`Event`], or handled on the spot).
enum Wake {
    Control(Option<Control>),
    Exit(Option<Exit>),
    Installed(std::result::Result<Result<Install>, tokio::task::JoinError>),
    Initialised(std::result::Result<Result<Cluster>, tokio::task::JoinError>),
    Reconciled,
    Timer(Timer),
    Probed(ProbeResult),
    Poll,
    Health,
    Watchdog,
    Extend,
    Beat,
}

/// Awaits the future if there is one; never resolves otherwise.
async fn maybe<F: std::future::Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn maybe_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What a probe task reports.
#[derive(Debug)]
struct ProbeResult {
    pid: i32,
    mode: Probing,
    status: PingStatus,
}

pub struct Supervisor {
    /// Where the config came from, re-read on SIGHUP.
    sources: Sources,
    /// The configuration as loaded (never patched), and what this launch chose.
    loaded: Config,
    launch: Launch,
    /// [`launch::effective`] of the two: what the server runs with.
    config: Config,
    run_as: RunAs,
    state_dir: PathBuf,
    controls: mpsc::UnboundedReceiver<Control>,
    controls_open: bool,
    /// A stop request was received (the next one is a second one).
    stop_seen: bool,
    notifier: Notifier,
    machine: Machine,
    /// Feeds the HTTP endpoint: a heartbeat from the loop, the probes' answers (the status
    /// records reach it through `status_file`'s listener).
    observer: Observer,
    status_file: StatusFile,
    status: Status,

    install: Option<Install>,
    cluster: Option<Cluster>,
    install_task: Option<JoinHandle<Result<Install>>>,
    init_task: Option<JoinHandle<Result<Cluster>>>,
    /// Why the install or the first launch failed, as its own error: the exit code the user
    /// sees is that error's (a refused take-over or installation exits 2), not a generic one.
    prepare_error: Option<Error>,
    reconcile_task: Option<JoinHandle<()>>,
    /// The background template fill after a persistent first launch (started at the first
    /// ready, cancelled by a stop).
    template_fill: Option<TemplateFill>,
    server: Option<Server>,
    exit: Option<oneshot::Receiver<Exit>>,
    /// The deadlines of the machine's timers.
    timers: HashMap<Timer, Instant>,
    probing: Probing,
    probe_in_flight: bool,
    /// Health probing (re)starts: its interval begins anew.
    restart_health: bool,
    /// Readiness polling (re)starts: fast polling first.
    restart_poll: bool,
    probe_tx: mpsc::Sender<ProbeResult>,
    probe_rx: mpsc::Receiver<ProbeResult>,
    /// Readiness polling: when it started (fast polling first).
    polling_since: Instant,
    /// Where the `ready:` line goes when the supervisor runs inside another command
    /// (`exec --ephemeral`); on stdout otherwise.
    first_ready: Option<oneshot::Sender<String>>,
    /// Why the last snapshot swap failed (the old cluster is started again), for its answer.
    swap_error: Option<String>,
    /// An `--ephemeral` server's pool maker command line ([`Supervisor::with_pool_maker`]).
    pool_maker: Option<spares::PoolMaker>,
}

impl Supervisor {
    pub fn new(
        sources: Sources,
        loaded: Config,
        launch: Launch,
        run_as: RunAs,
        state_dir: PathBuf,
        controls: mpsc::UnboundedReceiver<Control>,
        notifier: Notifier,
    ) -> Self {
        let config = launch::effective(&loaded, &launch);
        let machine = Machine::new(policy(&config));
        let now = status::now_ms();
        let status = Status {
            state: machine.state(),
            cause: machine.record.cause.clone(),
            supervisor_pid: std::process::id(),
            postmaster_pid: None,
            started_at_ms: now,
            ready_at_ms: None,
            updated_at_ms: now,
            restarts: 0,
            failed_starts: 0,
            last_exit: None,
            gave_up: None,
            postgresql_version: String::new(),
            data_dir: config.data_dir.clone(),
            listen_address: config.listen_address,
            port: config.port,
            socket_dir: state_dir.join("socket"),
            user: config.user.clone(),
            database: config.database.clone(),
        };
        let (probe_tx, probe_rx) = mpsc::channel(4);
        Self {
            status_file: StatusFile::new(&state_dir),
            status,
            sources,
            loaded,
            launch,
            config,
            run_as,
            state_dir,
            controls,
            controls_open: true,
            stop_seen: false,
            notifier,
            machine,
            observer: Observer::detached(),
            install: None,
            cluster: None,
            install_task: None,
            init_task: None,
            prepare_error: None,
            reconcile_task: None,
            template_fill: None,
            server: None,
            exit: None,
            timers: HashMap::new(),
            probing: Probing::Off,
            probe_in_flight: false,
            restart_health: false,
            restart_poll: false,
            probe_tx,
            probe_rx,
            polling_since: Instant::now(),
            first_ready: None,
            swap_error: None,
            pool_maker: None,
        }
    }

    /// Hands the `ready:` line to `ready` instead of printing it: the supervisor runs inside a
    /// command that has its own output (`exec --ephemeral`, whose CMD owns stdout).
    pub fn on_first_ready(mut self, ready: oneshot::Sender<String>) -> Self {
        self.first_ready = Some(ready);
        self
    }

    /// The command line (after the program) of the detached maker of a pool entry that an
    /// `--ephemeral` server starts once ready ([`crate::cluster::spare::maker`]); without it
    /// the entry is made on the background thread and cancelled by a stop.
    pub fn with_pool_maker(mut self, command_line: Vec<std::ffi::OsString>) -> Self {
        self.pool_maker = Some(spares::PoolMaker::new(command_line));
        self
    }

    /// Publishes the status records, a heartbeat from the loop and the probes' answers to
    /// `observer` (the HTTP endpoint's feed).
    pub fn observed(mut self, observer: Observer) -> Self {
        let mut listener = observer.status_listener();
        listener(&self.status);
        self.status_file.on_write(listener);
        self.observer = observer;
        self
    }

    /// Runs until a shutdown is asked for (Ok) or the server cannot be kept up (Err).
    pub async fn run(mut self) -> Result<()> {
        let result = self.serve().await;
        // Cancelled at the stop request already; its thread removes its working directory
        // while the server shuts down, so this wait is short.
        // Usually long done: then no thread is started to wait for it.
        if let Some(mut fill) = self.template_fill.take()
            && !fill.finish(Duration::ZERO)
        {
            let _ = tokio::task::spawn_blocking(move || fill.finish(Duration::from_secs(5))).await;
        }
        result
    }

    async fn serve(&mut self) -> Result<()> {
        info!(data_dir = %self.config.data_dir.display(), "pgwarden starting");
        let mut queue: std::collections::VecDeque<Event> = Default::default();
        let first = self.machine.start();
        if let Some(finish) = self.perform_all(first, &mut queue).await {
            return finish;
        }
        let mut watchdog = self.notifier.watchdog_interval().map(tokio::time::interval);
        // Its first tick half a period from now: an interval's immediate first tick, awaited
        // here, cost every start 1 ms (the timer's granularity) before the install's result.
        let mut extend = tokio::time::interval_at(Instant::now() + EXTEND_BY / 2, EXTEND_BY / 2);
        let mut poll = tokio::time::interval(READY_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(self.config.supervision.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Keeps the loop's heartbeat going while nothing else happens.
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.observer.beat();
            if std::mem::take(&mut self.restart_poll) {
                // A new start: poll fast again.
                poll = tokio::time::interval(READY_POLL);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            if std::mem::take(&mut self.restart_health) {
                // The server was just probed: the next health probe is one interval away.
                let every = self.config.supervision.health_interval;
                health = tokio::time::interval_at(Instant::now() + every, every);
                health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            while let Some(event) = queue.pop_front() {
                let actions = step(&mut self.machine, event);
                if let Some(finish) = self.perform_all(actions, &mut queue).await {
                    return finish;
                }
            }
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, at)| (*k, *at));
            let wake = tokio::select! {
                control = self.controls.recv(), if self.controls_open => Wake::Control(control),
                exit = maybe(self.exit.as_mut()) => Wake::Exit(exit.ok()),
                done = maybe(self.install_task.as_mut()) => Wake::Installed(done),
                done = maybe(self.init_task.as_mut()) => Wake::Initialised(done),
                _ = maybe(self.reconcile_task.as_mut()) => Wake::Reconciled,
                _ = tokio::time::sleep_until(next_timer.map_or_else(Instant::now, |(_, at)| at)), if next_timer.is_some() => {
                    Wake::Timer(next_timer.expect("guarded").0)
                }
                Some(result) = self.probe_rx.recv() => Wake::Probed(result),
                _ = poll.tick(), if self.probing == Probing::Readiness && !self.probe_in_flight => Wake::Poll,
                _ = health.tick(), if self.probing == Probing::Health && !self.probe_in_flight => Wake::Health,
                _ = maybe_tick(watchdog.as_mut()) => Wake::Watchdog,
                _ = extend.tick() => Wake::Extend,
                _ = heartbeat.tick() => Wake::Beat,
            };
            let event = match wake {
                Wake::Control(Some(control)) => match self.control(control) {
                    Some(event) => event,
                    None => continue,
                },
                Wake::Control(None) => {
                    self.controls_open = false;
                    continue;
                }
                Wake::Exit(exit) => {
                    self.exit = None;
                    self.server = None;
                    match exit {
                        Some(exit) => Event::Exited(report(exit)),
                        None => Event::PrepareFailed(
                            "pgwarden bug: the postmaster's keeper ended without a report".into(),
                        ),
                    }
                }
                Wake::Installed(done) => {
                    self.install_task = None;
                    match done {
                        Ok(Ok(install)) => {
                            let version = install.version.to_string();
                            self.install = Some(install);
                            Event::Installed { version }
                        }
                        Ok(Err(e)) => self.prepare_failed(e),
                        Err(e) => Event::PrepareFailed(format!("the install task failed: {e}")),
                    }
                }
                Wake::Initialised(done) => {
                    self.init_task = None;
                    match done {
                        Ok(done) => self.initialised(done),
                        Err(e) => {
                            Event::PrepareFailed(format!("the first-launch task failed: {e}"))
                        }
                    }
                }
                Wake::Reconciled => {
                    self.reconcile_task = None;
                    Event::Reconciled
                }
                Wake::Timer(kind) => {
                    self.timers.remove(&kind);
                    Event::Timer(kind)
                }
                Wake::Probed(result) => {
                    self.probe_in_flight = false;
                    match self.probe_event(result) {
                        Some(event) => event,
                        None => continue,
                    }
                }
                Wake::Poll => {
                    self.poll_readiness(&mut poll);
                    continue;
                }
                Wake::Health => {
                    self.probe(Probing::Health, self.config.supervision.health_timeout);
                    continue;
                }
                Wake::Beat => continue,
                Wake::Watchdog => Event::WatchdogTick,
                Wake::Extend => Event::ExtendTick,
            };
            queue.push_back(event);
        }
    }

    /// A control signal as an event (none: a SIGUSR1 without a swap request, ignored).
    fn control(&mut self, control: Control) -> Option<Event> {
        if matches!(control, Control::Immediate | Control::Shutdown { .. })
            && let Some(fill) = &self.template_fill
        {
            // A stop never waits for it: its children are killed now.
            fill.cancel();
        }
        Some(match control {
            Control::Reload => Event::Reload,
            Control::Swap if snapshot_swap::take_request(&self.state_dir) => Event::Swap,
            Control::Swap => {
                warn!("SIGUSR1 without a snapshot restore request: ignored");
                return None;
            }
            Control::Immediate => Event::StopNow,
            Control::Shutdown { .. } if self.stop_seen => Event::StopNow,
            Control::Shutdown { .. } => {
                self.stop_seen = true;
                // `pgwarden stop --mode` asks through the state dir.
                let mode = self
                    .status_file
                    .take_stop_request()
                    .unwrap_or(self.config.shutdown_mode);
                Event::Stop(mode)
            }
        })
    }

    fn initialised(&mut self, done: Result<Cluster>) -> Event {
        match done {
            Ok(cluster) => {
                let reconcile = reconcile::timing(&self.config, &cluster, &self.state_dir);
                let created = cluster.created;
                if let Some(install) = &self.install {
                    self.status.postgresql_version = install.version.to_string();
                }
                self.status.data_dir = cluster.data_dir.clone();
                self.status.socket_dir = cluster.socket_dir.clone();
                self.cluster = Some(cluster);
                Event::Initialised { created, reconcile }
            }
            Err(e) => self.prepare_failed(e),
        }
    }

    /// The machine learns why (a text for its record); the executor keeps the error itself.
    fn prepare_failed(&mut self, error: Error) -> Event {
        let why = error.with_causes();
        self.prepare_error = Some(error);
        Event::PrepareFailed(why)
    }

    /// Readiness: the postmaster says "ready" in its pid file (as pg_ctl -w reads it), and
    /// there, that it listens on TCP at the address and port it was given. That is what the
    /// probe confirmed, without a connection that makes the postmaster fork a backend to
    /// answer it (2 ms of every start, seen in row 12). A pid file that says `standby` (also
    /// written as an archive recovery with `hot_standby` off starts, refusing everyone until
    /// it ends) or ready without that TCP listener gets the probe, which finds out.
    fn poll_readiness(&mut self, poll: &mut tokio::time::Interval) {
        let (Some(server), Some(cluster)) = (&self.server, &self.cluster) else {
            return;
        };
        let address = self.config.listen_address.to_string();
        match pid_file::readiness(&cluster.data_dir, server.pid, &address, self.config.port) {
            Readiness::Listening => {
                let said = ProbeResult {
                    pid: server.pid.as_raw(),
                    mode: Probing::Readiness,
                    status: PingStatus::Accepting,
                };
                self.probe_in_flight = self.probe_tx.try_send(said).is_ok();
            }
            Readiness::SaysReady => self.probe(Probing::Readiness, Duration::from_secs(1)),
            Readiness::NotYet => {}
        }
        if poll.period() == READY_POLL && self.polling_since.elapsed() >= READY_POLL_FAST_FOR {
            *poll = tokio::time::interval(READY_POLL_SLOW);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
    }

    /// Probes in a task, so that a slow probe never delays noticing anything else.
    fn probe(&mut self, mode: Probing, timeout: Duration) {
        let Some(server) = &self.server else { return };
        let pid = server.pid.as_raw();
        let address = std::net::SocketAddr::new(self.config.listen_address, self.config.port);
        let (user, database) = (self.config.user.clone(), self.config.database.clone());
        let tx = self.probe_tx.clone();
        self.probe_in_flight = true;
        tokio::spawn(async move {
            let status = probe::ping(address, &user, &database, timeout).await;
            let _ = tx.send(ProbeResult { pid, mode, status }).await;
        });
    }

    fn probe_event(&self, result: ProbeResult) -> Option<Event> {
        let current = self.server.as_ref().map(|s| s.pid.as_raw());
        if current != Some(result.pid) || result.mode != self.probing {
            return None; // A probe of an earlier server, or of an earlier phase.
        }
        let accepting = result.status == PingStatus::Accepting;
        if accepting || result.mode == Probing::Health {
            // Holds until the next health probe is due.
            let s = &self.config.supervision;
            self.observer
                .probed(accepting, s.health_interval + s.health_timeout);
        }
        match result.mode {
            Probing::Readiness => {
                (result.status == PingStatus::Accepting).then_some(Event::Accepting)
            }
            // pgwarden could not open a socket: not the server's silence.
            Probing::Health if result.status == PingStatus::NoAttempt => Some(Event::Unprobed),
            Probing::Health => Some(Event::Health {
                answered: result.status != PingStatus::NoResponse,
            }),
            Probing::Off => None,
        }
    }

    async fn perform_all(
        &mut self,
        actions: Vec<Action>,
        queue: &mut std::collections::VecDeque<Event>,
    ) -> Option<Result<()>> {
        for action in actions {
            if let Some(finish) = self.perform(action, queue).await {
                return Some(finish);
            }
        }
        None
    }

    /// Carries out one action; `Some` when the supervisor is done.
    async fn perform(
        &mut self,
        action: Action,
        queue: &mut std::collections::VecDeque<Event>,
    ) -> Option<Result<()>> {
        match action {
            Action::Install => {
                let (source, dir, version, policy) = (
                    self.config.source.clone(),
                    self.config.install_dir.clone(),
                    self.config.version.clone(),
                    self.config.install_policy.clone(),
                );
                let run_as = self.run_as.clone();
                let lock = self.config.lock.clone();
                self.install_task = Some(tokio::spawn(async move {
                    let (install, _) =
                        binaries::locked::ensure(&source, &dir, &version, &lock, &policy).await?;
                    run_as.check_traversable(&install.dir)?;
                    Ok(install)
                }));
            }
            Action::CancelInstall => {
                if let Some(task) = self.install_task.take() {
                    task.abort();
                }
            }
            Action::Initialise => {
                let install = self.install.clone().expect("installed before initialising");
                if cluster::is_initialised(&self.config.data_dir) {
                    // A few file checks: done here, without waiting for a thread of the pool.
                    let done =
                        cluster::prepare(&self.config, &install, &self.run_as, &self.state_dir);
                    let event = self.initialised(done);
                    queue.push_back(event);
                } else {
                    let (config, run_as, state_dir) = (
                        self.config.clone(),
                        self.run_as.clone(),
                        self.state_dir.clone(),
                    );
                    // Not interrupted: a first launch completes (or fails) as a whole.
                    self.init_task = Some(tokio::task::spawn_blocking(move || {
                        cluster::prepare(&config, &install, &run_as, &state_dir)
                    }));
                }
            }
            Action::ApplyConfig => self.apply_config(queue),
            Action::Spawn => {
                let (install, cluster) = (
                    self.install.as_ref().expect("installed"),
                    self.cluster.as_ref().expect("initialised"),
                );
                match Server::spawn(&self.config, install, cluster, &self.run_as) {
                    Ok((server, exit)) => {
                        queue.push_back(Event::Spawned {
                            pid: server.pid.as_raw(),
                        });
                        self.server = Some(server);
                        self.exit = Some(exit);
                    }
                    Err(e) => queue.push_back(Event::SpawnFailed(e.to_string())),
                }
            }
            Action::SignalReload => {
                if let Some(server) = &self.server {
                    info!("reloading the server's configuration (SIGHUP)");
                    server.signal(Signal::SIGHUP);
                }
            }
            Action::Escalate(ladder) => {
                if let Some(server) = &self.server {
                    server.escalate(ladder);
                    // The keeper sends the first signal now, before this step's status record
                    // is written: the server's shutdown does not wait for our file.
                    tokio::task::yield_now().await;
                    self.pool_maker_at_stop();
                }
            }
            Action::Hurry => {
                if let Some(server) = &self.server {
                    server.hurry();
                }
            }
            Action::Probe(mode) => {
                self.probing = mode;
                self.probe_in_flight = false;
                match mode {
                    Probing::Readiness => {
                        self.polling_since = Instant::now();
                        self.restart_poll = true;
                    }
                    Probing::Health => self.restart_health = true,
                    Probing::Off => {}
                }
            }
            Action::StartReconcile => {
                if let Some(cluster) = &self.cluster {
                    let (config, cluster, state_dir) =
                        (self.config.clone(), cluster.clone(), self.state_dir.clone());
                    self.reconcile_task = Some(tokio::spawn(async move {
                        reconcile::run(&config, &cluster, &state_dir).await
                    }));
                }
            }
            Action::CancelReconcile => {
                if let Some(task) = self.reconcile_task.take() {
                    task.abort();
                }
            }
            Action::Arm(Timer::Backoff, delay) => {
                // ±10% jitter, so that several supervisors do not retry in lockstep.
                let delay = delay.mul_f64(rand::random_range(0.9..1.1));
                info!(
                    delay_ms = delay.as_millis() as u64,
                    "waiting before the restart"
                );
                self.timers.insert(Timer::Backoff, Instant::now() + delay);
            }
            Action::Arm(timer, after) => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Action::Cancel(timer) => {
                self.timers.remove(&timer);
            }
            Action::Notify(notice) => self.notify(notice),
            Action::WriteStatus => self.write_status(),
            Action::SwapIn => {
                let data_dir = self.config.data_dir.clone();
                let data_dir = self
                    .cluster
                    .as_ref()
                    .map_or(data_dir, |c| c.data_dir.clone());
                match snapshot_swap::swap_staged(&data_dir) {
                    Ok(()) => info!("snapshot restore: the staged copy is swapped in"),
                    Err(e) => {
                        let why = e.with_causes();
                        error!("snapshot restore failed; starting the cluster as it was: {why}");
                        self.swap_error = Some(why);
                    }
                }
            }
            Action::AnswerSwap { failed } => {
                let failed = failed.or_else(|| self.swap_error.take());
                snapshot_swap::answer(&self.state_dir, failed.as_deref());
                if failed.is_none() {
                    // The restored snapshot's spare was used: make it again.
                    self.start_background(None);
                }
            }
            Action::Log(level, text) => match level {
                Level::Info => info!("{text}"),
                Level::Warn => warn!("{text}"),
                Level::Error => error!("{text}"),
            },
            Action::Transition { from, to, cause } => info!(from = ?from, to = ?to, cause, "state"),
            Action::Bug(text) => error!("{text}"),
            Action::Finish(Finish::Stopped) => return Some(Ok(())),
            Action::Finish(Finish::Failed(what)) => {
                return Some(Err(self
                    .prepare_error
                    .take()
                    .filter(|error| error.to_string() == what)
                    .unwrap_or(Error::Server { what })));
            }
        }
        None
    }

    /// A queued or immediate SIGHUP: the instance's sources loaded again as at start
    /// ([`resolve::reload`], which keeps what only a restart of pgwarden changes); the effective
    /// settings (with the launch's port and profile) go to the settings file. An invalid config
    /// is reported and the running settings kept.
    fn apply_config(&mut self, queue: &mut std::collections::VecDeque<Event>) {
        let new = match resolve::reload(&self.sources, &self.loaded) {
            Ok((new, fixed)) => {
                for key in fixed {
                    warn!("reload: {key} changed; it takes effect when pgwarden is restarted");
                }
                new
            }
            Err(e) => {
                error!("reload: the config is invalid, keeping the running settings:\n{e}");
                return;
            }
        };
        let effective = launch::effective(&new, &self.launch);
        if let Some(cluster) = &self.cluster {
            match cluster::write_server_settings(&cluster.data_dir, &effective.server, &self.run_as)
            {
                Ok(changed) => info!(changed, "reload: server settings written"),
                Err(e) => error!(
                    "reload: cannot write the server settings: {}",
                    e.with_causes()
                ),
            }
        }
        self.loaded = new;
        self.config = effective;
        queue.push_back(Event::Reconfigured(policy(&self.config)));
    }

    fn notify(&mut self, notice: Notice) {
        match notice {
            Notice::FirstReady => {
                let line = format!(
                    "ready: {} (PostgreSQL {}, data {})",
                    self.config.url(),
                    self.install
                        .as_ref()
                        .map_or_else(String::new, Install::short_version),
                    self.config.data_dir.display()
                );
                if let Some(install) = &self.install {
                    info!("binaries from {}", binaries::provenance(install));
                }
                // The one line a user (or a script) waits for; on stdout, unlike the log.
                match self.first_ready.take() {
                    Some(ready) => {
                        let _ = ready.send(line.clone());
                    }
                    None => println!("{line}"),
                }
                self.notifier.ready(&line);
                // The template (after a first launch that ran initdb), then the spares.
                let fill = self.cluster.as_ref().and_then(|c| c.fill_template.clone());
                self.start_background(fill);
            }
            Notice::Reloading => self.notifier.reloading(),
            Notice::Reloaded => self.notifier.ready("ready (reloaded)"),
            Notice::Status(text) => self.notifier.status(&text),
            Notice::Stopping => self.notifier.stopping(),
            Notice::Watchdog => self.notifier.watchdog(),
            Notice::ExtendTimeout => self.notifier.extend_timeout(EXTEND_BY),
        }
    }

    /// A throwaway server's pool maker, unless the background thread started it: now, while
    /// the server shuts down (nothing waits on this thread meanwhile). Not after a first
    /// launch whose template fill the stop cancelled: there is no template to copy.
    fn pool_maker_at_stop(&self) {
        if let (Some(maker), Some(cluster)) = (&self.pool_maker, &self.cluster)
            && cluster.fill_template.is_none()
            && let Some(template) = &cluster.spare_template
        {
            maker.start(&self.config, template);
        }
    }

    /// Starts the background work of a ready server: the template fill (`fill`), then the
    /// spares. Not while stopping, nor while an earlier one still runs.
    fn start_background(&mut self, fill: Option<PathBuf>) {
        if self
            .template_fill
            .as_ref()
            .is_some_and(TemplateFill::is_running)
        {
            return;
        }
        if let (Some(cluster), Some(install)) = (&self.cluster, &self.install)
            && !self.stop_seen
        {
            let (config, install_then, run_as) =
                (self.config.clone(), install.clone(), self.run_as.clone());
            let spare_template = cluster.spare_template.clone();
            let pool_maker = self.pool_maker.clone();
            self.template_fill = Some(TemplateFill::start(
                &self.config,
                install,
                &self.run_as,
                fill,
                move |cancel| {
                    spares::prepare(
                        &config,
                        &install_then,
                        &run_as,
                        spare_template.as_deref(),
                        pool_maker.as_ref(),
                        cancel,
                    )
                },
            ));
        }
    }

    /// The one place the status record is published.
    fn write_status(&mut self) {
        let record = &self.machine.record;
        let now = status::now_ms();
        let status = &mut self.status;
        if record.state == State::Ready && status.state != State::Ready {
            status.ready_at_ms = Some(now);
        } else if record.state != State::Ready {
            status.ready_at_ms = None;
        }
        status.state = record.state;
        status.cause = record.cause.clone();
        status.postmaster_pid = record.postmaster_pid;
        status.restarts = record.restarts;
        status.failed_starts = record.failed_starts;
        status.last_exit = record.last_exit.clone();
        status.gave_up = record.gave_up.clone();
        status.updated_at_ms = now;
        self.status_file.write(status);
    }
}

fn policy(config: &Config) -> Policy {
    Policy {
        supervision: config.supervision.clone(),
        shutdown_timeout: config.shutdown_timeout,
    }
}

fn report(exit: Exit) -> ExitReport {
    ExitReport {
        pid: exit.pid.as_raw(),
        status: exit.status,
        signalled_by_us: exit.signalled_by_us,
        oom_killed: exit.oom_killed,
        memory_limit: if exit.oom_killed {
            crate::postmaster::oom::memory_limit()
        } else {
            String::new()
        },
        explanation: exit.explanation,
        at: std::time::Instant::now(),
        at_ms: exit.at_ms,
    }
}

#[cfg(test)]
mod tests;
