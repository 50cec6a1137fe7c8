//! A temporary server on a cluster being created, reachable on its Unix socket only
//! (`listen_addresses=''`), as the postgres image runs one for `CREATE DATABASE` and the init
//! scripts. Blocking code: it runs inside first launch, on tokio's blocking pool.
//!
//! Measured here (loaded 2-core machine): a temporary server starts in ~40-60 ms and stops
//! (fast shutdown) in ~75 ms; `CREATE DATABASE` through it takes ~250 ms, against ~1.3 s for
//! the same statement in `postgres --single`, which first launch used before. So first launch
//! always uses this server, scripts or not.

use crate::binaries::Install;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::privilege::RunAs;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the server may take to become ready or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(2);

/// A running temporary server; stopped (fast shutdown) by [`TempServer::stop`], killed on drop.
pub struct TempServer {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl TempServer {
    pub fn start(
        config: &Config,
        install: &Install,
        run_as: &RunAs,
        data_dir: &Path,
        socket_dir: &Path,
    ) -> Result<TempServer> {
        let started = Instant::now();
        let mut command = Command::new(install.bin("postgres"));
        command
            .arg("-D")
            .arg(data_dir)
            .arg("-p")
            .arg(config.port.to_string())
            .args(["-c", "listen_addresses=", "-c", "logging_collector=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()));
        for (key, value) in &config.server {
            command.arg("-c").arg(format!("{key}={value}"));
        }
        // Durability comes from the one syncfs() before the staging directory is renamed into
        // place (cluster::flush_to_disk), as for initdb --no-sync.
        command.args(["-c", "fsync=off"]);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        run_as.apply_std(&mut command);
        let mut child = command.spawn().map_err(|e| Error::Cluster {
            what: format!(
                "cannot start a temporary server ({}): {e}",
                install.bin("postgres").display()
            ),
        })?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let line = crate::redact::password_literals(&line).into_owned();
                tracing::debug!(target: "postgres", "{line}");
                let mut lines = sink.lock().expect("log lock");
                if lines.len() == 40 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let mut server = TempServer {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            port: config.port,
            log,
        };
        server.wait_ready()?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "temporary server ready"
        );
        Ok(server)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = self.pid().expect("running").to_string();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.first().map(|l| l.trim()) == Some(pid.as_str())
                    && lines.get(7).is_some_and(|l| l.trim() == "ready")
                {
                    return Ok(());
                }
            }
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(Error::Cluster {
                    what: format!(
                        "the temporary server for first launch exited ({status}): {}",
                        self.last_error()
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Cluster {
                    what: format!(
                        "the temporary server for first launch was not ready after {}s: {}",
                        START_TIMEOUT.as_secs(),
                        self.last_error()
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The server's last error line (or its last line).
    pub fn last_error(&self) -> String {
        let lines = self.log.lock().expect("log lock");
        lines
            .iter()
            .rev()
            .find(|l| l.contains("FATAL:") || l.contains("ERROR:") || l.contains("PANIC:"))
            .or(lines.back())
            .cloned()
            .unwrap_or_else(|| "(no output)".to_string())
    }

    /// A connection over the Unix socket.
    pub fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> std::result::Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(database)
            .application_name("pgwarden-init")
            .connect_timeout(Duration::from_secs(30));
        if !password.is_empty() {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    }

    /// Fast shutdown, waiting for the server to exit.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pgid = Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pgid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(Error::Cluster {
                        what: format!(
                            "the temporary server for first launch failed to stop cleanly ({status}): {}",
                            self.last_error()
                        ),
                    });
                }
                _ if Instant::now() >= deadline => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(Error::Cluster {
                        what: "the temporary server for first launch did not stop in time".into(),
                    });
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        // Not stopped: a failed first launch. Its cluster is discarded, so no checkpoint.
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
