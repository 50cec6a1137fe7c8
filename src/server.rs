//! One run of the `postgres` server process: spawn, forward its log, signal it, clean up.
//!
//! postgres is pgwarden's own child (not detached by pg_ctl), so its exit is an event. It runs in
//! its own process group (pgid = postmaster pid), so a terminal's Ctrl-C reaches pgwarden only.
//!
//! After the postmaster dies, what is left of it must be killed and waited for before a restart:
//! a new postmaster refuses to start while old backends still hold the shared memory
//! ("pre-existing shared memory block … is still in use"), and a backend busy in a long query
//! does not notice its postmaster's death. The process group does not find them: every
//! postmaster child calls `setsid()` (`InitPostmasterChild`, src/backend/utils/init/miscinit.c)
//! and leads a group of its own. What they share is their working directory — postgres chdirs
//! into the data directory — so the remains are found as the processes whose cwd is the data
//! directory (see [`clear_remains`]).

use crate::binaries::Install;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::privilege::RunAs;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How many of the server's last log lines are kept to explain a crash.
const LOG_TAIL: usize = 40;

/// The last lines the server wrote.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("log tail lock");
        if lines.len() == LOG_TAIL {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("log tail lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The most telling lines: the last FATAL/PANIC/ERROR line with the LOG line that explains
    /// it (`invalid value for parameter …` before `configuration file … contains errors`) and
    /// any DETAIL/HINT after it; else the last line.
    pub fn explain(&self) -> Option<String> {
        let lines = self.lines();
        let is_error =
            |l: &String| l.contains("FATAL:") || l.contains("PANIC:") || l.contains("ERROR:");
        let Some(at) = lines.iter().rposition(is_error) else {
            return lines.last().cloned();
        };
        // The lines just before it that say why ("could not bind …: Permission denied").
        let telling = |l: &&String| {
            !is_error(l)
                && ["invalid", "could not", "unrecognized", "No space"]
                    .iter()
                    .any(|w| l.contains(w))
        };
        let mut picked: Vec<String> = lines[at.saturating_sub(3)..at]
            .iter()
            .filter(telling)
            .cloned()
            .collect();
        picked.push(lines[at].clone());
        picked.extend(
            lines[at + 1..]
                .iter()
                .take_while(|l| l.contains("DETAIL:") || l.contains("HINT:"))
                .cloned(),
        );
        Some(picked.join("\n"))
    }
}

/// A running (or just exited) postmaster.
#[derive(Debug)]
pub struct Server {
    /// The only handle on the child; `child.id()` is `None` once reaped, so a reused pid is
    /// never signalled.
    child: Child,
    /// The postmaster's pid, which is also its process group id.
    pub pid: Pid,
    pub log: LogTail,
    data_dir: std::path::PathBuf,
    /// The tasks forwarding its stdout and stderr; they end at EOF, once every process that
    /// holds the pipes (the postmaster and its children) is gone.
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn spawn(
        config: &Config,
        install: &Install,
        cluster: &Cluster,
        run_as: &RunAs,
    ) -> Result<Server> {
        let mut command = Command::new(install.bin("postgres"));
        command
            .arg("-D")
            .arg(&cluster.data_dir)
            .arg("-p")
            .arg(config.port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={}", config.listen_address))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                cluster.socket_dir.display()
            ))
            // Logs go to our pipes; a collector would take them away from pgwarden.
            .arg("-c")
            .arg("logging_collector=off");
        if let Some(setting) = recovery_sync(config) {
            command.arg("-c").arg(setting);
        }
        // If pgwarden dies (even by SIGKILL), the postmaster gets SIGINT: a fast, clean shutdown
        // rather than a server running on unsupervised. PDEATHSIG follows the *thread* that
        // forks: this runs on the main thread of pgwarden's current-thread runtime, which lives
        // as long as the process. std applies uid/gid before this hook, so the setting survives
        // the switch to the unprivileged user (a credential change clears it).
        let parent = nix::unistd::getpid();
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)?;
                if nix::unistd::getppid() != parent {
                    // pgwarden died before the hook ran: do not start an orphan.
                    return Err(std::io::Error::other("pgwarden exited"));
                }
                Ok(())
            });
        }
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        run_as.apply(&mut command);
        let mut child = command.spawn().map_err(|e| Error::Server {
            what: format!("cannot start {}: {e}", install.bin("postgres").display()),
        })?;
        let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let log = LogTail::default();
        let forwarders = [
            forward(child.stdout.take(), log.clone()),
            forward(child.stderr.take(), log.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::debug!(pid = pid.as_raw(), "postgres started");
        Ok(Server {
            child,
            pid,
            log,
            data_dir: cluster.data_dir.clone(),
            forwarders,
        })
    }

    /// Waits for the postmaster to exit (reaping it).
    pub async fn wait(&mut self) -> ExitStatus {
        loop {
            match self.child.wait().await {
                Ok(status) => return status,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("cannot wait for postgres: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Sends `signal` to the postmaster only, if it has not been reaped yet.
    pub fn signal(&self, signal: Signal) {
        if self.child.id().is_some() {
            let _ = kill(self.pid, signal);
        }
    }

    /// After the server is gone: waits (briefly) until its last log lines are read, so that
    /// the crash report quotes them and the log file has them.
    pub async fn drain_log(&mut self) {
        for task in self.forwarders.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    /// After the postmaster has exited: kills what is left of it (its group, and every process
    /// working in the data directory) and waits until nothing of it remains, so that the next
    /// server can take the shared memory.
    pub async fn clear_remains(&self) {
        clear_remains(self.pid, &self.data_dir).await;
    }
}

/// After a crash, PostgreSQL first makes the whole data directory durable before recovery:
/// by default one fsync per file (~1000 in a new cluster; most of a crash → ready here,
/// BENCHMARKS.md row 4). `recovery_init_sync_method = syncfs` does it with one syncfs(2) per
/// filesystem instead — the same guarantee where syncfs reports write-back errors, which
/// Linux does since 5.8, so pgwarden chooses it there, unless `[server]` sets it.
fn recovery_sync(config: &Config) -> Option<&'static str> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_string_lossy();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?);
    (version >= (5, 8) && !config.server.contains_key("recovery_init_sync_method"))
        .then_some("recovery_init_sync_method=syncfs")
}

/// A postmaster still running on `data_dir` (e.g. left by a pgwarden that was SIGKILLed):
/// `postmaster.pid` names a live `postgres` process whose data directory is this one.
pub fn survivor(data_dir: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = Pid::from_raw(lines.next()?.trim().parse().ok()?);
    let recorded = Path::new(lines.next()?.trim()).canonicalize().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let alive = is_alive(pid);
    (alive && comm.trim() == "postgres" && Some(recorded) == data_dir.canonicalize().ok())
        .then_some(pid)
}

/// Shuts down a postmaster pgwarden did not start (it cannot `wait` for it): SIGINT, then
/// SIGQUIT after `timeout`, then SIGKILL of its group; returns once its pid is gone for good —
/// postgres itself refuses to start while the old pid exists, even as a zombie.
pub async fn stop_survivor(pid: Pid, data_dir: &Path, timeout: Duration) {
    let _ = kill(pid, Signal::SIGINT);
    for (signal, limit) in [
        (Some(Signal::SIGQUIT), timeout),
        (None, Duration::from_secs(5)),
    ] {
        let deadline = tokio::time::Instant::now() + limit;
        while is_alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !is_alive(pid) {
            break;
        }
        match signal {
            Some(signal) => {
                tracing::warn!(
                    pid = pid.as_raw(),
                    "the old postgres did not stop in time; immediate shutdown"
                );
                let _ = kill(pid, signal);
            }
            None => {
                tracing::warn!(
                    pid = pid.as_raw(),
                    "the old postgres ignored SIGQUIT; killing its process group"
                );
                clear_remains(pid, data_dir).await;
            }
        }
    }
    // A dead postmaster whose parent was init lingers as a zombie until init reaps it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clear_remains(pid, data_dir).await;
}

/// Alive and not a zombie.
fn is_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs process group `pgid` and every process working in `data_dir`, then waits (up to
/// 10 s) until none of them is alive. Zombies do not count: orphans are reaped by init, which may
/// take its time (seen here: a PID 1 that reaps every ~2 s), and a zombie holds no shared memory.
pub async fn clear_remains(pgid: Pid, data_dir: &Path) {
    let _ = killpg(pgid, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let remains = remains(pgid, data_dir);
        if remains.is_empty() {
            return;
        }
        for pid in &remains {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                ?remains,
                "processes of the old server are still there after 10 s"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Live (non-zombie) processes in group `pgid` or with `data_dir` as working directory.
pub fn remains(pgid: Pid, data_dir: &Path) -> Vec<Pid> {
    let data_dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            if fields.first() == Some(&"Z") {
                return None;
            }
            let in_group = fields.get(2) == Some(&pgid.as_raw().to_string().as_str());
            let in_data_dir =
                || std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir);
            (in_group || in_data_dir()).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Re-emits each line the server writes as a tracing event with target `postgres`.
fn forward(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    tail: LogTail,
) -> Option<tokio::task::JoinHandle<()>> {
    let pipe = pipe?;
    Some(tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = crate::redact::password_literals(&line).into_owned();
            if line.contains("PANIC:") || line.contains("FATAL:") {
                tracing::error!(target: "postgres", "{line}");
            } else if line.contains("ERROR:") || line.contains("WARNING:") {
                tracing::warn!(target: "postgres", "{line}");
            } else {
                tracing::info!(target: "postgres", "{line}");
            }
            tail.push(line);
        }
    }))
}

/// "exit code 1" / "signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(s) => format!("signal {signal} ({})", s.as_str()),
            Err(_) => format!("signal {signal}"),
        }
    } else {
        status.to_string()
    }
}
