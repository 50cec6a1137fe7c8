//! The HTTP endpoint (issue 19): /livez, /readyz and Prometheus /metrics, against a real
//! server, read over real HTTP and parsed by the Python `prometheus_client` parser.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    try_get(port, path, Duration::from_secs(30)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn try_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_str(), ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    Ok((code, body.to_string()))
}

/// One sample: name, labels, value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses the text format with the Python `prometheus_client` parser (CI installs it).
fn parse(text: &str) -> Samples {
    let script = "import sys, json\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  out = []\n\
                  for family in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in family.samples:\n\
                  \x20       out.append([s.name, s.labels, s.value])\n\
                  print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with prometheus_client) is needed: `.ci/run` installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the output: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("parser output")
}

fn scrape(port: u16) -> Samples {
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    parse(&body)
}

/// The value of `name` with every label in `labels`; panics if absent.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).unwrap_or_else(|| {
        let names: Vec<&str> = samples.iter().map(|s| s.0.as_str()).collect();
        panic!("no sample {name} {labels:?} in {names:?}")
    })
}

fn find(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

fn readyz(port: u16) -> (u16, serde_json::Value) {
    let (code, body) = get(port, "/readyz");
    (code, serde_json::from_str(&body).expect("/readyz is JSON"))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("pgwarden.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// pgwarden on `port` with the endpoint on `http` and `config` as its config file.
fn start_observed(dir: &Path, port: u16, http: u16, config: &str) -> Pgwarden {
    let config = write_config(dir, config);
    let address = format!("127.0.0.1:{http}");
    let pgwarden = start_with(
        dir,
        port,
        &["--config", &config, "--http-address", &address],
        &[],
    );
    pgwarden.wait_ready(FIRST_LAUNCH);
    pgwarden
}

#[test]
fn idle_and_under_load_the_endpoint_reports_the_server() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    let pgwarden = start_observed(dir.path(), port, http, "");

    assert_eq!(get(http, "/livez").0, 200);
    let (code, body) = readyz(http);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "ready");
    assert_eq!(body["restarts"], 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["since"].as_f64().unwrap() > 1.7e9, "{body}");
    assert_eq!(get(http, "/nothing").0, 404);

    let idle = scrape(http);
    assert_eq!(value(&idle, "pgwarden_state", &[("state", "ready")]), 1.0);
    assert_eq!(
        value(&idle, "pgwarden_state", &[("state", "starting")]),
        0.0
    );
    assert_eq!(value(&idle, "pgwarden_ready", &[]), 1.0);
    assert_eq!(value(&idle, "pgwarden_restarts_total", &[]), 0.0);
    assert_eq!(value(&idle, "pgwarden_failed_starts_total", &[]), 0.0);
    let started = value(&idle, "pgwarden_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 300.0,
        "{started} vs {now}"
    );
    assert_eq!(value(&idle, "pg_up", &[]), 1.0);
    assert_eq!(value(&idle, "pg_settings_max_connections", &[]), 100.0);
    assert!(value(&idle, "pg_database_size_bytes", &[("datname", "trader")]) > 1e6);
    for name in [
        "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_blks_read",
        "pg_stat_database_blks_hit",
        "pg_stat_database_deadlocks",
        "pg_stat_database_temp_bytes",
        "pg_stat_database_numbackends",
    ] {
        value(&idle, name, &[("datname", "trader")]);
    }
    for name in [
        "pg_stat_bgwriter_checkpoints_timed_total",
        "pg_stat_bgwriter_checkpoints_req_total",
        "pg_stat_bgwriter_buffers_alloc_total",
        "pg_wal_size_bytes",
        "pg_stat_wal_bytes_total",
    ] {
        value(&idle, name, &[]);
    }
    value(
        &idle,
        "pg_stat_activity_count",
        &[("datname", "trader"), ("state", "active")],
    );

    // Under load: four writers, each committing one row per transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, commits) = (stop.clone(), commits.clone());
            let mut client = connect(port, "trader", "trader", "trader").unwrap();
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS load (id bigserial, pad text)")
                .unwrap();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client
                        .execute("INSERT INTO load (pad) VALUES (repeat('x', 100))", &[])
                        .unwrap();
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // A transaction left open the whole time: the oldest transaction.
    let mut holder = connect(port, "trader", "trader", "trader").unwrap();
    let mut open = holder.transaction().unwrap();
    open.execute("SELECT txid_current()", &[]).unwrap();
    let before = value(
        &idle,
        "pg_stat_database_xact_commit",
        &[("datname", "trader")],
    );
    wait_until("1000 commits", START, || {
        commits.load(Ordering::Relaxed) >= 1000
    });
    thread::sleep(Duration::from_secs(2));
    // Statistics reach pg_stat_database within a second of a commit; the cache adds a second.
    let mut loaded = scrape(http);
    wait_until("the commits in pg_stat_database", START, || {
        loaded = scrape(http);
        value(
            &loaded,
            "pg_stat_database_xact_commit",
            &[("datname", "trader")],
        ) >= before + 1000.0
    });
    let connected = value(
        &loaded,
        "pg_stat_database_numbackends",
        &[("datname", "trader")],
    );
    assert!(connected >= 5.0, "numbackends {connected}");
    let oldest = value(
        &loaded,
        "pg_stat_activity_max_tx_duration",
        &[("datname", "trader"), ("state", "idle in transaction")],
    );
    assert!(oldest >= 2.0, "oldest transaction {oldest}s");
    assert_eq!(
        value(
            &loaded,
            "pg_stat_activity_count",
            &[("datname", "trader"), ("state", "idle in transaction")]
        ),
        1.0
    );
    assert_eq!(value(&loaded, "pgwarden_ready", &[]), 1.0);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    open.rollback().unwrap();
    drop(holder);

    // The last backup, once there is one.
    assert!(
        find(
            &loaded,
            "pgwarden_backup_last_success_timestamp_seconds",
            &[]
        )
        .is_none()
    );
    let archive = dir.path().join("backup.tar.zst");
    let data_dir = dir.path().join("data");
    let backup = run_to_exit(
        &[
            "backup",
            archive.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
        START,
    );
    assert!(backup.status.success(), "{backup:?}");
    let after = scrape(http);
    let finished = value(
        &after,
        "pgwarden_backup_last_success_timestamp_seconds",
        &[],
    );
    assert!(
        finished >= now && finished < now + 600.0,
        "{finished} vs {now}"
    );
    assert_eq!(
        value(&after, "pgwarden_backup_last_success_size_bytes", &[]),
        std::fs::metadata(&archive).unwrap().len() as f64
    );
    assert_eq!(
        value(&after, "pgwarden_backup_last_attempt_failed", &[]),
        0.0
    );
    stop_pgwarden(pgwarden);
}

fn stop_pgwarden(pgwarden: Pgwarden) {
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_non_loopback_address_is_refused_unless_allowed() {
    let dir = test_dir();
    let port = free_port();
    let mut args = run_args(dir.path(), port);
    args.extend(["--http-address".to_string(), "0.0.0.0:9187".to_string()]);
    let output = run_to_exit(&as_strs(&args), &[], STOP);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("http_address 0.0.0.0:9187") && stderr.contains("http_allow_remote = true"),
        "{stderr}"
    );
    // Refused before anything was made.
    assert!(!dir.path().join("data").exists());

    let bad = run_to_exit(
        &as_strs(
            &[
                args[..args.len() - 1].to_vec(),
                vec!["localhost".to_string()],
            ]
            .concat(),
        ),
        &[],
        STOP,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected IP:PORT"), "{stderr}");
}

/// The postmaster and every process it started.
fn server_processes(data_dir: &Path) -> Vec<i32> {
    let postmaster = postmaster_pid(data_dir);
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid: Option<i32> = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

fn signal_all(pids: &[i32], signal: Signal) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
}

#[test]
fn after_kill_9_restarts_are_counted_and_pg_up_and_readyz_follow_the_server() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    // The second crash within failure_window waits out the backoff: long enough to be seen.
    let pgwarden = start_observed(
        dir.path(),
        port,
        http,
        "[supervisor]\nbackoff_initial = \"10s\"\nmax_failures = 10\n",
    );
    let data_dir = dir.path().join("data");
    assert_eq!(value(&scrape(http), "pg_up", &[]), 1.0);

    // The first crash: restarted at once.
    kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
    pgwarden.wait_for_stderr("ready again", START);
    wait_until("restarts_total 1 and ready", START, || {
        let samples = scrape(http);
        value(&samples, "pgwarden_restarts_total", &[]) == 1.0
            && value(&samples, "pgwarden_ready", &[]) == 1.0
    });
    let samples = scrape(http);
    assert_eq!(value(&samples, "pgwarden_last_exit_signal", &[]), 9.0);
    assert_eq!(value(&samples, "pgwarden_last_exit_code", &[]), -1.0);
    assert_eq!(readyz(http).0, 200);

    // The second: 10 s of backoff (±10%), not ready, server down.
    kill(Pid::from_raw(postmaster_pid(&data_dir)), Signal::SIGKILL).unwrap();
    let mut body = serde_json::Value::Null;
    wait_until("/readyz 503", Duration::from_secs(6), || {
        let (code, b) = readyz(http);
        body = b;
        code == 503
    });
    assert_eq!(body["ready"], false);
    assert_eq!(body["state"], "restarting", "{body}");
    assert_eq!(body["restarts"], 2, "{body}");
    assert_eq!(
        body["last_exit"], "signal 9 (SIGKILL), sent from outside pgwarden",
        "{body}"
    );
    wait_until("pg_up 0", Duration::from_secs(6), || {
        value(&scrape(http), "pg_up", &[]) == 0.0
    });
    let down = scrape(http);
    assert_eq!(
        value(&down, "pgwarden_state", &[("state", "restarting")]),
        1.0
    );
    // Still in the backoff: what was seen belongs to it.
    assert_eq!(value(&down, "pgwarden_ready", &[]), 0.0);

    wait_until("/readyz 200 again", START, || readyz(http).0 == 200);
    wait_until("pg_up 1 again", START, || {
        value(&scrape(http), "pg_up", &[]) == 1.0
    });
    let up = scrape(http);
    assert_eq!(value(&up, "pgwarden_restarts_total", &[]), 2.0);
    assert_eq!(value(&up, "pgwarden_failed_starts_total", &[]), 0.0);
    assert_eq!(value(&up, "pgwarden_state", &[("state", "ready")]), 1.0);
    stop_pgwarden(pgwarden);
}

#[test]
fn a_stopped_server_gives_pg_up_0_within_the_timeout_and_readyz_503() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    // Probed often; not declared hung during the test.
    let pgwarden = start_observed(
        dir.path(),
        port,
        http,
        "[supervisor]\nhealth_interval = \"500ms\"\nhealth_timeout = \"500ms\"\nhang_after = \"300s\"\n",
    );
    let data_dir = dir.path().join("data");
    assert_eq!(value(&scrape(http), "pg_up", &[]), 1.0);

    let stopped = server_processes(&data_dir);
    signal_all(&stopped, Signal::SIGSTOP);
    thread::sleep(Duration::from_millis(1100)); // past the cache
    let asked = Instant::now();
    let (code, body) =
        try_get(http, "/metrics", Duration::from_secs(10)).expect("/metrics answers");
    let took = asked.elapsed();
    assert_eq!(code, 200);
    // The query set's timeout is 3 s; the rest is slack for a loaded machine (a hung scrape
    // would not answer at all within the 10 s read timeout).
    assert!(took < Duration::from_secs(6), "/metrics took {took:?}");
    let samples = parse(&body);
    assert_eq!(value(&samples, "pg_up", &[]), 0.0);
    assert!(find(&samples, "pg_stat_database_xact_commit", &[]).is_none());
    wait_until("/readyz 503", Duration::from_secs(10), || {
        readyz(http).0 == 503
    });
    // The supervisor itself is fine.
    assert_eq!(get(http, "/livez").0, 200);
    assert_eq!(readyz(http).1["state"], "ready");

    signal_all(&stopped, Signal::SIGCONT);
    wait_until("/readyz 200", START, || readyz(http).0 == 200);
    wait_until("pg_up 1", START, || {
        value(&scrape(http), "pg_up", &[]) == 1.0
    });
    assert_eq!(value(&scrape(http), "pgwarden_restarts_total", &[]), 0.0);
    stop_pgwarden(pgwarden);
}

#[test]
fn two_hundred_concurrent_scrapers_cause_at_most_one_query_set_a_second() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    // Every session the server accepts is logged, with its application name.
    let pgwarden = start_observed(dir.path(), port, http, "[server]\nlog_connections = true\n");
    let sessions = |p: &Pgwarden| {
        p.stderr_text()
            .matches("application_name=pgwarden-metrics")
            .count()
    };
    let before = sessions(&pgwarden);
    let scrapes = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let started = Instant::now();
    let scrapers: Vec<_> = (0..200)
        .map(|_| {
            let (scrapes, barrier) = (scrapes.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    let (code, body) = get(http, "/metrics");
                    assert_eq!(code, 200);
                    assert!(body.contains("\npg_up 1\n"), "{body}");
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for scraper in scrapers {
        scraper.join().unwrap();
    }
    let elapsed = started.elapsed();
    thread::sleep(Duration::from_millis(500)); // the last log lines
    let seen = sessions(&pgwarden) - before;
    let scrapes = scrapes.load(Ordering::Relaxed);
    eprintln!("{scrapes} scrapes in {elapsed:?}: {seen} query sets");
    assert!(scrapes >= 200, "only {scrapes} scrapes");
    assert!(seen >= 1, "no query set logged");
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        seen <= allowed,
        "{seen} query sets in {elapsed:?} (at most {allowed})"
    );
    stop_pgwarden(pgwarden);
}
