//! The status file: what the running supervisor is doing, for `status`, `stop`, `url`, `wait`.
//!
//! `<state dir>/status.json`, rewritten on every state transition through a temp file and a
//! rename, so a reader sees the old or the new file, never half of one. The file says who wrote
//! it (the supervisor's pid), but whether that supervisor still runs is decided by the instance
//! lock ([`crate::instance::lock::holder`]), never by the file's existence: a killed supervisor leaves
//! its last status behind. No secret is written here; the file is private to its owner (0600).
//!
//! The same directory holds the stop request: `pgwarden stop --mode smart` writes the wanted
//! mode to `stop-request` before it signals the supervisor, which takes (reads and removes) it.

use crate::config::ShutdownMode;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const FILE: &str = "status.json";
pub const STOP_REQUEST: &str = "stop-request";

/// The supervisor's states; their names (lowercase) are what `status.json` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub const ALL: [State; 7] = [
        State::Installing,
        State::Initialising,
        State::Starting,
        State::Ready,
        State::Restarting,
        State::Stopping,
        State::Stopped,
    ];

    /// The name `status.json` and `pgwarden status` use.
    pub fn name(self) -> &'static str {
        match self {
            State::Installing => "installing",
            State::Initialising => "initialising",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Restarting => "restarting",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the last postmaster ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// Its exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// The signal was sent by neither pgwarden nor the server itself.
    pub from_outside: bool,
    /// The kernel's OOM killer ended it (the cgroup's `memory.events` `oom_kill` count grew).
    pub oom_killed: bool,
    /// In words, e.g. `signal 9 (SIGKILL) from outside pgwarden`.
    pub text: String,
    pub at_ms: u64,
}

/// The one value that describes the supervisor to the outside: written to `status.json` (and
/// handed to whoever else serves it) at every change. Times are Unix epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// Why the last transition happened, e.g. `restart 1 after a crash (signal 9 (SIGKILL))`.
    pub cause: String,
    pub supervisor_pid: u32,
    /// The current postmaster; `None` before the first spawn and between two.
    pub postmaster_pid: Option<i32>,
    /// When this supervisor started.
    pub started_at_ms: u64,
    /// When the server last became ready; `None` while it is not ready.
    pub ready_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Restarts after exits of a server that had been ready (crashes, hangs).
    pub restarts: u32,
    /// Exits before the server was ready (counted against `max_failures`).
    pub failed_starts: u32,
    pub last_exit: Option<LastExit>,
    /// Why pgwarden gave up on the server, once it has.
    pub gave_up: Option<String>,
    pub postgresql_version: String,
    pub data_dir: PathBuf,
    pub listen_address: IpAddr,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub user: String,
    pub database: String,
}

/// Called with every record written (the HTTP endpoint's feed, [`crate::observe`]).
pub type Listener = Box<dyn FnMut(&Status) + Send>;

/// Where the supervisor publishes its [`Status`]: the file, and the listener.
pub struct StatusFile {
    path: PathBuf,
    /// Set after the first failed write, so a full disk is reported once, not per transition.
    warned: bool,
    listener: Option<Listener>,
}

impl std::fmt::Debug for StatusFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StatusFile {
    pub fn new(state_dir: &Path) -> StatusFile {
        // A request left by a `pgwarden stop` that a previous supervisor never read.
        let _ = std::fs::remove_file(state_dir.join(STOP_REQUEST));
        StatusFile {
            path: state_dir.join(FILE),
            warned: false,
            listener: None,
        }
    }

    /// Calls `listener` with every record written from now on.
    pub fn on_write(&mut self, listener: impl FnMut(&Status) + Send + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The shutdown mode `pgwarden stop` asked for, if any (read once, then removed).
    pub fn take_stop_request(&self) -> Option<ShutdownMode> {
        let path = self.path.with_file_name(STOP_REQUEST);
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        ShutdownMode::parse(text.trim())
    }

    /// Publishes `status`: to the listener, then to the file.
    pub fn write(&mut self, status: &Status) {
        if let Some(listener) = &mut self.listener {
            listener(status);
        }
        if let Err(e) = write_atomically(&self.path, status) {
            if !self.warned {
                tracing::warn!("cannot write the status file: {e}");
            }
            self.warned = true;
        }
    }
}

fn write_atomically(path: &Path, status: &Status) -> Result<()> {
    crate::os::json_file::write(
        path,
        status,
        crate::os::json_file::PRIVATE,
        crate::os::json_file::Durability::Rename,
    )
}

/// Reads a status file; `None` if it is missing or unreadable.
pub fn read(state_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            state: State::Ready,
            cause: "accepting connections".into(),
            supervisor_pid: 1,
            postmaster_pid: Some(2),
            started_at_ms: 3,
            ready_at_ms: Some(4),
            updated_at_ms: 5,
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

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        write_atomically(&path, &sample()).unwrap();
        let mut changed = sample();
        changed.state = State::Stopping;
        write_atomically(&path, &changed).unwrap();
        assert_eq!(read(dir.path()), Some(changed));
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stop_modes_round_trip() {
        for m in [
            ShutdownMode::Smart,
            ShutdownMode::Fast,
            ShutdownMode::Immediate,
        ] {
            assert_eq!(ShutdownMode::parse(m.name()), Some(m));
        }
        assert_eq!(ShutdownMode::parse("bogus"), None);
    }

    #[test]
    fn state_names_are_the_serialised_ones() {
        for s in State::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
