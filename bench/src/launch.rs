//! Ways to get a server up and down: pgwarden, a raw `postgres` child, `pg_ctl`, the probe.
//!
//! Every server started here has a guard that stops it on drop, so a panicking run leaves
//! nothing behind.

use crate::ctx::Ctx;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use pgwarden::pg::probe::{self, PingStatus};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub const USER: &str = "trader";
pub const PASSWORD: &str = "trader";
const LIMIT: Duration = Duration::from_secs(120);
/// How long a server runs before its stop (row 5) or its kill (row 4) is timed, alike for
/// every variant: both are timed on an idle server, after pgwarden's reconcile (which follows
/// its ready line when the configuration is unchanged) has ended.
pub const SETTLE: Duration = Duration::from_millis(200);

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        })
        .block_on(future)
}

/// pgwarden's in-process probe (what `pg_isready` does), once.
pub fn ping(port: u16) -> PingStatus {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    block_on(probe::ping(addr, USER, USER, Duration::from_secs(1)))
}

/// Probes every `every` until the server accepts connections; returns that moment.
pub fn wait_accepting(port: u16, every: Duration) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        if ping(port) == PingStatus::Accepting {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "port {port}: not accepting after {LIMIT:?}"
        );
        std::thread::sleep(every);
    }
}

/// The postmaster's pid from `postmaster.pid`.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Immediate shutdown of whatever postmaster runs on `data_dir` (guards' last resort).
fn quit_postmaster(data_dir: &Path) {
    if let Some(pid) = postmaster_pid(data_dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill(Pid::from_raw(pid), None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or(Stdio::null(), Stdio::from)
}

/// The pgwarden binary, without the environment that would change what it does (POSTGRES_*,
/// PGWARDEN_*) and without colours.
pub fn pgwarden_command(ctx: &Ctx) -> Command {
    let mut command = Command::new(&ctx.pgwarden);
    command.env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("POSTGRES_") || name.starts_with("PGWARDEN_") {
            command.env_remove(&key);
        }
    }
    command
}

/// A `pgwarden run` process.
pub struct Pgwarden {
    child: Child,
    pub pid: u32,
    pub data_dir: PathBuf,
    ready: Receiver<Instant>,
    pub started: Instant,
}

impl Pgwarden {
    /// `pgwarden run` with the harness's empty config, as the harness's user (root switches).
    pub fn spawn(ctx: &Ctx, install_dir: &Path, data_dir: &Path, port: u16) -> Pgwarden {
        let source = [std::ffi::OsStr::new("--archive"), ctx.archive.as_os_str()];
        Pgwarden::spawn_from(ctx, &ctx.config, &source, install_dir, data_dir, port)
    }

    /// `pgwarden run --config CONFIG SOURCE…` (the source flags, if any, else what the config
    /// file says); its stderr goes to `<data_dir>.pgwarden.log` ([`Pgwarden::log`]).
    pub fn spawn_from(
        ctx: &Ctx,
        config: &Path,
        source: &[&std::ffi::OsStr],
        install_dir: &Path,
        data_dir: &Path,
        port: u16,
    ) -> Pgwarden {
        let log = data_dir.with_extension("pgwarden.log");
        let mut command = pgwarden_command(ctx);
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(source)
            .arg("--install-dir")
            .arg(install_dir)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(&log))
            .process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn pgwarden");
        let stdout = child.stdout.take().expect("piped");
        let (tx, ready) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready: ") {
                    let _ = tx.send(Instant::now());
                }
            }
        });
        Pgwarden {
            pid: child.id(),
            child,
            data_dir: data_dir.to_path_buf(),
            ready,
            started,
        }
    }

    /// When pgwarden printed its `ready:` line.
    pub fn wait_ready(&mut self) -> Instant {
        match self.ready.recv_timeout(LIMIT) {
            Ok(at) => at,
            Err(_) => panic!("pgwarden did not get ready; its log:\n{}", self.log()),
        }
    }

    /// What pgwarden wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("pgwarden.log")).unwrap_or_default()
    }

    /// SIGTERM, then the time until pgwarden has exited.
    pub fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let status = self.child.wait().expect("wait for pgwarden");
        let took = t0.elapsed();
        assert!(status.success(), "pgwarden exited with {status}");
        took
    }
}

impl Drop for Pgwarden {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = self.child.wait();
            quit_postmaster(&self.data_dir);
        }
    }
}

