//! The status file: what the running supervisor is doing, for `status`, `stop`, `url`, `wait`.
//!
//! `<state dir>/status.json`, rewritten on every state transition through a temp file and a
//! rename, so a reader sees the old or the new file, never half of one. The file says who wrote
//! it (the supervisor's pid), but whether that supervisor still runs is decided by the instance
//! lock ([`crate::instance::holder`]), never by the file's existence: a killed supervisor leaves
//! its last status behind. No secret is written here; the file is world-readable (0644).
//!
//! The same directory holds the stop request: `pgwarden stop --mode smart` writes the wanted
//! mode to `stop-request` before it signals the supervisor, which takes (reads and removes) it.

use crate::binaries::Install;
use crate::cluster::Cluster;
use crate::config::{Config, ShutdownMode};
use crate::error::{IoContext, Result};
use crate::supervisor::State;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const FILE: &str = "status.json";
pub const STOP_REQUEST: &str = "stop-request";

/// The file's content. Times are Unix epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `installing`, `initialising`, `starting`, `ready`, `restarting`, `stopping`, `stopped`.
    pub state: String,
    /// Why the last transition happened, e.g. `crash 1 (signal 9 (SIGKILL))`.
    pub cause: String,
    pub supervisor_pid: u32,
    /// The current postmaster; `None` before the first spawn.
    pub postmaster_pid: Option<i32>,
    pub started_at_ms: u64,
    /// When the server last became ready; `None` while it is not ready.
    pub ready_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Unexpected postmaster exits after it had been ready.
    pub restarts: u32,
    /// How the last postmaster ended, e.g. `signal 9 (SIGKILL)`.
    pub last_exit: Option<String>,
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

/// The supervisor's handle on its status file.
pub struct StatusFile {
    path: PathBuf,
    status: Status,
    /// Set after the first failed write, so a full disk is reported once, not per transition.
    warned: bool,
    listener: Option<Listener>,
}

impl std::fmt::Debug for StatusFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusFile")
            .field("path", &self.path)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl StatusFile {
    pub fn new(config: &Config, state_dir: &Path) -> StatusFile {
        // A request left by a `pgwarden stop` that a previous supervisor never read.
        let _ = std::fs::remove_file(state_dir.join(STOP_REQUEST));
        let now = now_ms();
        StatusFile {
            path: state_dir.join(FILE),
            status: Status {
                state: "installing".into(),
                cause: "launch".into(),
                supervisor_pid: std::process::id(),
                postmaster_pid: None,
                started_at_ms: now,
                ready_at_ms: None,
                updated_at_ms: now,
                restarts: 0,
                last_exit: None,
                postgresql_version: String::new(),
                data_dir: config.data_dir.clone(),
                listen_address: config.listen_address,
                port: config.port,
                socket_dir: state_dir.join("socket"),
                user: config.user.clone(),
                database: config.database.clone(),
            },
            warned: false,
            listener: None,
        }
    }

    /// Calls `listener` with the current record now and with every record written from now on.
    pub fn on_write(&mut self, mut listener: impl FnMut(&Status) + Send + 'static) {
        listener(&self.status);
        self.listener = Some(Box::new(listener));
    }

    /// Records a transition and writes the file.
    pub fn transition(&mut self, to: State, cause: &str, restarts: u32) {
        let now = now_ms();
        let status = &mut self.status;
        status.state = state_name(to).into();
        status.cause = cause.into();
        status.restarts = restarts;
        status.updated_at_ms = now;
        status.ready_at_ms = match to {
            State::Ready => Some(now),
            _ => None,
        };
        if matches!(to, State::Stopped) {
            status.postmaster_pid = None;
        }
        self.write();
    }

    /// The binaries and the cluster are known (before the first start).
    pub fn prepared(&mut self, install: &Install, cluster: &Cluster) {
        self.status.postgresql_version = install.version.to_string();
        self.status.data_dir = cluster.data_dir.clone();
        self.status.socket_dir = cluster.socket_dir.clone();
    }

    /// A new postmaster was spawned.
    pub fn postmaster(&mut self, pid: i32) {
        self.status.postmaster_pid = Some(pid);
        self.write();
    }

    /// The postmaster ended (`describe_exit` text).
    pub fn exited(&mut self, how: String) {
        self.status.last_exit = Some(how);
    }

    /// The shutdown mode `pgwarden stop` asked for, if any (read once, then removed).
    pub fn take_stop_request(&self) -> Option<ShutdownMode> {
        let path = self.path.with_file_name(STOP_REQUEST);
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        StopMode::parse(text.trim()).map(StopMode::mode)
    }

    fn write(&mut self) {
        if let Some(listener) = &mut self.listener {
            listener(&self.status);
        }
        if let Err(e) = write_atomically(&self.path, &self.status) {
            if !self.warned {
                tracing::warn!("cannot write the status file: {e}");
            }
            self.warned = true;
        }
    }
}

fn write_atomically(path: &Path, status: &Status) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".status.")
        .tempfile_in(dir)
        .io("cannot create a temp file in", dir)?;
    let mut json = serde_json::to_vec_pretty(status).expect("status serialises");
    json.push(b'\n');
    temp.write_all(&json).io("cannot write", temp.path())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = temp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    temp.persist(path)
        .map_err(|e| e.error)
        .io("cannot rename the status file into", path)?;
    Ok(())
}

/// Reads a status file; `None` if it is missing or unreadable.
pub fn read(state_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// How `pgwarden stop` asks the server to shut down (PostgreSQL's shutdown modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StopMode {
    /// Wait for clients to disconnect, then shut down (SIGTERM to postgres).
    Smart,
    /// Roll back open transactions, disconnect clients, shut down cleanly (SIGINT) [default].
    Fast,
    /// Quit at once, without a checkpoint; the next start runs crash recovery (SIGQUIT).
    Immediate,
}

impl StopMode {
    pub fn name(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }

    pub fn mode(self) -> ShutdownMode {
        match self {
            StopMode::Smart => ShutdownMode::Smart,
            StopMode::Fast => ShutdownMode::Fast,
            StopMode::Immediate => ShutdownMode::Immediate,
        }
    }

    pub fn parse(text: &str) -> Option<StopMode> {
        [StopMode::Smart, StopMode::Fast, StopMode::Immediate]
            .into_iter()
            .find(|m| m.name() == text)
    }
}

pub fn state_name(state: State) -> &'static str {
    match state {
        State::Installing => "installing",
        State::Initialising => "initialising",
        State::Starting => "starting",
        State::Ready => "ready",
        State::Restarting => "restarting",
        State::Stopping => "stopping",
        State::Stopped => "stopped",
    }
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
            state: "ready".into(),
            cause: "accepting connections".into(),
            supervisor_pid: 1,
            postmaster_pid: Some(2),
            started_at_ms: 3,
            ready_at_ms: Some(4),
            updated_at_ms: 5,
            restarts: 0,
            last_exit: None,
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
        changed.state = "stopping".into();
        write_atomically(&path, &changed).unwrap();
        assert_eq!(read(dir.path()), Some(changed));
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stop_modes_round_trip() {
        for m in [StopMode::Smart, StopMode::Fast, StopMode::Immediate] {
            assert_eq!(StopMode::parse(m.name()), Some(m));
        }
        assert_eq!(StopMode::parse("bogus"), None);
    }
}
