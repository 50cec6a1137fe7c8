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
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use crate::postmaster::escalation::{self, Target};
use crate::postmaster::pid_file;
use crate::postmaster::server_log::LogTail;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to become ready (an idle one: [`Purpose::start_timeout`]) or
/// to stop.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(2);

/// What a temporary server is for: its name in errors, and how it competes for the CPU.
#[derive(Clone, Copy)]
pub struct Purpose {
    pub name: &'static str,
    /// Beside a running server, for minutes, nobody waiting on each step (backup verify):
    /// a session of its own in `SCHED_IDLE` ([`crate::os::background::idle_session`]).
    /// Otherwise the server has its own process group and the priority of the thread that
    /// starts it (already lowered for the background template fill).
    pub idle: bool,
}

impl Purpose {
    /// An idle server on a busy machine gets almost no CPU, for as long as the machine is
    /// busy, and a verification's replay (with `--to`, through a WAL archive) is as long as its
    /// WAL: it is waited for as long as it lives, up to a day, not failed after two minutes.
    fn start_timeout(self) -> Duration {
        if self.idle {
            Duration::from_secs(24 * 3600)
        } else {
            START_TIMEOUT
        }
    }

    pub const FIRST_LAUNCH: Purpose = Purpose {
        name: "first launch",
        idle: false,
    };
    pub const VERIFICATION: Purpose = Purpose {
        name: "verification",
        idle: true,
    };
}

/// A running temporary server; stopped (fast shutdown) by [`TempServer::stop`], killed on drop.
pub struct TempServer {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    log: LogTail,
    /// Told the postmaster's pid when it starts and when it is reaped.
    cancel: Cancel,
    /// What the server is for, in its errors: "first launch", "verification".
    purpose: &'static str,
    start_timeout: Duration,
}

impl TempServer {
    pub fn start(
        config: &Config,
        install: &Install,
        run_as: &RunAs,
        data_dir: &Path,
        socket_dir: &Path,
        cancel: &Cancel,
    ) -> Result<TempServer> {
        Self::start_for(
            Purpose::FIRST_LAUNCH,
            config,
            install,
            run_as,
            data_dir,
            socket_dir,
            cancel,
        )
    }

