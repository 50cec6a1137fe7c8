//! The restart policy, health checks and shutdown mode (`[supervisor]`, `shutdown_mode`).

use super::parse_duration;
use serde::Deserialize;
use std::time::Duration;

/// PostgreSQL's shutdown modes (the signal sent to the postmaster): `shutdown_mode` in the
/// config and `pgwarden stop --mode` are this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShutdownMode {
    /// Wait for clients to disconnect, then shut down (SIGTERM to postgres).
    Smart,
    /// Roll back open transactions, disconnect clients, shut down cleanly (SIGINT); the default.
    Fast,
    /// Quit at once, without a checkpoint; the next start runs crash recovery (SIGQUIT).
    Immediate,
}

impl ShutdownMode {
    const ALL: [ShutdownMode; 3] = [
        ShutdownMode::Smart,
        ShutdownMode::Fast,
        ShutdownMode::Immediate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ShutdownMode::Smart => "smart",
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }

    pub fn parse(text: &str) -> Option<ShutdownMode> {
        Self::ALL.into_iter().find(|m| m.name() == text)
    }
}

/// The restart policy and health checks (`[supervisor]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// First restart delay; doubled after each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A server that stayed ready this long has its backoff reset.
    pub stable_after: Duration,
    /// This many failed starts (exits before the server was ever ready) within `failure_window`
    /// end pgwarden; exits of a server that had been ready never count.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// How often a ready server is probed, and how long one probe may take.
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// A ready server that has not answered a probe for this long is hung, and restarted.
    pub hang_after: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(5),
            hang_after: Duration::from_secs(30),
        }
    }
}

/// The `[supervisor]` table of a config file; durations as text (`100ms`, `30s`, `2m`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionLayer {
    pub backoff_initial: Option<String>,
    pub backoff_max: Option<String>,
    pub stable_after: Option<String>,
    pub max_failures: Option<u32>,
    pub failure_window: Option<String>,
    pub health_interval: Option<String>,
    pub health_timeout: Option<String>,
    pub hang_after: Option<String>,
}

impl SupervisionLayer {
    pub(super) fn merge(self, top: SupervisionLayer) -> SupervisionLayer {
        SupervisionLayer {
            backoff_initial: top.backoff_initial.or(self.backoff_initial),
            backoff_max: top.backoff_max.or(self.backoff_max),
            stable_after: top.stable_after.or(self.stable_after),
            max_failures: top.max_failures.or(self.max_failures),
            failure_window: top.failure_window.or(self.failure_window),
            health_interval: top.health_interval.or(self.health_interval),
            health_timeout: top.health_timeout.or(self.health_timeout),
            hang_after: top.hang_after.or(self.hang_after),
        }
    }

    pub(super) fn resolve(self, problems: &mut Vec<String>) -> Supervision {
        let d = Supervision::default();
        let mut duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(text) => match parse_duration(&text) {
                Ok(v) if !v.is_zero() => v,
                Ok(_) => {
                    problems.push(format!("supervisor.{key} {text:?}: must be more than zero"));
                    default
                }
                Err(e) => {
                    problems.push(format!("supervisor.{key} {text:?}: {e}"));
                    default
                }
            },
        };
        let s = Supervision {
            backoff_initial: duration("backoff_initial", self.backoff_initial, d.backoff_initial),
            backoff_max: duration("backoff_max", self.backoff_max, d.backoff_max),
            stable_after: duration("stable_after", self.stable_after, d.stable_after),
            max_failures: self.max_failures.unwrap_or(d.max_failures),
            failure_window: duration("failure_window", self.failure_window, d.failure_window),
            health_interval: duration("health_interval", self.health_interval, d.health_interval),
            health_timeout: duration("health_timeout", self.health_timeout, d.health_timeout),
            hang_after: duration("hang_after", self.hang_after, d.hang_after),
        };
        if s.max_failures == 0 {
            problems.push("supervisor.max_failures: must be at least 1".into());
        }
        if s.backoff_max < s.backoff_initial {
            problems.push("supervisor.backoff_max is less than supervisor.backoff_initial".into());
        }
        s
    }
}
