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
use crate::os::privilege::RunAs;
use crate::postmaster::escalation::{self, Rung, Target};
use crate::postmaster::pid_file::PidFile;
use crate::postmaster::server_log::{self, LogTail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, oneshot};

/// The supervisor's handle on a running postmaster. The [`Child`] itself belongs to a keeper
/// task (its one owner): it reaps the postmaster, signals it only while it is not reaped, runs
/// an escalation when asked, and once the postmaster is gone clears its remains, collects its
/// last log lines and reports an [`Exit`].
#[derive(Debug)]
pub struct Server {
    /// The postmaster's pid, which is also its process group id.
    pub pid: Pid,
    orders: mpsc::UnboundedSender<Order>,
    hurry: Arc<Notify>,
}

#[derive(Debug)]
enum Order {
    Signal(Signal),
    Escalate(Vec<Rung>),
}

/// How a postmaster ended, with what is needed to explain it.
#[derive(Debug)]
pub struct Exit {
    pub pid: Pid,
    pub status: ExitStatus,
    /// pgwarden sent it a signal that stops a server (not a SIGHUP).
    pub signalled_by_us: bool,
    /// The kernel's OOM killer killed a process of this cgroup while it ran.
    pub oom_killed: bool,
    /// The server's own last words ([`LogTail::explain`]).
    pub explanation: Option<String>,
    /// When it ended (Unix epoch milliseconds).
    pub at_ms: u64,
}

impl Server {
    /// Spawns postgres and its keeper; the receiver gets the [`Exit`].
    pub fn spawn(
        config: &Config,
        install: &Install,
        cluster: &Cluster,
        run_as: &RunAs,
    ) -> Result<(Server, oneshot::Receiver<Exit>)> {
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
        if !config.server.contains_key("log_line_prefix") {
            // Tells the postmaster's own lines from the clients' (crate::postmaster::server_log).
            command
                .arg("-c")
                .arg(format!("log_line_prefix={}", server_log::LINE_PREFIX));
        }
        if let Some(setting) = recovery_sync(config) {
            command.arg("-c").arg(setting);
        }
        // If pgwarden dies (even by SIGKILL), the postmaster gets SIGINT: a fast, clean shutdown
        // rather than a server running on unsupervised. PDEATHSIG follows the *thread* that
        // forks: this runs on the main thread of pgwarden's current-thread runtime, which lives
        // as long as the process. std applies uid/gid before this hook, so the setting survives
        // the switch to the unprivileged user (a credential change clears it).
        let parent = nix::unistd::getpid();
        // The open-file limit pgwarden started with, not the one it raised for itself.
        let fd_limit = crate::os::fd_limit::for_children();
        // SAFETY: prctl, getppid and setrlimit are async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some((soft, hard)) = fd_limit {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
                    )
                    .map_err(std::io::Error::from)?;
                }
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
        // The OOM kills accounted for so far: a backend's is the forwarder's to name, so that
        // only a later one can be blamed for the postmaster's SIGKILL.
        let oom_seen: OomSeen = Arc::new(std::sync::Mutex::new(crate::postmaster::oom::kills()));
        let mut child = command.spawn().map_err(|e| Error::Server {
            what: format!("cannot start {}: {e}", install.bin("postgres").display()),
        })?;
        let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
        let log = LogTail::default();
        let forwarders: Vec<_> = [
            forward(child.stdout.take(), log.clone(), oom_seen.clone()),
            forward(child.stderr.take(), log.clone(), oom_seen.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::debug!(pid = pid.as_raw(), "postgres started");
        let (orders, orders_rx) = mpsc::unbounded_channel();
        let hurry = Arc::new(Notify::new());
        let (exit_tx, exit_rx) = oneshot::channel();
        let keeper = Keeper {
            child,
            pid,
            data_dir: cluster.data_dir.clone(),
            signalled: false,
        };
        tokio::spawn(keeper.run(orders_rx, hurry.clone(), forwarders, log, oom_seen, exit_tx));
        Ok((Server { pid, orders, hurry }, exit_rx))
    }

    /// Sends `signal` to the postmaster only, if it has not been reaped yet.
    pub fn signal(&self, signal: Signal) {
        let _ = self.orders.send(Order::Signal(signal));
    }

    /// Stops the postmaster by climbing `ladder` ([`escalation::escalate`]).
    pub fn escalate(&self, ladder: Vec<Rung>) {
        let _ = self.orders.send(Order::Escalate(ladder));
    }

    /// Cuts the current wait of an escalation short (a second stop request).
    pub fn hurry(&self) {
        self.hurry.notify_one();
    }
}

/// The one owner of the postmaster's [`Child`].
struct Keeper {
    /// `child.id()` is `None` once reaped, so a reused pid is never signalled.
    child: Child,
    pid: Pid,
    data_dir: PathBuf,
    /// A stopping signal was sent by pgwarden.
    signalled: bool,
}

