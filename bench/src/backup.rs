//! Issue 18's figures: rows 14 (backup throughput) and 15 (snapshot restore → ready).
//!
//! Row 14: one supervised cluster filled with SQL (a table of a few hundred MB, part random
//! bytes, part repeated text), then, turn about, `pgwarden backup FILE` of the running cluster
//! and three anchors on the same cluster stopped: `tar -cf`, `tar -c | zstd -1` (pgwarden's
//! level) and `tar -c | zstd -3` (the zstd CLI's default). Every figure is MB/s of the same
//! payload: the data directory's files without `pg_wal/` (the anchors leave it out too;
//! pgwarden reads that payload plus the WAL segments from the backup's start to its stop, which
//! count against it). The page cache is warm for all of them.
//!
//! Row 15: a small cluster (a fresh one plus a table of a thousand rows) running under
//! `pgwarden start`, one `pgwarden snapshot save`, then, turn about, `pgwarden snapshot restore`
//! → returned (the server accepts connections again: checked), against the same done by hand
//! on the stopped cluster (`cp -a` of the snapshot, two renames, spawn postgres, 1 ms poll; its
//! last part is the floor of a warm start, also shown) and a pgwarden first launch into an
//! empty directory (template cache warm), the other way back to a known state.

use crate::ctx::{Ctx, remove};
use crate::launch::{self, Pgwarden, Postgres, block_on, ping, time_command};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use pgwarden::pg::probe::PingStatus;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Rows of the generated table: about 360 MB of data directory (without `pg_wal/`).
const ROWS: u32 = 1_800_000;

/// The generated data: 48 random-looking bytes (three md5 digests of distinct texts: nothing
/// for the compressor to find) and 91 bytes of repeated text per row, as real tables mix both.
/// Each its own statement (VACUUM runs outside a transaction block); frozen and checkpointed,
/// so that the files do not change between the runs.
pub(crate) const FILL: [&str; 3] = [
    "CREATE TABLE bench_backup AS \
     SELECT g AS id, \
            decode(md5('a' || g) || md5('b' || g) || md5('c' || g), 'hex') AS noise, \
            repeat('compressible ', 7) AS filler \
     FROM generate_series(1, $ROWS) AS g",
    "VACUUM (FREEZE) bench_backup",
    "CHECKPOINT",
];

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// Bytes of the regular files under `dir`, leaving out `pg_wal/` unless `with_wal` (without
/// it: what every variant of row 14 copies).
fn data_bytes(dir: &Path, with_wal: bool) -> u64 {
    fn walk(dir: &Path, top: bool, with_wal: bool) -> u64 {
        let mut sum = 0;
        for entry in std::fs::read_dir(dir).expect("read data dir").flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if top && !with_wal && entry.file_name() == "pg_wal" {
                continue;
            }
            if meta.is_dir() {
                sum += walk(&entry.path(), false, with_wal);
            } else if meta.is_file() {
                sum += meta.len();
            }
        }
        sum
    }
    walk(dir, true, with_wal)
}

