//! The supervisor: keeps one postgres running on the cluster until asked to stop.
//!
//! A small state machine, driven by one event loop per phase (`tokio::select!` over the child's
//! exit, control signals, and a probe or backoff timer):
//!
//! ```text
//!   Starting ──ready probe──▶ Ready ──postmaster exited──▶ Restarting ──backoff──▶ Starting
//!      │  └─exited before ready──────────────────────────────▲
//!      └──────────────── SIGTERM/SIGINT (any state) ──▶ Stopping ──▶ Stopped
//! ```
//! Every transition is logged with its cause. A crash loop (too many failed starts in a row)
//! ends pgwarden with the server's own last error, so that systemd's policy can take over.

use crate::binaries::Install;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::privilege::RunAs;
use crate::probe::{self, PingStatus};
use crate::server::{Server, describe_exit};
use crate::signals::Control;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// How often readiness is probed while the server starts.
const READY_POLL: Duration = Duration::from_millis(2);
/// Failed starts in a row after which pgwarden gives up.
const MAX_FAILED_STARTS: u32 = 5;
/// A server that stayed ready this long has its backoff reset.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After an immediate shutdown (SIGQUIT), how long before the group is killed.
const IMMEDIATE_GRACE: Duration = Duration::from_secs(5);

/// The supervisor's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// postgres spawned, not yet accepting connections.
    Starting,
    /// postgres accepts connections.
    Ready,
    /// postgres exited unexpectedly; waiting out the backoff before starting it again.
    Restarting,
    /// A shutdown was asked for; postgres is being stopped.
    Stopping,
    /// postgres has exited and will not be started again.
    Stopped,
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
        let jitter = rand::random_range(0.9..1.1);
        base.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// How a wait on the server ended.
enum Outcome {
    Ready,
    Exited(ExitStatus),
    Stop { immediate: bool },
}

pub struct Supervisor {
    config: Config,
    install: Install,
    cluster: Cluster,
    run_as: RunAs,
    events: UnboundedReceiver<Control>,
    backoff: Backoff,
    state: State,
    restarts: u32,
    announced: bool,
}

impl Supervisor {
    pub fn new(
        config: Config,
        install: Install,
        cluster: Cluster,
        run_as: RunAs,
        events: UnboundedReceiver<Control>,
    ) -> Self {
        Self {
            config,
            install,
            cluster,
            run_as,
            events,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            state: State::Stopped,
            restarts: 0,
            announced: false,
        }
    }

    fn transition(&mut self, to: State, cause: &str) {
        info!(from = ?self.state, to = ?to, cause, "state");
        self.state = to;
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::new(self.config.listen_address, self.config.port)
    }

    /// Runs until a shutdown is asked for (Ok) or the server cannot be kept up (Err).
    pub async fn run(mut self) -> Result<()> {
        let mut failed_starts = 0;
        let mut cause = String::from("launch");
        loop {
            self.transition(State::Starting, &cause);
            let mut server =
                Server::spawn(&self.config, &self.install, &self.cluster, &self.run_as)?;
            let outcome = self.wait_ready(&mut server).await;
            match outcome {
                Outcome::Ready => {
                    failed_starts = 0;
                    if !self.announced {
                        crate::reconcile::on_first_ready(&self.config, &self.cluster).await;
                    }
                    self.on_ready(&server);
                }
                Outcome::Stop { immediate } => return self.stop(server, immediate).await,
                Outcome::Exited(status) => {
                    server.clear_group().await;
                    failed_starts += 1;
                    let why = server.log.last_error().unwrap_or_default();
                    error!(exit = %describe_exit(status), last_log = %why, attempt = failed_starts, "postgres exited before it was ready");
                    if failed_starts >= MAX_FAILED_STARTS {
                        self.transition(State::Stopped, "crash loop");
                        return Err(Error::Server {
                            what: format!(
                                "postgres failed to start {failed_starts} times in a row ({}); giving up\n\
                                 server said: {}\n\
                                 help: fix the setting or the data directory it names, then start pgwarden again",
                                describe_exit(status),
                                if why.is_empty() {
                                    "(nothing)"
                                } else {
                                    why.trim()
                                }
                            ),
                        });
                    }
                    cause = format!("retry after failed start ({})", describe_exit(status));
                    if !self.back_off().await {
                        return Ok(());
                    }
                    continue;
                }
            }

            let ready_since = Instant::now();
            match self.wait_exit(&mut server).await {
                Outcome::Exited(status) => {
                    server.clear_group().await;
                    self.restarts += 1;
                    let why = server.log.last_error().unwrap_or_default();
                    error!(
                        exit = %describe_exit(status),
                        last_log = %why,
                        restarts = self.restarts,
                        "postgres exited unexpectedly; restarting it"
                    );
                    if ready_since.elapsed() >= STABLE_AFTER {
                        self.backoff.reset();
                    }
                    cause = format!("crash {} ({})", self.restarts, describe_exit(status));
                    if !self.back_off().await {
                        return Ok(());
                    }
                }
                Outcome::Stop { immediate } => return self.stop(server, immediate).await,
                Outcome::Ready => unreachable!("wait_exit does not report readiness"),
            }
        }
    }

