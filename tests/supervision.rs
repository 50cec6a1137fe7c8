//! Supervision under fire (issue 4): real kills, real signals, a real full disk.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Commits sequential ids, one transaction each, and records every acknowledged one.
/// Reconnects after errors, so it keeps writing across crashes and restarts.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let mut client = connect(port, "trader", "trader", "trader").unwrap();
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY, pad text)")
            .unwrap();
        let next: i64 = client
            .query_one("SELECT coalesce(max(id), 0) + 1 FROM acked", &[])
            .unwrap()
            .get(0);
        drop(client);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let thread = thread::spawn(move || {
            let mut id = next;
            let mut client = None;
            while !s.load(Ordering::Relaxed) {
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match connect(port, "trader", "trader", "trader") {
                        Ok(c) => client.insert(c),
                        Err(_) => {
                            thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                match c.execute("INSERT INTO acked VALUES ($1, repeat('x', 200))", &[&id]) {
                    Ok(_) => {
                        a.lock().unwrap().push(id);
                        id += 1;
                    }
                    // Unknown outcome (the commit may or may not have happened): skip the id.
                    Err(_) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        client = None;
                        id += 1;
                    }
                }
            }
        });
        Writer {
            stop,
            acked,
            failed,
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

/// Every id in `acked` must be in the table.
fn assert_all_present(port: u16, acked: &[i64]) {
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let present: Vec<i64> = client
        .query("SELECT id FROM acked ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let present: std::collections::HashSet<i64> = present.into_iter().collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn count(pgwarden: &Pgwarden, needle: &str) -> usize {
    pgwarden.stderr_text().matches(needle).count()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("pgwarden.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn signal_pid(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap();
}

#[test]
fn acknowledged_writes_survive_ten_postmaster_kills() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(dir.path(), "[supervisor]\nmax_failures = 100\n");
    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    let writer = Writer::start(port);
    let mut pids = vec![];
    for round in 1..=10 {
        // Random moments: after a varying number of further commits.
        let target = writer.acked() + 20 + (round * 37) % 150;
        wait_until("commits", START, || writer.acked() >= target);
        let pid = postmaster_pid(&data_dir);
        pids.push(pid);
        signal_pid(pid, Signal::SIGKILL);
        wait_until("ready again", START, || {
            count(&pgwarden, "ready again") >= round
        });
    }
    let before = writer.acked();
    wait_until("commits after the last recovery", START, || {
        writer.acked() > before + 10
    });
    let acked = writer.finish();
    assert_all_present(port, &acked);
    pids.dedup();
    assert_eq!(pids.len(), 10, "each kill hit a new postmaster");
    // Each recovery above made the data directory durable with syncfs (kernel >= 5.8).
    assert_eq!(
        show(port, "recovery_init_sync_method"),
        expected_recovery_sync()
    );
    stop(pgwarden, Signal::SIGTERM);
}

fn show(port: u16, setting: &str) -> String {
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .unwrap()
        .get(0)
}

/// syncfs reports write-back errors since Linux 5.8; pgwarden uses it from there on.
fn expected_recovery_sync() -> &'static str {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().to_string();
    let mut numbers = release.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap(), numbers.next().unwrap());
    if version >= (5, 8) { "syncfs" } else { "fsync" }
}

/// `[server] recovery_init_sync_method` in the config wins over pgwarden's choice.
#[test]
fn the_config_can_choose_the_recovery_sync_method() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "[server]\nrecovery_init_sync_method = \"fsync\"\n",
    );
    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    assert_eq!(show(port, "recovery_init_sync_method"), "fsync");
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn killing_pgwarden_leaves_no_unsupervised_server_and_relaunch_keeps_the_data() {
    let dir = test_dir();
    let port = free_port();
    let mut pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    let writer = Writer::start(port);
    wait_until("commits", START, || writer.acked() > 50);
    let old = postmaster_pid(&data_dir);
    pgwarden.signal(Signal::SIGKILL);
    pgwarden.wait_exit(STOP);
    // The postmaster got SIGINT through PR_SET_PDEATHSIG: it shuts itself down cleanly.
    wait_until("the orphaned postmaster to exit", START, || {
        !process_alive(old)
    });
    let acked = writer.finish();
    drop(pgwarden);

    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(START);
    let new = postmaster_pid(&data_dir);
    assert_ne!(old, new);
    let parent = std::fs::read_to_string(format!("/proc/{new}/stat")).unwrap();
    let ppid: u32 = parent
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ppid,
        pgwarden.pid(),
        "the running postmaster is the new pgwarden's child"
    );
    assert_all_present(port, &acked);
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_postmaster_left_running_on_the_data_dir_is_shut_down_before_starting() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    stop(pgwarden, Signal::SIGTERM);

    // A postgres started by hand on the same data dir, as nobody supervises it.
    let data_dir = dir.path().join("data");
    let install = shared_install_dir().join(PG_VERSION);
    let socket_dir = dir.path().join("data.pgwarden/socket");
    let mut command = std::process::Command::new(install.join("bin/postgres"));
    command
        .arg("-D")
        .arg(&data_dir)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if is_root() {
        use std::os::unix::process::CommandExt;
        let user = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let mut stray = command.spawn().unwrap();
    let stray_pid = stray.id() as i32;
    // Reap it as soon as it exits (its parent is this test, not init).
    let reaper = thread::spawn(move || stray.wait());
    wait_until("the stray server", START, || {
        connect(port, "trader", "trader", "trader").is_ok()
    });

    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(START);
    assert!(
        pgwarden
            .stderr_text()
            .contains("still runs on this data directory")
    );
    assert!(reaper.join().unwrap().is_ok());
    assert!(!process_alive(stray_pid));
    assert_ne!(postmaster_pid(&data_dir), stray_pid);
    connect(port, "trader", "trader", "trader").unwrap();
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn sigterm_during_heavy_writes_loses_nothing_and_sighup_applies_a_setting() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(dir.path(), "[server]\nwork_mem = \"4MB\"\n");
    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);

    let show = |port| -> String {
        let mut c = connect(port, "trader", "trader", "trader").unwrap();
        c.query_one("SHOW work_mem", &[]).unwrap().get(0)
    };
    assert_eq!(show(port), "4MB");
    write_config(dir.path(), "[server]\nwork_mem = \"8MB\"\n");
    pgwarden.signal(Signal::SIGHUP);
    wait_until("work_mem to change on reload", START, || {
        show(port) == "8MB"
    });

    let writers: Vec<Writer> = (0..3).map(|_| Writer::start(port)).collect();
    wait_until("heavy writes", START, || {
        writers.iter().map(Writer::acked).sum::<usize>() > 300
    });
    stop(pgwarden, Signal::SIGTERM);
    let acked: Vec<i64> = writers.into_iter().flat_map(Writer::finish).collect();

    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(START);
    assert!(
        !pgwarden.stderr_text().contains("was interrupted"),
        "the shutdown was not clean"
    );
    assert_all_present(port, &acked);
    assert_eq!(show(port), "8MB", "the reloaded setting is kept");
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_bad_setting_ends_in_a_crash_loop_error_quoting_the_server() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(dir.path(), "[server]\nshared_buffers = \"lots\"\n");
    let mut args = run_args(dir.path(), port);
    args.extend(["--config".to_string(), config]);
    let args = as_strs(&args);
    let started = Instant::now();
    let output = run_to_exit(&args, &[], FIRST_LAUNCH);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("giving up"), "{stderr}");
    let error = stderr.split("error: ").last().unwrap();
    assert!(
        error.contains("invalid value for parameter \"shared_buffers\""),
        "{error}"
    );
    eprintln!("gave up after {:?}", started.elapsed());
}