/// `initdb` with pgwarden's settings (user, scram for host and local, UTF8, C.UTF-8), no more.
pub fn initdb(ctx: &Ctx, bin: &Path, data_dir: &Path) {
    let pwfile = data_dir.with_extension("pw");
    std::fs::write(&pwfile, PASSWORD).expect("password file");
    if ctx.run_as.switch {
        let _ = nix::unistd::chown(&pwfile, Some(ctx.run_as.uid), Some(ctx.run_as.gid));
    }
    let mut command = Command::new(bin.join("initdb"));
    command
        .arg("-D")
        .arg(data_dir)
        .arg(format!("--username={USER}"))
        .arg("--pwfile")
        .arg(&pwfile)
        .args([
            "--encoding=UTF8",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--locale=C.UTF-8",
            "--no-instructions",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir("/");
    ctx.as_user(&mut command);
    let output = command.output().expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `postgres` child of the harness (the floor: no supervisor in between).
pub struct Postgres {
    child: Option<Child>,
    pub data_dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    settings: Vec<String>,
}

fn server_options(data_dir: &Path, port: u16) -> Vec<String> {
    let sockets = data_dir.parent().expect("parent").display().to_string();
    vec![
        "-p".into(),
        port.to_string(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        format!("unix_socket_directories={sockets}"),
    ]
}

impl Postgres {
    pub fn spawn(ctx: &Ctx, bin: &Path, data_dir: &Path, port: u16) -> Postgres {
        Self::spawn_with(ctx, bin, data_dir, port, &[])
    }

    /// [`Postgres::spawn`] with more `-c name=value` settings.
    pub fn spawn_with(
        ctx: &Ctx,
        bin: &Path,
        data_dir: &Path,
        port: u16,
        settings: &[&str],
    ) -> Postgres {
        let mut server = Postgres {
            child: None,
            data_dir: data_dir.to_path_buf(),
            bin: bin.to_path_buf(),
            port,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        server.respawn(ctx);
        server
    }

    fn respawn(&mut self, ctx: &Ctx) {
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(server_options(&self.data_dir, self.port))
            .args(self.settings.iter().flat_map(|s| ["-c", s]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.data_dir.with_extension("postgres.log")))
            .current_dir("/")
            .process_group(0);
        ctx.as_user(&mut command);
        self.child = Some(command.spawn().expect("spawn postgres"));
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// SIGINT (fast shutdown), then the time until the postmaster has exited.
    pub fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        let _ = kill(self.pid(), Signal::SIGINT);
        let _ = self.child.take().expect("running").wait();
        t0.elapsed()
    }

    /// kill -9 of the postmaster, then (after `delay`) a respawn as soon as its remains are
    /// gone, polled every 1 ms: the time from the kill to accepting connections.
    pub fn crash_and_respawn(&mut self, ctx: &Ctx, delay: Duration) -> Duration {
        let pid = self.pid();
        let t0 = Instant::now();
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.take().expect("running").wait();
        // What any restarter must do first: the old backends hold the shared memory.
        block_on(pgwarden::supervisor::server::clear_remains(
            pid,
            &self.data_dir,
        ));
        std::thread::sleep(delay);
        self.respawn(ctx);
        wait_accepting(self.port, Duration::from_millis(1)) - t0
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let _ = child.wait();
        }
    }
}

/// A server started by `pg_ctl -w start`; stopped (immediately) on drop unless stopped.
pub struct PgCtl {
    bin: PathBuf,
    data_dir: PathBuf,
    running: bool,
}

impl PgCtl {
    fn command(ctx: &Ctx, bin: &Path, data_dir: &Path) -> Command {
        let mut command = Command::new(bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        ctx.as_user(&mut command);
        command
    }

    /// `pg_ctl -w start`; returns the server and how long pg_ctl took.
    pub fn start(ctx: &Ctx, bin: &Path, data_dir: &Path, port: u16) -> (PgCtl, Duration) {
        let mut command = Self::command(ctx, bin, data_dir);
        command
            .args(["-w", "-t", "120", "-l"])
            .arg(data_dir.with_extension("pg_ctl.log"))
            .arg("-o")
            .arg(server_options(data_dir, port).join(" "))
            .arg("start");
        let t0 = Instant::now();
        let status = command.status().expect("run pg_ctl start");
        let took = t0.elapsed();
        assert!(status.success(), "pg_ctl start failed: {status}");
        let server = PgCtl {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            running: true,
        };
        (server, took)
    }

    /// `pg_ctl -m fast -w stop`; how long it took.
    pub fn stop(mut self, ctx: &Ctx) -> Duration {
        let mut command = Self::command(ctx, &self.bin, &self.data_dir);
        command.args(["-m", "fast", "-w", "stop"]);
        let t0 = Instant::now();
        let status = command.status().expect("run pg_ctl stop");
        let took = t0.elapsed();
        assert!(status.success(), "pg_ctl stop failed: {status}");
        self.running = false;
        took
    }
}

impl Drop for PgCtl {
    fn drop(&mut self) {
        if self.running {
            quit_postmaster(&self.data_dir);
        }
    }
}

/// Wall time of a command run to completion (its exit status must be `expect`).
pub fn time_command(command: &mut Command, expect: i32) -> Duration {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let status = command.status().expect("run command");
    let took = t0.elapsed();
    assert_eq!(
        status.code(),
        Some(expect),
        "{command:?} exited with {status}"
    );
    took
}
