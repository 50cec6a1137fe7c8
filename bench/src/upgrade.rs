//! Issue 27's figures: row 19, `pgwarden upgrade 17 --copy` of a filled PostgreSQL 16 cluster
//! against the same upgrade by hand with the same mode, and the downtime of each.
//!
//! One 16 cluster is made and filled once (`pgwarden run` from the 16.14.0 wheel, the table of
//! row 18), stopped, and copied (`cp -a`, untimed) for every run. Turn about:
//! - pgwarden: `pgwarden start` on the copy (untimed), then `pgwarden upgrade 17 --copy` timed
//!   as a whole: its pre-flight (installations, the old cluster's settings, initdb of the new
//!   cluster, `pg_upgrade --check` against the live server), the fast stop, pg_upgrade, the
//!   switch and the start of 17 until its `ready:` line (the extensions' update and the
//!   background analyze it starts included; the analyze is not waited for);
//! - by hand: the 16 server as a plain postgres child (untimed start), then, timed, what the
//!   PostgreSQL documentation has an administrator do: initdb of 17 with the same settings,
//!   `pg_upgrade --check`, a fast stop, `pg_upgrade --copy`, the start of 17 until it accepts.
//!
//! Downtime, both ways: a prober thread pings the server every 2 ms during the timed part; the
//! longest gap between two accepted pings is the time from the last query 16 accepted to the
//! first 17 accepted.

use crate::archives;
use crate::ctx::{Ctx, remove};
use crate::launch::{self, PASSWORD, Pgwarden, Postgres, USER, block_on};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use pgwarden::pg::probe::PingStatus;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The fill of row 18: about 100 MB.
const UPGRADE_ROWS: u32 = 500_000;

/// Pings `port` every 2 ms until stopped; the moments it was accepting.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Instant>>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut accepted = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if launch::ping(port) == PingStatus::Accepting {
                    accepted.push(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            accepted
        });
        Prober { stop, thread }
    }

    /// The longest gap between two accepted pings.
    fn downtime(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let accepted = self.thread.join().expect("prober");
        accepted
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

fn copy_cluster(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp -a");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn pgwarden_in(ctx: &Ctx, verb: &[&str], install_dir: &Path, data: &Path) -> Command {
    let mut command = launch::pgwarden_command(ctx);
    command
        .arg("--no-project")
        .args(verb)
        .arg("--config")
        .arg(&ctx.config)
        .arg("--install-dir")
        .arg(install_dir)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null());
    command
}