impl Keeper {
    async fn run(
        mut self,
        mut orders: mpsc::UnboundedReceiver<Order>,
        hurry: Arc<Notify>,
        forwarders: Vec<tokio::task::JoinHandle<()>>,
        log: LogTail,
        oom_seen: OomSeen,
        exit: oneshot::Sender<Exit>,
    ) {
        let mut open = true;
        let status = loop {
            tokio::select! {
                status = wait(&mut self.child) => break status,
                order = orders.recv(), if open => match order {
                    None => open = false,
                    Some(Order::Signal(signal)) => self.signal(signal),
                    Some(Order::Escalate(ladder)) => {
                        let escalated = escalation::escalate(&mut self, &ladder, Some(&hurry)).await;
                        break escalated.status.expect("the keeper's target is its child");
                    }
                },
            }
        };
        // A postmaster that exited 0 waited for all its children first (it exits last): nothing
        // remains, and the /proc scan would only delay the next step.
        if !status.success() {
            clear_remains(self.pid, &self.data_dir).await;
        }
        // Its last log lines, so that the report quotes them and the log file has them.
        for task in forwarders {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        // A postmaster that exited 0 shut down as asked: no reading of the cgroup's files on
        // the way out of every stop.
        let oom_killed = !status.success()
            && oom_seen
                .lock()
                .map(|mut seen| grew(&mut seen))
                .unwrap_or(false);
        let _ = exit.send(Exit {
            pid: self.pid,
            status,
            signalled_by_us: self.signalled,
            oom_killed,
            explanation: log.explain(self.pid.as_raw()),
            at_ms: crate::instance::status::now_ms(),
        });
    }
}

impl Target for Keeper {
    fn signal(&mut self, signal: Signal) {
        if signal != Signal::SIGHUP && signal != Signal::SIGCONT {
            self.signalled = true;
        }
        if self.child.id().is_some() {
            let _ = kill(self.pid, signal);
        }
    }

    async fn exited(&mut self) -> Option<ExitStatus> {
        Some(wait(&mut self.child).await)
    }

    async fn kill_all(&mut self) {
        self.signalled = true;
        clear_remains(self.pid, &self.data_dir).await;
    }
}

/// Waits for the child to exit (reaping it).
async fn wait(child: &mut Child) -> ExitStatus {
    loop {
        match child.wait().await {
            Ok(status) => return status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("cannot wait for postgres: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
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
    let file = PidFile::read(data_dir)?;
    let recorded = file.data_dir?.canonicalize().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", file.pid)).ok()?;
    (is_alive(file.pid)
        && comm.trim() == "postgres"
        && Some(recorded) == data_dir.canonicalize().ok())
    .then_some(file.pid)
}

/// A postmaster pgwarden did not start: it cannot be `wait`ed for, only watched in /proc.
struct Stray<'a> {
    pid: Pid,
    data_dir: &'a Path,
}

impl Target for Stray<'_> {
    fn signal(&mut self, signal: Signal) {
        let _ = kill(self.pid, signal);
    }

    async fn exited(&mut self) -> Option<ExitStatus> {
        while is_alive(self.pid) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    async fn kill_all(&mut self) {
        clear_remains(self.pid, self.data_dir).await;
    }
}

/// Shuts down a postmaster pgwarden did not start ([`crate::postmaster::escalation`]: SIGINT for `timeout`,
/// SIGQUIT, SIGKILL of its group); returns once its pid is gone for good — postgres itself
/// refuses to start while the old pid exists, even as a zombie.
pub async fn stop_survivor(pid: Pid, data_dir: &Path, timeout: Duration) {
    let mut stray = Stray { pid, data_dir };
    escalation::escalate(
        &mut stray,
        &escalation::shutdown(Signal::SIGINT, timeout),
        None,
    )
    .await;
    // A dead postmaster whose parent was init lingers as a zombie until init reaps it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clear_remains(pid, data_dir).await;
}

/// Alive and not a zombie.
pub fn is_alive(pid: Pid) -> bool {
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
/// The cgroup's OOM kill count already accounted for (`None`: it cannot be read).
type OomSeen = Arc<std::sync::Mutex<Option<u64>>>;

/// Whether the OOM kill count grew since `seen`, which it then becomes.
fn grew(seen: &mut Option<u64>) -> bool {
    let now = crate::postmaster::oom::kills();
    let grew = matches!((*seen, now), (Some(before), Some(now)) if now > before);
    *seen = now;
    grew
}

fn forward(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    tail: LogTail,
    oom_seen: OomSeen,
) -> Option<tokio::task::JoinHandle<()>> {
    let pipe = pipe?;
    Some(tokio::spawn(async move {
        use crate::log_lines::{Loudness, loudness, process_killed};
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = crate::pg::redact::password_literals(&line).into_owned();
            let shown = crate::log_lines::without_timestamp(&line);
            // A server process SIGKILLed while the cgroup's OOM count grew: say who did it.
            let oom = process_killed(&line) == Some(Signal::SIGKILL as i32)
                && oom_seen
                    .lock()
                    .map(|mut seen| grew(&mut seen))
                    .unwrap_or(false);
            match (loudness(&line), oom) {
                (_, true) => tracing::warn!(
                    target: "postgres",
                    "{shown} (the kernel's OOM killer, memory limit: {})",
                    crate::postmaster::oom::memory_limit()
                ),
                (Loudness::Error, _) => tracing::error!(target: "postgres", "{shown}"),
                (Loudness::Warn, _) => tracing::warn!(target: "postgres", "{shown}"),
                (Loudness::Info, _) => tracing::info!(target: "postgres", "{shown}"),
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
