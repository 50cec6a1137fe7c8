//! Live and ready, decided from the supervisor's pulse and status record (pure functions).
//!
//! - live: the supervisor's loop beat within [`LIVE_WITHIN`]. It beats at least every second
//!   while it waits for anything, so a loop that stopped being polled (blocked, deadlocked)
//!   fails `/livez` even though this endpoint, a task of its own, still answers.
//! - ready: the supervisor is `ready` and its last readiness probe was accepted and is still
//!   current (not older than the health interval plus the probe's timeout, when the next probe
//!   is due). A server that stops answering is therefore not ready within one health interval,
//!   long before the supervisor declares it hung.

use super::Record;
use serde::Serialize;
use std::time::{Duration, Instant};

/// A loop that has not beaten for this long is not live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// The supervisor loop's heartbeat and its last readiness probe.
#[derive(Debug, Clone, Copy)]
pub struct Pulse {
    pub beat: Instant,
    pub probe: Option<Probe>,
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub at: Instant,
    pub accepting: bool,
    /// How long this answer counts (health interval + health timeout).
    pub valid_for: Duration,
}

pub fn is_live(pulse: &Pulse, now: Instant) -> bool {
    now.saturating_duration_since(pulse.beat) <= LIVE_WITHIN
}

pub fn is_ready(record: Option<&Record>, pulse: &Pulse, now: Instant) -> bool {
    let ready_state =
        record.is_some_and(|r| r.status.state == crate::instance::status::State::Ready);
    let probed = pulse
        .probe
        .is_some_and(|p| p.accepting && now.saturating_duration_since(p.at) <= p.valid_for);
    ready_state && probed
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// The supervisor's state (`installing` … `stopped`).
    pub state: String,
    /// When that state began, in Unix seconds.
    pub since: f64,
    /// Why it changed, e.g. `restart 1 after crash (signal 9 (SIGKILL))`.
    pub cause: String,
    pub restarts: u32,
    pub failed_starts: u64,
    /// How the last postmaster ended, e.g. `signal 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// pgwarden's version.
    pub version: &'static str,
    pub postgresql_version: String,
}

pub fn readiness(record: Option<&Record>, pulse: &Pulse, now: Instant) -> Readiness {
    let ready = is_ready(record, pulse, now);
    match record {
        Some(r) => Readiness {
            ready,
            state: r.status.state.name().to_string(),
            since: r.status.updated_at_ms as f64 / 1000.0,
            cause: r.status.cause.clone(),
            restarts: r.status.restarts,
            failed_starts: r.failed_starts,
            last_exit: r.status.last_exit.as_ref().map(|e| e.text.clone()),
            version: env!("CARGO_PKG_VERSION"),
            postgresql_version: r.status.postgresql_version.clone(),
        },
        None => Readiness {
            ready,
            state: "installing".into(),
            since: 0.0,
            cause: "launch".into(),
            restarts: 0,
            failed_starts: 0,
            last_exit: None,
            version: env!("CARGO_PKG_VERSION"),
            postgresql_version: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::sample_status;

    fn record(state: &str) -> Record {
        let mut status = sample_status();
        status.state = serde_json::from_value(serde_json::json!(state)).unwrap();
        Record {
            status,
            failed_starts: 0,
        }
    }

    fn pulse(now: Instant, probe_age: Duration, accepting: bool) -> Pulse {
        Pulse {
            beat: now,
            probe: Some(Probe {
                at: now - probe_age,
                accepting,
                valid_for: Duration::from_secs(10),
            }),
        }
    }

    #[test]
    fn ready_needs_the_ready_state_and_a_current_accepted_probe() {
        let now = Instant::now() + Duration::from_secs(60);
        let fresh = pulse(now, Duration::from_secs(1), true);
        assert!(is_ready(Some(&record("ready")), &fresh, now));
        assert!(!is_ready(Some(&record("restarting")), &fresh, now));
        assert!(!is_ready(None, &fresh, now));
        let stale = pulse(now, Duration::from_secs(11), true);
        assert!(!is_ready(Some(&record("ready")), &stale, now));
        let refused = pulse(now, Duration::from_secs(1), false);
        assert!(!is_ready(Some(&record("ready")), &refused, now));
        let never = Pulse {
            beat: now,
            probe: None,
        };
        assert!(!is_ready(Some(&record("ready")), &never, now));
    }

    #[test]
    fn live_while_the_loop_beats() {
        let now = Instant::now() + Duration::from_secs(60);
        let beat = |age| Pulse {
            beat: now - age,
            probe: None,
        };
        assert!(is_live(&beat(Duration::from_secs(1)), now));
        assert!(!is_live(&beat(LIVE_WITHIN + Duration::from_millis(1)), now));
    }

    #[test]
    fn the_readiness_body_names_state_restarts_last_exit_and_version() {
        let now = Instant::now();
        let mut r = record("restarting");
        r.status.restarts = 2;
        r.status.last_exit = Some(crate::observe::sample_exit());
        let body =
            serde_json::to_value(readiness(Some(&r), &pulse(now, Duration::ZERO, true), now))
                .unwrap();
        assert_eq!(body["ready"], false);
        assert_eq!(body["state"], "restarting");
        assert_eq!(body["restarts"], 2);
        assert_eq!(body["last_exit"], "signal 9 (SIGKILL)");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["since"], 1_700_000_001.5);
    }
}