/// `pgwarden ARGS --config … --data-dir DATA`, run to completion; panics with its output on
/// failure.
pub(crate) fn pgwarden(ctx: &Ctx, args: &[&str], data: &Path, extra: &[&str]) -> Duration {
    let mut command = launch::pgwarden_command(ctx);
    command
        .args(args)
        .arg("--config")
        .arg(&ctx.config)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdin(Stdio::null());
    let t0 = Instant::now();
    let output = command.output().expect("run pgwarden");
    let took = t0.elapsed();
    assert!(
        output.status.success(),
        "pgwarden {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// A `tar` pipeline over the stopped cluster `data` into `out`, timed; and the output's size.
fn tar_into(data: &Path, out: &Path, compress: Option<&str>) -> (Duration, u64) {
    let tar = format!("tar -cf - -C '{}' --exclude=./pg_wal/* .", data.display());
    let script = match compress {
        None => format!("{tar} > '{}'", out.display()),
        Some(level) => format!("{tar} | zstd -q {level} -o '{}'", out.display()),
    };
    let took = time_command(Command::new("sh").args(["-ec", &script]), 0);
    let size = std::fs::metadata(out).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(out);
    (took, size)
}

/// Row 14.
pub fn throughput(ctx: &Ctx, runs: usize) -> Vec<Row> {
    assert!(
        Command::new("zstd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "row 14 needs the zstd command (Debian: apt-get install zstd)"
    );
    let dir = ctx.fresh_dir("backup");
    let data = dir.join("data");
    let port = ctx.port();
    let mut pgw = Some(Pgwarden::spawn(ctx, &ctx.install_dir, &data, port));
    pgw.as_mut().expect("running").wait_ready();
    eprintln!("[bench] backup: filling a table of {ROWS} rows");
    let client = crate::ci::connect(port, launch::USER);
    let t0 = Instant::now();
    for sql in FILL {
        let sql = sql.replace("$ROWS", &ROWS.to_string());
        block_on(client.batch_execute(&sql)).unwrap_or_else(|e| {
            let message = e.as_db_error().map(|d| d.message().to_string());
            panic!("{sql}: {}", message.unwrap_or_else(|| e.to_string()))
        });
    }
    drop(client);
    let payload = data_bytes(&data, false);
    eprintln!(
        "[bench] backup: {:.0} MB without pg_wal, filled in {:.1} s",
        payload as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let what = format!(
        "backup of a running cluster ({:.0} MB without pg_wal), MB/s",
        payload as f64 / 1e6
    );
    let mut rows: Vec<Row> = [
        "`tar -cf` of the same cluster, stopped",
        "`tar -c` piped to `zstd -1` (pgwarden's level), stopped",
        "`tar -c` piped to `zstd -3` (the CLI's default), stopped",
    ]
    .iter()
    .map(|anchor| Row::new("14", &what, anchor, Unit::MegabytesPerSecond))
    .collect();
    let mut ratio = Row::new(
        "14",
        "backup: archive size, MB (zstd level 1)",
        "`tar -c` piped to `zstd -3`: archive size, MB",
        Unit::Megabytes,
    );

    let archive = ctx.work.join("bench-backup.tar.zst");
    let plain = ctx.work.join("bench-backup.tar");
    for i in 0..runs {
        eprintln!("[bench] backup run {}/{runs}", i + 1);
        for turn in turns(i, 4) {
            if turn == 0 {
                if pgw.is_none() {
                    let mut fresh = Pgwarden::spawn(ctx, &ctx.install_dir, &data, port);
                    fresh.wait_ready();
                    pgw = Some(fresh);
                }
                let target = archive.display().to_string();
                let took = pgwarden(ctx, &["backup", &target], &data, &[]);
                let size = std::fs::metadata(&archive).expect("archive").len();
                for row in rows.iter_mut() {
                    row.ours.push(mb_per_s(payload, took));
                }
                ratio.ours.push(size as f64 / 1e6);
                let _ = std::fs::remove_file(&archive);
                let _ = std::fs::remove_file(pgwarden::backup::manifest_path(&archive));
                continue;
            }
            if let Some(running) = pgw.take() {
                std::thread::sleep(launch::SETTLE);
                running.stop();
            }
            let (level, out) = match turn {
                1 => (None, &plain),
                2 => (Some("-1"), &archive),
                _ => (Some("-3"), &archive),
            };
            let (took, size) = tar_into(&data, out, level);
            rows[turn - 1].theirs.push(mb_per_s(payload, took));
            if turn == 3 {
                ratio.theirs.push(size as f64 / 1e6);
            }
        }
    }
    if let Some(running) = pgw.take() {
        running.stop();
    }
    remove(&dir);
    rows.push(ratio);
    rows
}

/// The instance `pgwarden start` (or a snapshot restore) put in the background: stopped on
/// drop (immediate), so that a panicking run leaves nothing behind.
struct Background<'a> {
    ctx: &'a Ctx,
    data: PathBuf,
    running: bool,
}

impl Background<'_> {
    fn stop(&mut self) {
        pgwarden(self.ctx, &["stop"], &self.data, &[]);
        self.running = false;
    }
}

impl Drop for Background<'_> {
    fn drop(&mut self) {
        if self.running {
            let mut command = launch::pgwarden_command(self.ctx);
            command
                .args(["stop", "--mode", "immediate", "--config"])
                .arg(&self.ctx.config)
                .arg("--data-dir")
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = command.status();
        }
    }
}

/// `pgwarden start` for the snapshot cluster, in the background.
fn start(ctx: &Ctx, data: &Path, port: u16) {
    let port = port.to_string();
    let archive = ctx.archive.display().to_string();
    let install = ctx.install_dir.display().to_string();
    pgwarden(
        ctx,
        &["start"],
        data,
        &[
            "--port",
            &port,
            "--archive",
            &archive,
            "--install-dir",
            &install,
        ],
    );
}

/// Row 15.
pub fn snapshot_restore(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let dir = ctx.fresh_dir("snapshot");
    let data = dir.join("data");
    let port = ctx.port();
    let mut background = Background {
        ctx,
        data: data.clone(),
        running: true,
    };
    start(ctx, &data, port);
    let client = crate::ci::connect(port, launch::USER);
    block_on(client.batch_execute(
        "CREATE TABLE accounts AS SELECT g AS id, md5(g::text) AS email FROM generate_series(1, 1000) AS g",
    ))
    .expect("fill the small table");
    drop(client);
    // Stops the server, copies the cluster aside and starts it again as it was.
    pgwarden(ctx, &["snapshot", "save", "bench"], &data, &[]);
    let size = data_bytes(&data, true);
    let what = format!(
        "`pgwarden snapshot restore` of a {:.0} MB cluster → returned, accepting",
        size as f64 / 1e6
    );
    let mut floor = Row::new(
        "15",
        &what,
        "floor: warm start of the same cluster (spawn postgres, 1 ms poll)",
        Unit::Millis,
    );
    let mut raw = Row::new(
        "15",
        &what,
        "by hand: `cp -a` of the snapshot, swap by rename, spawn postgres, 1 ms poll (server stopped)",
        Unit::Millis,
    );
    let snapshot = data
        .with_file_name("data.snapshots")
        .join("bench")
        .join("data");
    assert!(
        snapshot.join("PG_VERSION").is_file(),
        "no snapshot at {}",
        snapshot.display()
    );
    let mut first = Row::new(
        "15",
        &what,
        "pgwarden first launch into an empty dir, template cache warm → ready",
        Unit::Millis,
    );
    for i in 0..runs {
        eprintln!("[bench] snapshot restore run {}/{runs}", i + 1);
        for turn in turns(i, 3) {
            match turn {
                0 => {
                    if !background.running {
                        start(ctx, &data, port);
                        background.running = true;
                    }
                    // Not measured: the snapshot's spare copy, made in the background after
                    // the last start.
                    crate::reset::wait_for_spare(
                        &data.with_file_name("data.snapshots").join(".bench.spare"),
                    );
                    let took = ms(pgwarden(ctx, &["snapshot", "restore", "bench"], &data, &[]));
                    assert_eq!(
                        ping(port),
                        PingStatus::Accepting,
                        "not accepting after restore"
                    );
                    floor.ours.push(took);
                    raw.ours.push(took);
                    first.ours.push(took);
                }
                1 => {
                    if background.running {
                        background.stop();
                    }
                    let (staging, old) = (dir.join("staging"), dir.join("old"));
                    let t0 = Instant::now();
                    let mut cp = Command::new("cp");
                    cp.arg("-a").arg(&snapshot).arg(&staging);
                    time_command(&mut cp, 0);
                    std::fs::rename(&data, &old).expect("set the data dir aside");
                    std::fs::rename(&staging, &data).expect("swap the copy in");
                    let spawned = Instant::now();
                    let server = Postgres::spawn(ctx, &ctx.bin, &data, port);
                    let ready = launch::wait_accepting(port, Duration::from_millis(1));
                    floor.theirs.push(ms(ready - spawned));
                    raw.theirs.push(ms(ready - t0));
                    std::thread::sleep(launch::SETTLE);
                    server.stop();
                    remove(&old);
                }
                _ => {
                    let other = ctx.fresh_dir("first");
                    let mut pgw =
                        Pgwarden::spawn(ctx, &ctx.install_dir, &other.join("data"), ctx.port());
                    first.theirs.push(ms(pgw.wait_ready() - pgw.started));
                    pgw.stop();
                    remove(&other);
                }
            }
        }
    }
    if background.running {
        background.stop();
    }
    remove(&dir);
    vec![floor, raw, first]
}
