//! Issue 23, item 3: any local user can reach the HTTP endpoint; a flood of idle connections
//! to it must only ever fail the endpoint's own requests, never the supervisor.
//!
//! pgwarden runs under a low open-file limit (a soft limit of 128 it raises to the hard limit,
//! 256), and the test opens many more connections to its endpoint than that limit, each sending
//! a request line and never finishing it, for longer than the hang detector's window. The server must
//! answer queries all along, a postmaster killed during the flood must be restarted, no hang
//! verdict may be taken, and pgwarden must not exit. Once the flood stops opening connections
//! (its sockets still open), the endpoint must have timed the idle ones out and answer again.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// pgwarden's open-file limit in this test: it starts with the soft one and raises it to the
/// hard one; the postmaster gets the soft one back.
const FD_SOFT_LIMIT: u64 = 128;
const FD_LIMIT: u64 = 256;
/// Idle connections the flood keeps open at any time: well over [`FD_LIMIT`].
const HELD: usize = 600;
/// At most this many connections over the whole test (a bounded flood).
const MAX_OPENED: usize = 12_000;
/// How long the flood lasts: several times the hang detector's window (`hang_after` below).
const FLOOD_FOR: Duration = Duration::from_secs(8);
const HANG_AFTER: &str = "2s";
/// How long after the flood stops `/livez` may take to answer again: the endpoint's header
/// read timeout (5 s) cuts the idle connections, plus a wide margin for a loaded machine.
const RECOVERY: Duration = Duration::from_secs(30);

/// A thread that opens idle connections to `port` (a request line each, never finished) and
/// keeps the newest [`HELD`] of them open, replacing the oldest, until told to stop.
struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<TcpStream>>>,
}