    fn on_ready(&mut self, _server: &Server) {
        self.transition(State::Ready, "accepting connections");
        if !self.announced {
            self.announced = true;
            // The one line a user (or a script) waits for; stdout, unlike the log.
            println!(
                "ready: {} (PostgreSQL {}, data {})",
                self.config.url(),
                self.install.short_version(),
                self.cluster.data_dir.display()
            );
        } else {
            info!(restarts = self.restarts, "ready again");
        }
    }

    /// Sleeps out the backoff; false when a shutdown arrived meanwhile.
    async fn back_off(&mut self) -> bool {
        let delay = self.backoff.next_delay();
        self.transition(
            State::Restarting,
            &format!("waiting {} ms", delay.as_millis()),
        );
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                event = next_event(&mut self.events) => match event {
                    Control::Reload => {}
                    Control::Shutdown { .. } | Control::Immediate => {
                        self.transition(State::Stopped, "shutdown while restarting");
                        return false;
                    }
                },
            }
        }
    }

    /// Probes until the server accepts connections, exits, or a stop is asked for.
    async fn wait_ready(&mut self, server: &mut Server) -> Outcome {
        let address = self.address();
        let (user, database) = (self.config.user.clone(), self.config.database.clone());
        let pid = server.pid;
        let data_dir = self.cluster.data_dir.clone();
        let mut tick = tokio::time::interval(READY_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = server.wait() => return Outcome::Exited(status),
                event = next_event(&mut self.events) => match event {
                    Control::Reload => { let _ = nix::sys::signal::kill(pid, Signal::SIGHUP); }
                    Control::Immediate => return Outcome::Stop { immediate: true },
                    Control::Shutdown { .. } => return Outcome::Stop { immediate: false },
                },
                _ = tick.tick() => {
                    // The postmaster says "ready" in its pid file before anything connects (as
                    // pg_ctl -w reads it); probing only then keeps "the database system is
                    // starting up" out of the server log. The probe confirms the TCP listener.
                    if pid_file_says_ready(&data_dir, pid)
                        && probe::ping(address, &user, &database, Duration::from_secs(1)).await == PingStatus::Accepting
                    {
                        return Outcome::Ready;
                    }
                }
            }
        }
    }

    /// Waits while the server runs, until it exits or a stop is asked for.
    async fn wait_exit(&mut self, server: &mut Server) -> Outcome {
        let pid = server.pid;
        loop {
            tokio::select! {
                status = server.wait() => return Outcome::Exited(status),
                event = next_event(&mut self.events) => match event {
                    Control::Reload => {
                        info!("reloading the server's configuration (SIGHUP)");
                        let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
                    }
                    Control::Immediate => return Outcome::Stop { immediate: true },
                    Control::Shutdown { .. } => return Outcome::Stop { immediate: false },
                },
            }
        }
    }

    /// Fast shutdown (SIGINT), escalating to immediate (SIGQUIT) after the shutdown timeout or a
    /// second signal, then to SIGKILL of the whole group.
    async fn stop(&mut self, mut server: Server, immediate: bool) -> Result<()> {
        self.transition(
            State::Stopping,
            if immediate {
                "immediate shutdown"
            } else {
                "fast shutdown"
            },
        );
        let first = if immediate {
            Signal::SIGQUIT
        } else {
            Signal::SIGINT
        };
        server.signal(first);
        let deadline = if immediate {
            IMMEDIATE_GRACE
        } else {
            self.config.shutdown_timeout
        };
        let status = match self
            .wait_or_escalate(&mut server, deadline, !immediate)
            .await
        {
            Some(status) => status,
            None => {
                warn!("postgres did not stop in time; immediate shutdown (SIGQUIT)");
                server.signal(Signal::SIGQUIT);
                match self
                    .wait_or_escalate(&mut server, IMMEDIATE_GRACE, false)
                    .await
                {
                    Some(status) => status,
                    None => {
                        warn!("postgres ignored SIGQUIT; killing its process group");
                        server.clear_group().await;
                        server.wait().await
                    }
                }
            }
        };
        server.clear_group().await;
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
fn pid_file_says_ready(data_dir: &std::path::Path, pid: nix::unistd::Pid) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
