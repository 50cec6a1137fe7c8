//! The supervisor as one event loop (issue 14), tried the way it failed: real kills of the
//! postmaster and of pgwarden, real SIGHUPs at every phase under a NOTIFY_SOCKET listener, a
//! bad setting with a client failing to log in meanwhile, a stop during a reconcile that
//! cannot finish.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("pgwarden.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn show(port: u16, setting: &str) -> String {
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .unwrap()
        .get(0)
}

fn status_json(data_dir: &Path) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["status", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"))
}

/// Commits sequential ids and records the acknowledged ones, reconnecting after errors.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let mut client = connect(port, "trader", "trader", "trader").unwrap();
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)")
            .unwrap();
        let (stop, acked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(vec![])),
        );
        let (s, a) = (stop.clone(), acked.clone());
        let thread = thread::spawn(move || {
            let (mut id, mut client) = (1i64, None);
            while !s.load(Ordering::Relaxed) {
                let Some(c) = client.as_mut() else {
                    client = connect(port, "trader", "trader", "trader").ok();
                    if client.is_none() {
                        thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                };
                match c.execute("INSERT INTO acked VALUES ($1)", &[&id]) {
                    Ok(_) => a.lock().unwrap().push(id),
                    Err(_) => client = None,
                }
                id += 1;
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

#[test]
fn eight_kills_of_a_ready_postmaster_never_make_pgwarden_give_up() {
    let dir = test_dir();
    let port = free_port();
    // The default restart policy (max_failures = 5 within 60 s).
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    let writer = Writer::start(port);
    let started = Instant::now();
    for round in 1..=8 {
        let before = writer.acked();
        wait_until("commits", START, || writer.acked() > before + 5);
        kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
        wait_until("ready again", START, || {
            pgwarden.stderr_text().matches("ready again").count() >= round
        });
    }
    eprintln!("8 kills and recoveries in {:?}", started.elapsed());
    let before = writer.acked();
    wait_until("commits after the last kill", START, || {
        writer.acked() > before + 5
    });
    let acked = writer.finish();
    assert!(!pgwarden.has_exited(), "{}", pgwarden.stderr_text());
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let present: std::collections::HashSet<i64> = client
        .query("SELECT id FROM acked", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged rows lost", lost.len());
    let status = status_json(&data_dir);
    assert_eq!(status["restarts"], 8, "{status}");
    assert_eq!(status["failed_starts"], 0, "{status}");
    assert_eq!(status["last_exit"]["from_outside"], true, "{status}");
    assert!(!pgwarden.stderr_text().contains("giving up"));
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_sigkill_from_outside_is_named_as_such_and_no_log_line_is_blamed() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
    let line = pgwarden.wait_for_stderr("postgres exited unexpectedly", START);
    assert!(
        line.contains("signal 9 (SIGKILL), sent from outside pgwarden"),
        "{line}"
    );
    assert!(!line.contains("server said"), "{line}");
    assert!(!line.contains("ready to accept connections"), "{line}");
    pgwarden.wait_for_stderr("ready again", START);
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["status", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("last exit       signal 9 (SIGKILL), sent from outside pgwarden"),
        "{text}"
    );
    assert!(
        text.contains("restarts        1 (failed starts 0)"),
        "{text}"
    );
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_bad_setting_gives_up_within_seconds_quoting_only_the_servers_own_lines() {
    let dir = test_dir();
    let port = free_port();
    // An existing cluster, so that the time measured is the failed starts', not initdb's.
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    stop(pgwarden, Signal::SIGTERM);
    let config = write_config(dir.path(), "[server]\nshared_buffers = \"lots\"\n");
    // A client failing to log in all the while.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let client = thread::spawn(move || {
        while !d.load(Ordering::Relaxed) {
            let _ = connect(port, "trader", "wrong", "trader");
            thread::sleep(Duration::from_millis(5));
        }
    });
    let started = Instant::now();
    let mut pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    let status = pgwarden.wait_exit(START);
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(!status.success());
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
    let stderr = pgwarden.stderr_text();
    let error = stderr.split("error: ").last().unwrap();
    assert!(error.contains("giving up"), "{error}");
    let said = error
        .split("server said: ")
        .nth(1)
        .and_then(|s| s.split("\nhelp:").next())
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        said.contains("invalid value for parameter \"shared_buffers\""),
        "{said}"
    );
    for line in said.lines() {
        assert!(
            line.contains("] postmaster "),
            "not the postmaster's: {line}"
        );
    }
    assert!(!said.contains("password authentication"), "{said}");
    let status = status_json(&dir.path().join("data"));
    // Not running any more: the record is read only while a supervisor runs.
    assert_eq!(status["running"], false, "{status}");
}

/// Collects the datagrams sent to an abstract NOTIFY_SOCKET, each with when it arrived.
struct NotifyListener {
    name: String,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NotifyListener {
    fn start(port: u16) -> NotifyListener {
        let name = format!("pgwarden-test-loop-{}-{port}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (m, d) = (messages.clone(), done.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !d.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    // READY=1 must mean "accepting": check it the moment it arrives.
                    if text.contains("READY=1")
                        && !text.contains("reloaded")
                        && let Err(e) = connect(port, "trader", "trader", "trader")
                    {
                        panic!(
                            "READY=1 while the server does not accept connections: {e:?} ({text})"
                        );
                    }
                    m.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifyListener {
            name,
            messages,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until READY=1 arrived and was checked (before anything stops the server).
    fn wait_ready_checked(&self) {
        wait_until("READY=1 to be checked", START, || {
            self.count("READY=1") >= 1
        });
    }

    fn address(&self) -> String {
        format!("@{}", self.name)
    }

    fn count(&self, needle: &str) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .count()
    }

    fn finish(mut self) -> Vec<String> {
        self.done.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the listener saw READY=1 before the server accepted");
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
}

/// READY=1 once (plus one after each RELOADING=1), never before the first start accepted.
fn assert_ready_once(messages: &[String]) {
    let ready: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.contains("READY=1") && !m.contains("RELOADING"))
        .map(|(i, _)| i)
        .collect();
    let reloads = messages
        .iter()
        .filter(|m| m.contains("RELOADING=1"))
        .count();
    assert_eq!(ready.len(), 1 + reloads, "{messages:#?}");
    for (i, m) in messages.iter().enumerate() {
        if m.contains("ready (reloaded)") {
            assert!(
                messages[..i].iter().any(|m| m.contains("RELOADING=1")),
                "{messages:#?}"
            );
        }
    }
}

#[test]
fn a_hup_at_launch_and_during_initdb_is_applied_and_never_sends_an_early_ready() {
    for phase in ["at launch", "during initdb"] {
        let dir = test_dir();
        let port = free_port();
        let listener = NotifyListener::start(port);
        let notify = listener.address();
        let config = write_config(dir.path(), "[server]\nwork_mem = \"4MB\"\n");
        let pgwarden = start_with(
            dir.path(),
            port,
            &["--config", &config],
            &[("NOTIFY_SOCKET", &notify)],
        );
        if phase == "during initdb" {
            pgwarden.wait_for_stderr("first launch: initialising", FIRST_LAUNCH);
        } else {
            pgwarden.wait_for_stderr("pgwarden starting", START);
        }
        write_config(dir.path(), "[server]\nwork_mem = \"8MB\"\n");
        pgwarden.signal(Signal::SIGHUP);
        pgwarden.wait_ready(FIRST_LAUNCH);
        listener.wait_ready_checked();
        wait_until("work_mem to follow the reload", START, || {
            show(port, "work_mem") == "8MB"
        });
        let stderr = pgwarden.stderr_text();
        assert!(!stderr.contains("failed start"), "{phase}: {stderr}");
        assert!(!stderr.contains("restart"), "{phase}: {stderr}");
        stop(pgwarden, Signal::SIGTERM);
        assert_ready_once(&listener.finish());
    }
}

#[test]
fn a_hup_during_the_backoff_is_applied_at_the_restart() {
    let dir = test_dir();
    let port = free_port();
    let listener = NotifyListener::start(port);
    let notify = listener.address();
    let policy = "[supervisor]\nbackoff_initial = \"3s\"\n";
    let config = write_config(
        dir.path(),
        &format!("{policy}[server]\nwork_mem = \"4MB\"\n"),
    );
    let pgwarden = start_with(
        dir.path(),
        port,
        &["--config", &config],
        &[("NOTIFY_SOCKET", &notify)],
    );
    pgwarden.wait_ready(FIRST_LAUNCH);
    listener.wait_ready_checked();
    let data_dir = dir.path().join("data");
    // The first crash restarts at once; the second waits out the 3 s backoff.
    kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
    pgwarden.wait_for_stderr("ready again", START);
    kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
    wait_until("the second restart's backoff", START, || {
        pgwarden
            .stderr_text()
            .matches("waiting before the restart")
            .count()
            >= 2
    });
    write_config(
        dir.path(),
        &format!("{policy}[server]\nwork_mem = \"8MB\"\n"),
    );
    pgwarden.signal(Signal::SIGHUP);
    pgwarden.wait_for_stderr("reload queued", START);
    wait_until("ready again after the backoff", START, || {
        pgwarden.stderr_text().matches("ready again").count() >= 2
    });
    assert_eq!(show(port, "work_mem"), "8MB");
    assert_eq!(
        listener.count("RELOADING=1"),
        0,
        "no reload of a server that was down"
    );
    stop(pgwarden, Signal::SIGTERM);
    assert_ready_once(&listener.finish());
}

#[test]
fn a_hup_on_an_ephemeral_instance_keeps_its_throwaway_settings_and_port() {
    let dir = test_dir();
    let name = format!("loop-{}", std::process::id());
    let config = write_config(dir.path(), "[server]\nwork_mem = \"4MB\"\n");
    let archive = npm_archive().display().to_string();
    let install = shared_install_dir().display().to_string();
    let pgwarden = Pgwarden::start(
        &[
            "run",
            "--archive",
            &archive,
            "--install-dir",
            &install,
            "--ephemeral",
            "--name",
            &name,
            "--port",
            "0",
            "--config",
            &config,
        ],
        &[],
    );
    let ready = pgwarden.wait_ready(FIRST_LAUNCH);
    let port: u16 = ready
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    assert_eq!(show(port, "fsync"), "off");
    write_config(dir.path(), "[server]\nwork_mem = \"8MB\"\n");
    pgwarden.signal(Signal::SIGHUP);
    wait_until("work_mem to follow the reload", START, || {
        show(port, "work_mem") == "8MB"
    });
    for (setting, value) in [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
    ] {
        assert_eq!(show(port, setting), value, "{setting} after the reload");
    }
    assert!(
        !pgwarden.stderr_text().contains("port changed"),
        "{}",
        pgwarden.stderr_text()
    );
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn twenty_relaunches_right_after_kill_9_of_pgwarden_are_never_refused() {
    let dir = test_dir();
    let port = free_port();
    let mut pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    for round in 1..=20 {
        // No wait for the killed one: the next starts at once.
        pgwarden.signal(Signal::SIGKILL);
        let next = start(dir.path(), port, &[]);
        let old = std::mem::replace(&mut pgwarden, next);
        let line =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pgwarden.wait_ready(START)));
        assert!(
            line.is_ok(),
            "relaunch {round} failed:\n{}",
            pgwarden.stderr_text()
        );
        assert!(
            !pgwarden.stderr_text().contains("another pgwarden"),
            "relaunch {round} refused"
        );
        drop(old);
    }
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn sigterm_during_a_reconcile_that_cannot_finish_stops_within_the_shutdown_timeout() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "shutdown_timeout = \"10s\"\n[server]\nmax_prepared_transactions = 2\n",
    );
    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    // A prepared transaction that updated the role's row: it survives the restart, and any
    // other update of that row (the reconcile's ALTER ROLE … PASSWORD) waits for it forever.
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .batch_execute(
            "BEGIN; ALTER ROLE trader CONNECTION LIMIT 50; PREPARE TRANSACTION 'hold_the_role'",
        )
        .unwrap();
    drop(client);
    stop(pgwarden, Signal::SIGTERM);

    // A new password: reconciled before the ready line, and that reconcile cannot finish.
    let mut pgwarden = start_with(
        dir.path(),
        port,
        &["--config", &config],
        &[("POSTGRES_PASSWORD", "changed")],
    );
    pgwarden.wait_for_stderr(
        "reconciling the role and database before the ready line",
        START,
    );
    thread::sleep(Duration::from_millis(1000));
    assert!(
        pgwarden.stdout_text().is_empty(),
        "ready before the reconcile: {}",
        pgwarden.stdout_text()
    );
    let asked = Instant::now();
    pgwarden.signal(Signal::SIGTERM);
    let status = pgwarden.wait_exit(STOP);
    let took = asked.elapsed();
    assert!(status.success(), "{status}: {}", pgwarden.stderr_text());
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, beyond the 10 s shutdown timeout"
    );
    eprintln!("stopped {took:?} after SIGTERM during the reconcile");
}

/// A memory cgroup of its own below this process's, with a limit; its processes are killed
/// (by pid) and it is removed on drop.
struct LimitedCgroup {
    dir: std::path::PathBuf,
}

impl LimitedCgroup {
    /// `None` where no child memory cgroup can be made here (skipped, or failed under CI).
    fn make(name: &str, limit_mb: u64) -> Option<LimitedCgroup> {
        if !require_root("making a memory cgroup") {
            return None;
        }
        let found = pgwarden::postmaster::oom::MemoryCgroup::find();
        let dir = found.as_ref().map(|c| {
            c.dir
                .join(format!("pgwarden-test-{}-{name}", std::process::id()))
        });
        let made = dir.as_ref().is_some_and(|dir| {
            let limit = if found.as_ref().unwrap().v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            std::fs::create_dir(dir).is_ok()
                && std::fs::write(dir.join(limit), (limit_mb << 20).to_string()).is_ok()
        });
        if !prerequisite(
            made,
            &format!("a child memory cgroup with a limit ({found:?})"),
        ) {
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir(dir);
            }
            return None;
        }
        Some(LimitedCgroup { dir: dir.unwrap() })
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for LimitedCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() && std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove the test cgroup {}", self.dir.display());
    }
}

/// A first launch of pgwarden moved into `cgroup` (before it starts any child): pgwarden, its
/// port, data dir and postmaster pid.
fn start_in(cgroup: &LimitedCgroup, dir: &Path) -> (Pgwarden, u16, std::path::PathBuf, i32) {
    let port = free_port();
    let pgwarden = start(dir, port, &[]);
    cgroup.add(pgwarden.pid());
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.join("data");
    let postmaster = postmaster_pid(&data_dir);
    assert!(
        cgroup.pids().contains(&postmaster),
        "the postmaster is in the cgroup"
    );
    (pgwarden, port, data_dir, postmaster)
}

/// The query that eats memory until the cgroup's limit stops it (a string of up to 900 MiB).
const EAT_MEMORY: &str =
    "SELECT length(string_agg(repeat('x', 1048576), '')) FROM generate_series(1, 900)";

fn set_oom_score_adj(pid: i32, adj: i32) {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()).unwrap();
}

/// The kernel's OOM killer, for real: pgwarden runs in a memory cgroup limited to 256 MiB,
/// a query eats memory, and the kernel kills the postmaster (made its preferred victim, as an
/// unlucky one would be). pgwarden says it was the OOM killer, with the limit, and restarts.
#[test]
fn the_oom_killer_is_named_with_the_limit_and_the_server_restarts() {
    let Some(cgroup) = LimitedCgroup::make("postmaster-oom", 256) else {
        return;
    };
    let dir = test_dir();
    let (pgwarden, port, data_dir, postmaster) = start_in(&cgroup, dir.path());
    // The eating backend is forked first (it keeps the default score, and is the victim once
    // the postmaster is gone); then the postmaster becomes the preferred victim. (Raising a
    // score needs no privilege; lowering one needs CAP_SYS_RESOURCE, which CI may lack.)
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client.batch_execute("SELECT 1").unwrap();
    set_oom_score_adj(postmaster, 1000);
    let eater = thread::spawn(move || client.batch_execute(EAT_MEMORY));
    let line = pgwarden.wait_for_stderr("postgres exited unexpectedly", START);
    assert!(
        line.contains("killed by the kernel's OOM killer (memory limit: 256 MiB)"),
        "{line}"
    );
    assert!(!line.contains("sent from outside pgwarden"), "{line}");
    assert!(
        eater.join().unwrap().is_err(),
        "the eating query cannot succeed"
    );
    pgwarden.wait_for_stderr("ready again", START);
    let status = status_json(&data_dir);
    assert_eq!(status["last_exit"]["oom_killed"], true, "{status}");
    assert_eq!(status["restarts"], 1, "{status}");
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client.batch_execute("SELECT 1").unwrap();
    stop(pgwarden, Signal::SIGTERM);
}

/// The OOM killer taking a query's backend (its usual victim): the postmaster survives and
/// restarts every connection itself, which the server logs at LOG level only. pgwarden says
/// it at the default level as a warning naming the OOM killer, and restarts nothing.
#[test]
fn a_backend_killed_by_the_oom_killer_is_a_warning_at_the_default_level() {
    let Some(cgroup) = LimitedCgroup::make("backend-oom", 256) else {
        return;
    };
    let dir = test_dir();
    let (pgwarden, port, data_dir, postmaster) = start_in(&cgroup, dir.path());
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let eaten = client.batch_execute(EAT_MEMORY);
    assert!(eaten.is_err(), "the eating query cannot succeed");
    let line = pgwarden.wait_for_stderr("was terminated by signal 9", START);
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("the kernel's OOM killer, memory limit: 256 MiB"),
        "{line}"
    );
    wait_until("the server accepts again", START, || {
        connect(port, "trader", "trader", "trader").is_ok()
    });
    assert_eq!(
        postmaster_pid(&data_dir),
        postmaster,
        "the postmaster survived"
    );
    let status = status_json(&data_dir);
    assert_eq!(status["restarts"], 0, "{status}");
    // That kill was the backend's: a later SIGKILL of the postmaster is not blamed on it.
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let line = pgwarden.wait_for_stderr("postgres exited unexpectedly", START);
    assert!(line.contains("sent from outside pgwarden"), "{line}");
    assert!(!line.contains("OOM"), "{line}");
    stop(pgwarden, Signal::SIGTERM);
}