impl Flood {
    fn start(port: u16) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (stop_flag, count) = (stop.clone(), opened.clone());
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let thread = thread::spawn(move || {
            let mut held: std::collections::VecDeque<TcpStream> = Default::default();
            while !stop_flag.load(Ordering::Relaxed) && count.load(Ordering::Relaxed) < MAX_OPENED {
                // Paced: a batch, then a short pause (the test's own thread needs the CPU too).
                for _ in 0..50 {
                    if let Ok(mut stream) =
                        TcpStream::connect_timeout(&address, Duration::from_secs(1))
                    {
                        let _ = stream.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n");
                        held.push_back(stream);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    if held.len() > HELD {
                        held.pop_front();
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            held.into()
        });
        Flood {
            stop,
            opened,
            thread: Some(thread),
        }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Stops opening connections; the ones still held stay open (returned).
    fn hold(mut self) -> Vec<TcpStream> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("flood thread")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET path` on a fresh connection: (status code, headers and body), or an error.
fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    Ok((code, response))
}

fn query_answers(port: u16) -> Result<i32, String> {
    let mut client = connect(port, "trader", "trader", "trader").map_err(|e| e.to_string())?;
    client
        .query_one("SELECT 1", &[])
        .map(|row| row.get(0))
        .map_err(|e| e.to_string())
}

/// A process's open-file limit (soft, hard), from /proc.
fn open_file_limit(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// The figure after `name=` in `/livez`'s endpoint header.
fn figure(response: &str, name: &str) -> u64 {
    let line = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-pgwarden-http:"))
        .unwrap_or_else(|| panic!("no x-pgwarden-http header in {response:?}"));
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// `pgwarden doctor` on the running instance: its stdout. Not through the fixture, whose guard
/// would kill the running server of the data dir.
fn doctor(dir: &Path, port: u16) -> String {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .arg("doctor")
        .arg("--config")
        .arg(dir.join("pgwarden.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--port", &port.to_string()])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pgwarden doctor");
    let output = output_within(child, Duration::from_secs(60)).expect("doctor within 60 s");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn start_limited(dir: &Path, port: u16, http: u16) -> Pgwarden {
    let config = dir.join("pgwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[supervisor]\nhealth_interval = \"200ms\"\nhealth_timeout = \"500ms\"\nhang_after = \"{HANG_AFTER}\"\n"
        ),
    )
    .unwrap();
    let mut args = run_args(dir, port);
    let address = format!("127.0.0.1:{http}");
    args.extend([
        "--config".to_string(),
        config.display().to_string(),
        "--http-address".to_string(),
        address,
    ]);
    let pgwarden = Pgwarden::start_with_fd_limit(&as_strs(&args), &[], (FD_SOFT_LIMIT, FD_LIMIT));
    pgwarden.wait_ready(FIRST_LAUNCH);
    pgwarden
}

#[test]
fn an_idle_connection_flood_larger_than_the_open_file_limit_never_starves_the_supervisor() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    let pgwarden = start_limited(dir.path(), port, http);
    let data_dir = dir.path().join("data");
    let (code, response) = try_get(http, "/livez").expect("/livez before the flood");
    assert_eq!(code, 200);
    // The cap comes from the raised limit, and the server runs with the one pgwarden got.
    assert_eq!(figure(&response, "cap"), FD_LIMIT / 4, "{response}");
    assert_eq!(
        open_file_limit(postmaster_pid(&data_dir)),
        (FD_SOFT_LIMIT, FD_LIMIT)
    );

    let flood = Flood::start(http);
    let deadline = Instant::now() + Duration::from_secs(60);
    while flood.opened() < HELD {
        assert!(
            !pgwarden.has_exited(),
            "pgwarden exited at the start of the flood\n{}",
            pgwarden.stderr_text()
        );
        assert!(
            Instant::now() < deadline,
            "the flood could not open {HELD} connections"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Past the hang detector's window, the server answers all along and pgwarden stays.
    let flood_end = Instant::now() + FLOOD_FOR;
    let mut killed = false;
    while Instant::now() < flood_end {
        assert!(
            !pgwarden.has_exited(),
            "pgwarden exited during the flood\n{}",
            pgwarden.stderr_text()
        );
        if let Err(e) = query_answers(port) {
            panic!(
                "the server stopped answering during the flood: {e}\n{}",
                pgwarden.stderr_text()
            );
        }
        if !killed && Instant::now() + FLOOD_FOR / 2 > flood_end {
            // Half-way: a crash during the flood must be restarted (pipes, spawn, probes).
            let old = postmaster_pid(&data_dir);
            kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
            pgwarden.wait_for_stderr("ready again", START);
            assert_ne!(postmaster_pid(&data_dir), old);
            killed = true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(killed);
    assert!(!pgwarden.has_exited(), "{}", pgwarden.stderr_text());
    query_answers(port).expect("the server answers after the flood");

    // The flood stops opening connections but keeps its sockets: the endpoint must have cut
    // the idle ones itself and answer a fresh request within its header read timeout.
    let still_open = flood.hold();
    assert!(still_open.len() >= HELD, "{}", still_open.len());
    let deadline = Instant::now() + RECOVERY;
    let response = loop {
        match try_get(http, "/livez") {
            // Answered, and the idle connections still held by the flood were cut.
            Ok((200, response)) if figure(&response, "header_timeouts") > 0 => break response,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "/livez did not answer within {RECOVERY:?} after the flood: {other:?}\n{}",
                    pgwarden.stderr_text()
                );
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let cap = figure(&response, "cap");
    assert!(
        cap > 0 && cap < FD_LIMIT,
        "cap {cap} with a limit of {FD_LIMIT}"
    );
    assert!(figure(&response, "refused") > 0, "{response}");
    let stderr = pgwarden.stderr_text();
    assert!(
        !stderr.contains("a hang, not a crash"),
        "a hang verdict was taken during the flood:\n{stderr}"
    );
    assert!(
        !stderr.contains("Too many open files"),
        "the supervisor ran out of files:\n{stderr}"
    );
    // doctor reports the endpoint's state (from the record it keeps, not over HTTP).
    let doctor = doctor(dir.path(), port);
    let line = doctor
        .lines()
        .find(|l| l.contains("http endpoint:"))
        .unwrap_or_else(|| panic!("no http endpoint line from doctor:\n{doctor}"));
    assert!(line.starts_with("warn"), "{line}");
    assert!(
        line.contains(&format!("of {cap} connections open")),
        "{line}"
    );
    assert!(line.contains("open-file limit 256"), "{line}");
    assert!(!line.contains(" 0 refused"), "{line}");
    drop(still_open);
    stop(pgwarden, Signal::SIGTERM);
}
