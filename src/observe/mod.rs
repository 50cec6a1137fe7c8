//! Observability: `/livez`, `/readyz` and Prometheus `/metrics` over HTTP, off unless
//! `http_address` (or `--http-address`) names where to listen.
//!
//! pgwarden knows the server's state first-hand, so it serves health and metrics itself instead
//! of a second daemon (postgres_exporter) to install and supervise. The supervisor feeds this
//! module through two `tokio::sync::watch` channels and never waits on it:
//! - the status record ([`Record`]): sent at the one place the supervisor writes `status.json`
//!   ([`crate::instance::status::StatusFile`]), with what this module derives from the transitions;
//! - the pulse ([`health::Pulse`]): a heartbeat from the supervisor's loop, and the result of
//!   its last readiness probe.
//!
//! The parts: [`health`] decides live/ready from those two values, [`pg_stats`] queries the
//! server (as [`crate::config::ADMIN_ROLE`] over the private socket, with a timeout and a
//! cache), [`metrics`] encodes both (and the last backup, from [`crate::backup::record`]) in the
//! Prometheus text format, and [`http`] serves them, on connections bounded by [`connections`]
//! (a cap derived from the open-file limit, timeouts, a request-size bound) so that the
//! endpoint, which any local user can reach, can only ever fail its own requests;
//! [`endpoint_file`] keeps its figures in the state directory for `pgwarden doctor`.

pub mod connections;
pub mod endpoint_file;
pub mod health;
pub mod http;
pub mod metrics;
pub mod pg_stats;

pub use crate::config::http_address::{EXAMPLE_ADDRESS, resolve_address};
use crate::error::{Error, Result};
use crate::instance::status::Status;
use health::{Probe, Pulse};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The supervisor's state as the endpoint sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub status: Status,
    /// Starts that ended before the server was ready (the record's `failed_starts`).
    pub failed_starts: u64,
}

/// The supervisor's side: publishes its status and its pulse. Cheap to call; nobody needs to
/// listen (without an HTTP endpoint every value is simply replaced by the next).
#[derive(Debug, Clone)]
pub struct Observer {
    record: Arc<watch::Sender<Option<Record>>>,
    pulse: Arc<watch::Sender<Pulse>>,
}

/// The endpoint's side.
#[derive(Debug, Clone)]
pub struct Watchers {
    pub record: watch::Receiver<Option<Record>>,
    pub pulse: watch::Receiver<Pulse>,
}

/// Beats closer together than this are dropped (the readiness poll runs every millisecond).
const BEAT_EVERY: Duration = Duration::from_millis(100);
/// How often [`Observer::pulse`] beats while the loop waits.
const PULSE_PERIOD: Duration = Duration::from_secs(1);

impl Observer {
    /// An observer and the receiving side for the endpoint.
    pub fn new() -> (Observer, Watchers) {
        let (record, record_rx) = watch::channel(None);
        let (pulse, pulse_rx) = watch::channel(Pulse {
            beat: Instant::now(),
            probe: None,
        });
        (
            Observer {
                record: Arc::new(record),
                pulse: Arc::new(pulse),
            },
            Watchers {
                record: record_rx,
                pulse: pulse_rx,
            },
        )
    }

    /// An observer nobody listens to (no HTTP endpoint).
    pub fn detached() -> Observer {
        Observer::new().0
    }

    /// The listener the status file calls with every record it writes: publishes it.
    pub fn status_listener(&self) -> impl FnMut(&Status) + Send + 'static {
        let sender = self.record.clone();
        move |status: &Status| {
            sender.send_replace(Some(Record {
                status: status.clone(),
                failed_starts: u64::from(status.failed_starts),
            }));
        }
    }

    /// The loop is alive (throttled to one beat per [`BEAT_EVERY`]).
    pub fn beat(&self) {
        let now = Instant::now();
        self.pulse.send_if_modified(|pulse| {
            let due = now.duration_since(pulse.beat) >= BEAT_EVERY;
            if due {
                pulse.beat = now;
            }
            due
        });
    }

    /// A readiness probe answered (`accepting`) or not; its answer holds for `valid_for` (the
    /// health interval plus the probe's timeout: the next probe is due by then).
    pub fn probed(&self, accepting: bool, valid_for: Duration) {
        let now = Instant::now();
        self.pulse.send_modify(|pulse| {
            pulse.beat = now;
            pulse.probe = Some(Probe {
                at: now,
                accepting,
                valid_for,
            });
        });
    }

    /// Beats every [`PULSE_PERIOD`], forever: a `select!` arm beside whatever the loop waits
    /// for, so that the beats stop when the loop stops being polled.
    pub async fn pulse(&self) {
        let mut tick = tokio::time::interval(PULSE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.beat();
        }
    }
}

