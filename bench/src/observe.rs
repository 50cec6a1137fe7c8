//! Row 13: what the HTTP endpoint costs while Prometheus scrapes `/metrics` every second.
//!
//! One `pgwarden run --http-address …`; windows of the same length alternate, not scraped and
//! scraped once a second (each scrape a fresh query set: the cache holds for one second), so
//! that the machine's drift falls on both alike. Measured: pgwarden's CPU time and RSS, the
//! server's CPU time (the postmaster's own plus its reaped children's: the metrics sessions'
//! backends), and one scrape's latency, with `/livez` (no server query) for scale.

use crate::ctx::Ctx;
use crate::launch::pgwarden_command;
use crate::stats::{Row, Unit, ms};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Rounds of (not scraped, scraped) windows; each window is `total / (2 × ROUNDS)` long.
const ROUNDS: u32 = 2;

/// `GET path` over a fresh connection: the status code.
fn get(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        path != "/metrics" || response.contains("\npg_up 1\n"),
        "{response}"
    );
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line")
}

/// utime + stime + cutime + cstime of a process (itself and its reaped children), in seconds.
fn cpu_with_children(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 / per_second
}

struct Observed {
    child: Child,
    pid: u32,
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}

fn spawn(ctx: &Ctx, data_dir: &Path, port: u16, http: u16) -> Observed {
    let log = std::fs::File::create(data_dir.with_extension("pgwarden.log")).expect("log file");
    let mut command = pgwarden_command(ctx);
    command
        .arg("run")
        .arg("--config")
        .arg(&ctx.config)
        .arg("--archive")
        .arg(&ctx.archive)
        .arg("--install-dir")
        .arg(&ctx.install_dir)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--port")
        .arg(port.to_string())
        .arg("--http-address")
        .arg(format!("127.0.0.1:{http}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("spawn pgwarden");
    let stdout = child.stdout.take().expect("piped");
    let pid = child.id();
    let observed = Observed { child, pid };
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("ready: "));
    assert!(ready, "pgwarden exited before its ready line");
    observed
}

/// Row 13 over `total` seconds of windows.
pub fn scraped(ctx: &Ctx, total: Duration) -> Vec<Row> {
    let dir = ctx.fresh_dir("observe");
    let data = dir.join("data");
    let (port, http) = (ctx.port(), ctx.port());
    let pgw = spawn(ctx, &data, port, http);
    let postmaster = crate::launch::postmaster_pid(&data).expect("postmaster.pid") as u32;
    let window = total / (2 * ROUNDS);
    let secs = (window * ROUNDS).as_secs();
    eprintln!(
        "[bench] endpoint: {ROUNDS} × ({} s not scraped, {} s scraped every second)",
        window.as_secs(),
        window.as_secs()
    );
    // Warm up: the first scrape connects and allocates what later ones reuse.
    assert_eq!(get(http, "/metrics"), 200);
    std::thread::sleep(Duration::from_millis(1100));
    let rss_before = crate::procfs::status_kib(pgw.pid, "VmRSS").expect("rss") as f64 / 1024.0;

    let mut cpu = Row::new(
        "13",
        &format!("scraped every 1 s for {secs} s: CPU time of pgwarden"),
        "same pgwarden, same length, not scraped",
        Unit::CpuSeconds,
    );
    let mut server_cpu = Row::new(
        "13",
        &format!("scraped every 1 s for {secs} s: CPU time of the server (postmaster + backends)"),
        "same server, same length, not scraped",
        Unit::CpuSeconds,
    );
    let mut rss = Row::new(
        "13",
        &format!("scraped every 1 s for {secs} s: RSS of pgwarden, after"),
        "RSS before the scrapes",
        Unit::MiB,
    );
    let mut latency = Row::new(
        "13",
        "one `/metrics` scrape (fresh query set) → answered",
        "one `/livez` → answered",
        Unit::Millis,
    );
    let (mut ours, mut theirs, mut server_ours, mut server_theirs) = (0.0, 0.0, 0.0, 0.0);
    for round in 0..ROUNDS {
        for scraping in [round % 2 == 1, round % 2 == 0] {
            let (pgw0, server0) = (
                crate::procfs::cpu_seconds(pgw.pid).expect("cpu"),
                cpu_with_children(postmaster),
            );
            let start = Instant::now();
            let mut next = start;
            while start.elapsed() < window {
                if scraping {
                    let t0 = Instant::now();
                    assert_eq!(get(http, "/metrics"), 200);
                    latency.ours.push(ms(t0.elapsed()));
                }
                next += Duration::from_secs(1);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let (pgw1, server1) = (
                crate::procfs::cpu_seconds(pgw.pid).expect("cpu"),
                cpu_with_children(postmaster),
            );
            if scraping {
                ours += pgw1 - pgw0;
                server_ours += server1 - server0;
            } else {
                theirs += pgw1 - pgw0;
                server_theirs += server1 - server0;
            }
        }
    }
    for _ in 0..latency.ours.len() {
        let t0 = Instant::now();
        assert_eq!(get(http, "/livez"), 200);
        latency.theirs.push(ms(t0.elapsed()));
    }
    cpu.ours.push(ours);
    cpu.theirs.push(theirs);
    server_cpu.ours.push(server_ours);
    server_cpu.theirs.push(server_theirs);
    rss.ours
        .push(crate::procfs::status_kib(pgw.pid, "VmRSS").expect("rss") as f64 / 1024.0);
    rss.theirs.push(rss_before);
    drop(pgw);
    vec![cpu, server_cpu, rss, latency]
}