    /// [`TempServer::start`] for `purpose`.
    pub fn start_for(
        purpose: Purpose,
        config: &Config,
        install: &Install,
        run_as: &RunAs,
        data_dir: &Path,
        socket_dir: &Path,
        cancel: &Cancel,
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
            .stderr(Stdio::piped());
        if purpose.idle {
            crate::os::background::idle_session(&mut command);
        } else {
            command.process_group(0);
        }
        run_as.apply_std(&mut command);
        // A cancellable step's server (the background template fill) is killed if the thread
        // that starts it ends (pgwarden SIGKILLed, say): that cluster is thrown away, and an
        // orphan would run on in a directory nobody looks at. That thread waits for this
        // server until it stops; std switches uid/gid before this hook, so the setting
        // survives. A first launch's orphan is found and shut down cleanly by the next launch
        // instead (commands::run): a SIGKILLed one would leave its socket's lock file behind,
        // which refuses the next temporary server while the dead pid is not yet reaped.
        if cancel.can_be_cancelled() {
            let parent = nix::unistd::getpid();
            // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork
            // and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                        .map_err(std::io::Error::from)?;
                    if nix::unistd::getppid() != parent {
                        return Err(std::io::Error::other("pgwarden exited"));
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| Error::Cluster {
            what: format!(
                "cannot start a temporary server ({}): {e}",
                install.bin("postgres").display()
            ),
        })?;
        cancel.started(child.id());
        let log = LogTail::default();
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let line = crate::pg::redact::password_literals(&line).into_owned();
                tracing::debug!(target: "postgres", "{line}");
                sink.push(line);
            }
        });
        let mut server = TempServer {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            port: config.port,
            log,
            cancel: cancel.clone(),
            purpose: purpose.name,
            start_timeout: purpose.start_timeout(),
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
        let deadline = Instant::now() + self.start_timeout;
        let pid = Pid::from_raw(self.pid().expect("running") as i32);
        loop {
            if pid_file::ready(&self.data_dir, pid) {
                return Ok(());
            }
            self.fail_if_exited()?;
            if Instant::now() >= deadline {
                return Err(Error::Cluster {
                    what: format!(
                        "the temporary server for {} was not ready after {}s: {}",
                        self.purpose,
                        self.start_timeout.as_secs(),
                        self.last_error()
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error naming the server's own last error when it has exited (it is then forgotten).
    fn fail_if_exited(&mut self) -> Result<()> {
        let child = self.child.as_mut().expect("running");
        if let Ok(Some(status)) = child.try_wait() {
            self.cancel.ended(child.id());
            self.child = None;
            return Err(Error::Cluster {
                what: format!(
                    "the temporary server for {} exited ({status}): {}",
                    self.purpose,
                    self.last_error()
                ),
            });
        }
        Ok(())
    }

    /// Waits until the server lets `user` into `database`: a server in archive recovery with
    /// `hot_standby` off counts as ready in its pid file before it does, and refuses connections
    /// (57P03) until the recovery has ended. Its exit meanwhile (a recovery that failed) is an
    /// error with the server's own last error.
    pub fn wait_accepting(&mut self, user: &str, database: &str) -> Result<()> {
        let deadline = Instant::now() + self.start_timeout;
        loop {
            self.fail_if_exited()?;
            match self.connect(user, "", database) {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_db_error().is_some_and(|d| {
                        *d.code() == postgres::error::SqlState::CANNOT_CONNECT_NOW
                    }) => {}
                // No answer (the socket gone with a server shutting down after a failed
                // recovery): the next turn sees its exit.
                Err(e) if e.as_db_error().is_none() => {}
                Err(e) => {
                    return Err(Error::Cluster {
                        what: format!(
                            "cannot connect to the temporary server for {} as {user}: {e}",
                            self.purpose
                        ),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Cluster {
                    what: format!(
                        "the temporary server for {} did not accept connections after {}s: {}",
                        self.purpose,
                        self.start_timeout.as_secs(),
                        self.last_error()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's own last error ([`LogTail::explain`], else its last FATAL or PANIC line,
    /// else its last line).
    pub fn last_error(&self) -> String {
        let pid = self.pid().map_or(0, |p| p as i32);
        let lines = self.log.lines();
        self.log
            .explain(pid)
            // A server that shut itself down ends with "database system is shut down": the
            // reason is its last FATAL or PANIC line before that — not one of the FATALs a
            // refused connection logs ("the database system is in recovery mode", … starting
            // up, … shutting down, … not yet accepting connections).
            .or_else(|| {
                lines
                    .iter()
                    .rev()
                    .find(|l| {
                        (l.contains("FATAL:") || l.contains("PANIC:"))
                            && !l.contains("the database system is ")
                    })
                    .cloned()
            })
            .or_else(|| lines.last().cloned())
            .unwrap_or_else(|| "(no output)".to_string())
    }

    /// A connection over the Unix socket.
    pub fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> std::result::Result<postgres::Client, postgres::Error> {
        let mut config = self.client_config(user, database);
        if !password.is_empty() {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    }

    /// How to reach the server as `user` in `database` over its private socket (for a caller
    /// that opens several connections from other threads).
    pub fn client_config(&self, user: &str, database: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(database)
            // `pgwarden (first launch)`, `pgwarden (verification)`: what pg_stat_activity shows.
            .application_name(&format!("pgwarden ({})", self.purpose))
            .connect_timeout(Duration::from_secs(30));
        config
    }

    /// Fast shutdown, waiting for the server to exit ([`crate::postmaster::escalation`]: SIGINT, then
    /// SIGQUIT, then SIGKILL of the group).
    pub fn stop(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let mut target = Temp(child);
        let ladder = escalation::shutdown(Signal::SIGINT, STOP_TIMEOUT);
        let escalated = escalation::escalate_blocking(&mut target, &ladder);
        if escalated.status.is_some() {
            self.cancel.ended(target.0.id());
        }
        match escalated.status {
            Some(status) if status.success() && escalated.rungs == 1 => Ok(()),
            _ if escalated.rungs > 1 => Err(Error::Cluster {
                what: format!(
                    "the temporary server for {} did not stop in time",
                    self.purpose
                ),
            }),
            status => Err(Error::Cluster {
                what: format!(
                    "the temporary server for {} failed to stop cleanly ({}): {}",
                    self.purpose,
                    status.map_or_else(|| "unknown status".into(), |s| s.to_string()),
                    self.last_error()
                ),
            }),
        }
    }
}

/// The temporary server's process, for [`escalation::escalate`].
struct Temp(Child);

impl Target for Temp {
    fn signal(&mut self, signal: Signal) {
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0.id() as i32), signal);
        }
    }

    async fn exited(&mut self) -> Option<ExitStatus> {
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => tokio::time::sleep(POLL).await,
                Err(_) => return None,
            }
        }
    }

    async fn kill_all(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        // Not stopped: a failed first launch. Its cluster is discarded, so no checkpoint.
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            self.cancel.ended(child.id());
        }
    }
}