/// Binds `address` (an error names it and what to do) and serves the endpoint in a task for
/// the rest of the process, within the bounds for pgwarden's open-file limit `fd_limit`.
/// `state_dir` holds the backup record ([`crate::backup::record`]) and the endpoint's own
/// ([`endpoint_file`]).
pub async fn serve(
    address: SocketAddr,
    watchers: Watchers,
    state_dir: std::path::PathBuf,
    fd_limit: u64,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Config {
            problems: vec![format!(
                "http_address {address}: cannot listen there: {e}\n\
                 help: choose another port (--http-address 127.0.0.1:PORT), or stop what uses it"
            )],
        })?;
    let bound = listener.local_addr().unwrap_or(address);
    let bounds = connections::Bounds::for_fd_limit(fd_limit);
    let counters = Arc::new(connections::Counters::new(bounds.cap));
    tokio::spawn(endpoint_file::keep_written(
        state_dir.clone(),
        bound,
        fd_limit,
        counters.clone(),
    ));
    tokio::spawn(http::serve(listener, watchers, state_dir, bounds, counters));
    tracing::info!(
        address = %bound,
        max_connections = bounds.cap,
        "serving /livez, /readyz and /metrics"
    );
    Ok(bound)
}

/// A last exit for unit tests: SIGKILL from outside.
#[cfg(test)]
pub(crate) fn sample_exit() -> crate::instance::status::LastExit {
    crate::instance::status::LastExit {
        code: None,
        signal: Some(9),
        from_outside: true,
        oom_killed: false,
        text: "signal 9 (SIGKILL)".into(),
        at_ms: 1_700_000_001_000,
    }
}

/// A status record for unit tests.
#[cfg(test)]
pub(crate) fn sample_status() -> Status {
    Status {
        state: crate::instance::status::State::Ready,
        cause: "accepting connections".into(),
        supervisor_pid: 1,
        postmaster_pid: Some(2),
        started_at_ms: 1_700_000_000_000,
        ready_at_ms: Some(1_700_000_001_000),
        updated_at_ms: 1_700_000_001_500,
        restarts: 0,
        failed_starts: 0,
        last_exit: None,
        gave_up: None,
        postgresql_version: "16.14.0".into(),
        data_dir: "/d".into(),
        listen_address: "127.0.0.1".parse().unwrap(),
        port: 5433,
        socket_dir: "/d.pgwarden/socket".into(),
        user: "trader".into(),
        database: "trader".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_accepted_and_others_refused_unless_allowed() {
        let mut problems = Vec::new();
        assert_eq!(
            resolve_address(Some("127.0.0.1:9187"), false, 5433, &mut problems),
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert!(resolve_address(Some("[::1]:9187"), false, 5433, &mut problems).is_some());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            resolve_address(Some("0.0.0.0:9187"), false, 5433, &mut problems),
            None
        );
        assert!(problems[0].contains("http_allow_remote"), "{problems:?}");
        assert!(resolve_address(Some("0.0.0.0:9187"), true, 5433, &mut problems).is_some());
        assert_eq!(
            resolve_address(Some("localhost"), false, 5433, &mut problems),
            None
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            resolve_address(Some("127.0.0.1:5433"), false, 5433, &mut problems),
            None
        );
        assert!(
            problems[2].contains("the server's own port"),
            "{problems:?}"
        );
        assert_eq!(resolve_address(None, false, 5433, &mut problems), None);
    }

    #[test]
    fn failed_starts_come_from_the_record() {
        let (observer, watchers) = Observer::new();
        let mut listen = observer.status_listener();
        let mut status = sample_status();
        status.state = crate::instance::status::State::Starting;
        status.failed_starts = 2;
        listen(&status);
        let record = watchers.record.borrow().clone().unwrap();
        assert_eq!(record.failed_starts, 2);
        assert_eq!(
            record.status.state,
            crate::instance::status::State::Starting
        );
    }
}
