//! Issue 28's figures: row 20 (`pgwarden backup verify`).
//!
//! One supervised cluster filled with SQL (row 14's table, `ROWS` rows, plus a B-tree index on
//! it, and pgbench's tables at scale 5), one `pgwarden backup`. Then, turn about:
//! - `pgwarden backup verify FILE` → exit 0 (restore into /dev/shm, replay, amcheck of every
//!   database) against `pgwarden restore FILE --no-start` of the same backup into a new data
//!   directory beside the harness's others (restore alone: the manifest check and the unpack);
//! - pgbench TPC-B-like (4 clients) on the running server while verifications of that backup run
//!   one after another, against the same pgbench with nothing else running. The targets:
//!   verify ≤ 1.5× restore alone, tps during a verify ≥ 0.9× without.

use crate::ctx::{Ctx, remove};
use crate::launch::{self, Pgwarden, block_on};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Row 20; `rows` sizes the table (5 000 000 rows: about 1 GB of data directory).
pub fn verify(ctx: &Ctx, runs: usize, rows: u32, pgbench_secs: Duration) -> Vec<Row> {
    let dir = ctx.fresh_dir("verify");
    let data = dir.join("data");
    let port = ctx.port();
    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, &data, port);
    pgw.wait_ready();
    eprintln!("[bench] verify: filling a table of {rows} rows");
    let client = crate::ci::connect(port, launch::USER);
    let fill = crate::backup::FILL
        .iter()
        .map(|sql| sql.replace("$ROWS", &rows.to_string()))
        .chain(["CREATE INDEX bench_backup_id ON bench_backup (id)".to_string()]);
    for sql in fill {
        block_on(client.batch_execute(&sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(client);
    crate::pgbench(port, &["-i", "-q", "-s", "5"]);
    let archive = ctx.work.join("bench-verify.tar.zst");
    let target = archive.display().to_string();
    crate::backup::pgwarden(ctx, &["backup", &target], &data, &[]);
    let manifest = pgwarden::backup::manifest::Manifest::read_for(&archive).expect("manifest");
    let what = format!(
        "`pgwarden backup verify` of a {:.0} MB backup → exit 0",
        manifest.total_bytes as f64 / 1e6
    );
    let mut against_restore = Row::new(
        "20",
        &what,
        "`pgwarden restore --no-start` of the same backup (restore alone)",
        Unit::Millis,
    );
    let secs = pgbench_secs.as_secs().to_string();
    let mut tps = Row::new(
        "20",
        &format!("pgbench TPC-B-like, 4 clients, {secs} s, while verifications run"),
        "the same pgbench, nothing else running",
        Unit::Tps,
    );
    let port_text = port.to_string();
    let (source, install) = (
        ctx.archive.display().to_string(),
        ctx.install_dir.display().to_string(),
    );
    for i in 0..runs {
        eprintln!("[bench] verify run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            if turn == 0 {
                let took = crate::backup::pgwarden(ctx, &["backup", "verify", &target], &data, &[]);
                against_restore.ours.push(ms(took));
            } else {
                let other = ctx.fresh_dir("verify-restore");
                let took = crate::backup::pgwarden(
                    ctx,
                    &["restore", &target, "--no-start"],
                    &other.join("data"),
                    &[
                        "--port",
                        &port_text,
                        "--archive",
                        &source,
                        "--install-dir",
                        &install,
                    ],
                );
                against_restore.theirs.push(ms(took));
                remove(&other);
            }
        }
        for turn in turns(i, 2) {
            let args = ["-n", "-c", "4", "-j", "2", "-T", secs.as_str()];
            if turn == 0 {
                let running = AtomicBool::new(true);
                // The harness's context stays on this thread: the verifier gets the command.
                let (exe, config) = (ctx.pgwarden.clone(), ctx.config.clone());
                let n = std::thread::scope(|scope| {
                    let verifier = scope.spawn(|| {
                        let mut n = 0;
                        while running.load(Ordering::Relaxed) {
                            let mut command = std::process::Command::new(&exe);
                            command.env("NO_COLOR", "1");
                            for (key, _) in std::env::vars_os() {
                                let name = key.to_string_lossy();
                                if name.starts_with("POSTGRES_") || name.starts_with("PGWARDEN_") {
                                    command.env_remove(&key);
                                }
                            }
                            let status = command
                                .args(["backup", "verify", &target, "--config"])
                                .arg(&config)
                                .arg("--data-dir")
                                .arg(&data)
                                .stdout(std::process::Stdio::null())
                                .status()
                                .expect("run pgwarden backup verify");
                            assert!(status.success(), "backup verify failed: {status}");
                            n += 1;
                        }
                        n
                    });
                    // The first verification under way (its restore) before pgbench starts.
                    std::thread::sleep(Duration::from_millis(500));
                    tps.ours.push(crate::pgbench(port, &args));
                    running.store(false, Ordering::Relaxed);
                    verifier.join().expect("the verifier thread")
                });
                eprintln!("[bench] verify: {n} verification(s) during pgbench");
            } else {
                tps.theirs.push(crate::pgbench(port, &args));
            }
        }
    }
    pgw.stop();
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_file(pgwarden::backup::manifest_path(&archive));
    remove(&dir);
    vec![against_restore, tps]
}