fn run_ok(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `pgwarden upgrade 17 --copy` of a copy of `template`: (the whole command, the downtime).
fn with_pgwarden(
    ctx: &Ctx,
    template: &Path,
    install_dir: &Path,
    wheels: (&Path, &Path),
) -> (Duration, Duration) {
    let dir = ctx.fresh_dir("upgrade-pgwarden");
    let data = dir.join("data");
    copy_cluster(template, &data);
    let port = ctx.port();
    let port_text = port.to_string();
    let wheel_16 = wheels.0.display().to_string();
    let wheel_17 = wheels.1.display().to_string();
    run_ok(
        pgwarden_in(ctx, &["start"], install_dir, &data).args([
            "--archive",
            &wheel_16,
            "--port",
            &port_text,
        ]),
        "pgwarden start (16)",
    );
    let prober = Prober::start(port);
    let t0 = Instant::now();
    run_ok(
        pgwarden_in(ctx, &["upgrade", "17", "--copy"], install_dir, &data)
            .args(["--archive", &wheel_17]),
        "pgwarden upgrade 17 --copy",
    );
    let took = t0.elapsed();
    let downtime = prober.downtime();
    assert!(
        launch::ping(port) == PingStatus::Accepting,
        "17 does not accept after the upgrade"
    );
    let mut stop = launch::pgwarden_command(ctx);
    stop.args(["--no-project", "stop", "--data-dir"]).arg(&data);
    run_ok(&mut stop, "pgwarden stop");
    remove(&dir);
    (took, downtime)
}

/// The same upgrade by hand: (initdb + check + stop + pg_upgrade --copy + start → accepting,
/// the downtime).
fn by_hand(ctx: &Ctx, template: &Path, bins: (&Path, &Path)) -> (Duration, Duration) {
    let (bin_16, bin_17) = bins;
    let dir = ctx.fresh_dir("upgrade-by-hand");
    let old = dir.join("data");
    let new = dir.join("data17");
    copy_cluster(template, &old);
    let port = ctx.port();
    let server = Postgres::spawn(ctx, bin_16, &old, port);
    launch::wait_accepting(port, Duration::from_millis(1));
    let prober = Prober::start(port);
    let pg_upgrade = |check: bool| {
        let mut command = Command::new(bin_17.join("pg_upgrade"));
        command
            .arg("-b")
            .arg(bin_16)
            .arg("-B")
            .arg(bin_17)
            .arg("-d")
            .arg(&old)
            .arg("-D")
            .arg(&new)
            .arg(format!("--username={USER}"))
            .arg(format!("--old-port={port}"))
            .arg("--socketdir")
            .arg(&dir)
            .arg("--copy")
            .env("PGPASSWORD", PASSWORD)
            .current_dir(&dir)
            .stdin(Stdio::null());
        if check {
            command.arg("--check");
        }
        ctx.as_user(&mut command);
        command
    };
    let t0 = Instant::now();
    launch::initdb(ctx, bin_17, &new);
    run_ok(&mut pg_upgrade(true), "pg_upgrade --check (live)");
    server.stop();
    run_ok(&mut pg_upgrade(false), "pg_upgrade --copy");
    let upgraded = Postgres::spawn(ctx, bin_17, &new, port);
    launch::wait_accepting(port, Duration::from_millis(1));
    let took = t0.elapsed();
    let downtime = prober.downtime();
    upgraded.stop();
    remove(&dir);
    (took, downtime)
}

/// Row 19.
pub fn upgrade_copy(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let wheel_16 = archives::pypi_wheel();
    let wheel_17 = archives::pypi_wheel_17();
    let install_dir = ctx.fresh_own_dir("upgrade-install");
    let dir = ctx.fresh_dir("upgrade-template");
    let template = dir.join("data");
    let port = ctx.port();
    let source = [std::ffi::OsStr::new("--archive"), wheel_16.as_os_str()];
    let mut pgw = Pgwarden::spawn_from(ctx, &ctx.config, &source, &install_dir, &template, port);
    pgw.wait_ready();
    eprintln!("[bench] upgrade: filling a table of {UPGRADE_ROWS} rows");
    let client = crate::ci::connect(port, USER);
    for sql in crate::backup::FILL {
        let sql = sql.replace("$ROWS", &UPGRADE_ROWS.to_string());
        block_on(client.batch_execute(&sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let row = block_on(client.query_one("SELECT pg_database_size(current_database())", &[]))
        .expect("database size");
    let database_mb = row.get::<_, i64>(0) as f64 / 1e6;
    drop(client);
    pgw.stop();
    let wheel_17_text = wheel_17.display().to_string();
    let mut install = launch::pgwarden_command(ctx);
    install
        .args(["--no-project", "install", "--archive", &wheel_17_text])
        .args(["--version", "17", "--install-dir"])
        .arg(&install_dir);
    run_ok(&mut install, "pgwarden install 17");
    let bin = |version: &str| -> PathBuf { install_dir.join(version).join("bin") };
    let (bin_16, bin_17) = (bin(archives::PG_VERSION), bin(archives::PG17_VERSION));

    let mut total = Row::new(
        "19",
        &format!(
            "`pgwarden upgrade 17 --copy` of a {database_mb:.0} MB 16 cluster → 17 accepting (pre-flight included)"
        ),
        "by hand, same mode: initdb, pg_upgrade --check, fast stop, pg_upgrade --copy, start → accepting",
        Unit::Millis,
    );
    let mut downtime = Row::new(
        "19",
        "of which downtime: last query accepted by 16 → first by 17",
        "same, by hand",
        Unit::Millis,
    );
    for i in 0..runs {
        eprintln!("[bench] upgrade run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            if turn == 0 {
                let (took, down) =
                    with_pgwarden(ctx, &template, &install_dir, (&wheel_16, &wheel_17));
                total.ours.push(ms(took));
                downtime.ours.push(ms(down));
            } else {
                let (took, down) = by_hand(ctx, &template, (&bin_16, &bin_17));
                total.theirs.push(ms(took));
                downtime.theirs.push(ms(down));
            }
        }
    }
    remove(&dir);
    remove(&install_dir);
    vec![total, downtime]
}
