//! Row 21 (issue 29): the pool of throwaway clusters. `start --ephemeral --port 0` → ready when
//! the pool holds an entry for the settings (the previous server made it before its stop),
//! against the same start with the pool off (`PGWARDEN_EPHEMERAL_POOL=0`: a copy of the
//! template); and 50 concurrent `start --ephemeral --port 0` → all ready, then 50 stops,
//! checking that nothing but the bounded pool is left.

use crate::ctx::Ctx;
use crate::launch;
use crate::stats::{Row, Unit, ms};
use crate::turns;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The user's pool directory (as pgwarden names it).
fn pool_dir() -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/pgwarden-{}.pool",
        nix::unistd::geteuid().as_raw()
    ))
}

/// The ready entries in the pool for the templates of `ctx`'s install directory (other
/// settings' entries, from other installs, do not count): directories holding a `spare.json`
/// that are neither being made nor claimed.
fn ready_entries(ctx: &Ctx) -> usize {
    let keys: Vec<String> = std::fs::read_dir(ctx.install_dir.join("templates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| format!("{}.", pgwarden::cluster::spare::pool::key(&t.path())))
        .collect();
    std::fs::read_dir(pool_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            keys.iter().any(|key| name.starts_with(key))
                && !name.contains(".work-")
                && !name.contains(".claimed-")
                && e.path().join("spare.json").is_file()
        })
        .count()
}

/// `pgwarden start --ephemeral --port 0 --name NAME` with `pool` (the `ephemeral_pool`
/// setting); how long it took to return (ready).
fn start(ctx: &Ctx, name: &str, pool: u32) -> Duration {
    let mut command = start_command(ctx, name, pool);
    let t0 = Instant::now();
    let output = command.output().expect("run pgwarden start");
    let took = t0.elapsed();
    assert!(
        output.status.success(),
        "pgwarden start failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

fn start_command(ctx: &Ctx, name: &str, pool: u32) -> std::process::Command {
    let mut command = launch::pgwarden_command(ctx);
    command
        .arg("start")
        .arg("--config")
        .arg(&ctx.config)
        .arg("--archive")
        .arg(&ctx.archive)
        .arg("--install-dir")
        .arg(&ctx.install_dir)
        .args(["--ephemeral", "--port", "0", "--name", name])
        .env("PGWARDEN_EPHEMERAL_POOL", pool.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

fn stop(ctx: &Ctx, name: &str) {
    let mut command = stop_command(ctx, name);
    assert!(command.status().expect("run pgwarden stop").success());
}

fn stop_command(ctx: &Ctx, name: &str) -> std::process::Command {
    let mut command = launch::pgwarden_command(ctx);
    command
        .arg("stop")
        .arg("--config")
        .arg(&ctx.config)
        .args(["--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Runs the commands at once (50 processes); waits for all, each must succeed.
fn all_at_once(commands: Vec<std::process::Command>) {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut c| c.stderr(Stdio::null()).spawn().expect("spawn pgwarden"))
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait for pgwarden").success());
    }
}

/// Waits (unmeasured) until the pool holds `n` ready entries.
pub(crate) fn wait_for_entries(ctx: &Ctx, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_entries(ctx) < n {
        assert!(Instant::now() < deadline, "no pool entry after 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Row 21a: start from a pool entry vs start copying the template; row 21b: 50 concurrent
/// starts → all ready (nothing left after the 50 stops but the bounded pool).
pub fn pool(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let _ = std::fs::remove_dir_all(pool_dir());
    let mut single = Row::new(
        "21a",
        "`start --ephemeral --port 0` → ready, a pool entry ready",
        "same, `PGWARDEN_EPHEMERAL_POOL=0` (template copy)",
        Unit::Millis,
    );
    let name = format!("bench-pool-{}", std::process::id());
    // One unmeasured launch makes the first entry.
    start(ctx, &name, 1);
    wait_for_entries(ctx, 1);
    stop(ctx, &name);
    for i in 0..runs {
        eprintln!("[bench] pool start run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            let pool = if turn == 0 { 1 } else { 0 };
            let took = start(ctx, &name, pool);
            if turn == 0 {
                // The entry taken; the next one is made before the stop (unmeasured).
                wait_for_entries(ctx, 1);
                single.ours.push(ms(took));
            } else {
                single.theirs.push(ms(took));
            }
            stop(ctx, &name);
        }
    }

    let mut fifty = Row::new(
        "21b",
        "50 concurrent `start --ephemeral --port 0` → all ready (pool of 1)",
        "one such start, pool off",
        Unit::Millis,
    );
    for i in 0..runs.min(3) {
        eprintln!("[bench] 50 concurrent ephemeral starts, run {}", i + 1);
        let names: Vec<String> = (0..50)
            .map(|n| format!("bench-fifty-{}-{n}", std::process::id()))
            .collect();
        let t0 = Instant::now();
        all_at_once(names.iter().map(|n| start_command(ctx, n, 1)).collect());
        fifty.ours.push(ms(t0.elapsed()));
        all_at_once(names.iter().map(|n| stop_command(ctx, n)).collect());
        // Each stop returns with its root moved aside (`….removed-…`); detached sweepers remove
        // them, unmeasured: nothing may be left once they are done (10 s at most).
        let left = || -> Vec<String> {
            std::fs::read_dir("/dev/shm")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.contains("bench-fifty-"))
                .collect()
        };
        assert!(
            left().iter().all(|n| n.contains(".removed-")),
            "left after 50 stops: {:?}",
            left()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            left().is_empty(),
            "not removed 10 s after 50 stops: {:?}",
            left()
        );
        assert!(
            ready_entries(ctx) <= 1,
            "the pool holds {} entries",
            ready_entries(ctx)
        );
        fifty.theirs.push(ms(start(ctx, &name, 0)));
        stop(ctx, &name);
    }
    vec![single, fifty]
}