#[test]
fn a_hung_postmaster_is_detected_and_restarted() {
    let dir = test_dir();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "[supervisor]\nhealth_interval = \"200ms\"\nhealth_timeout = \"500ms\"\nhang_after = \"2s\"\n",
    );
    let pgwarden = start_with(dir.path(), port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    let old = postmaster_pid(&data_dir);
    signal_pid(old, Signal::SIGSTOP);
    pgwarden.wait_for_stderr("a hang, not a crash", START);
    pgwarden.wait_for_stderr("ready again", START);
    assert!(!process_alive(old));
    assert_ne!(postmaster_pid(&data_dir), old);
    connect(port, "trader", "trader", "trader").unwrap();
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_second_pgwarden_on_the_same_data_dir_is_refused() {
    let dir = test_dir();
    let port = free_port();
    let first = start(dir.path(), port, &[]);
    first.wait_ready(FIRST_LAUNCH);
    let args = run_args(dir.path(), free_port());
    let args = as_strs(&args);
    let output = run_to_exit(&args, &[], START);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("another pgwarden (pid {})", first.pid())),
        "{stderr}"
    );
    connect(port, "trader", "trader", "trader").expect("the first one still serves");
    stop(first, Signal::SIGTERM);
}

#[test]
fn a_busy_orphaned_backend_does_not_block_the_restart() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    // A CPU-bound query never checks for postmaster death: its backend outlives the postmaster.
    let (tx, rx) = std::sync::mpsc::channel();
    let busy = thread::spawn(move || {
        let mut c = connect(port, "trader", "trader", "trader").unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        tx.send(pid).unwrap();
        let _ = c.query_one("SELECT count(*) FROM generate_series(1, 2000000000)", &[]);
    });
    let backend = rx.recv().unwrap();
    thread::sleep(Duration::from_millis(200));
    signal_pid(postmaster_pid(&data_dir), Signal::SIGKILL);
    pgwarden.wait_for_stderr("ready again", START);
    assert!(
        !process_alive(backend),
        "the orphaned backend was left running"
    );
    let _ = busy.join();
    connect(port, "trader", "trader", "trader").unwrap();
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn sd_notify_messages_follow_the_lifecycle() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let dir = test_dir();
    let port = free_port();
    let name = format!("pgwarden-test-notify-{}-{port}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (m, d) = (messages.clone(), done.clone());
    let listener = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !d.load(Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf) {
                m.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    });
    let notify = format!("@{name}");
    let envs = [
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let pgwarden = start(dir.path(), port, &envs);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let has = |needle: &str| messages.lock().unwrap().iter().any(|m| m.contains(needle));
    wait_until("a watchdog ping", START, || has("WATCHDOG=1"));
    pgwarden.signal(Signal::SIGHUP);
    wait_until("RELOADING=1", START, || has("RELOADING=1"));
    stop(pgwarden, Signal::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    listener.join().unwrap();

    let all = messages.lock().unwrap().clone();
    let first = |needle: &str| {
        all.iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {all:#?}"))
    };
    assert!(
        all.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "{all:#?}"
    );
    let order = [
        first("STATUS=initialising"),
        first("STATUS=starting"),
        first("READY=1"),
        first("WATCHDOG=1"),
        first("RELOADING=1"),
        first("STOPPING=1"),
        first("STATUS=stopped"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?} in {all:#?}"
    );
    let reload = first("RELOADING=1");
    assert!(all[reload].contains("MONOTONIC_USEC="), "{}", all[reload]);
    assert!(
        all[reload + 1..].iter().any(|m| m.contains("READY=1")),
        "READY=1 after the reload"
    );
    let ready_line = &all[first("READY=1")];
    assert!(
        ready_line.contains(&format!("127.0.0.1:{port}")),
        "{ready_line}"
    );
}

#[test]
fn a_full_disk_fails_writes_but_loses_nothing_and_recovers_when_space_returns() {
    let dir = test_dir();
    let mount = dir.path().join("small");
    // Unmounted on drop, after the guard below killed everything (dropped in reverse order).
    let Some(_tmpfs) = Tmpfs::mount(&mount, "96m", 0o755) else {
        return;
    };
    let port = free_port();
    let config = write_config(
        dir.path(),
        "[supervisor]\nmax_failures = 1000\nbackoff_max = \"500ms\"\n[server]\nmax_wal_size = \"64MB\"\nmin_wal_size = \"32MB\"\n",
    );
    let pgwarden = start_with(&mount, port, &["--config", &config], &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);

    // Leave a few MB free: a ballast file takes the rest, and is removed later to "free space".
    let ballast = mount.join("ballast");
    let free = nix::sys::statvfs::statvfs(&mount).unwrap();
    let available = free.blocks_available() as u64 * free.fragment_size() as u64;
    let size = available.saturating_sub(6 * 1024 * 1024);
    std::fs::write(&ballast, vec![0u8; size as usize]).unwrap();

    let writer = Writer::start(port);
    wait_until("the disk to fill up", Duration::from_secs(180), || {
        pgwarden.stderr_text().contains("No space left on device")
    });
    thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&ballast).unwrap();
    let acked_before = writer.acked();
    wait_until("writes to succeed again", Duration::from_secs(180), || {
        writer.acked() > acked_before + 20
    });
    assert!(
        writer.failed.load(Ordering::Relaxed) > 0,
        "no write failed on the full disk"
    );
    let acked = writer.finish();
    assert_all_present(port, &acked);
    stop(pgwarden, Signal::SIGTERM);
}
