//! Issue 7's figures (rows 10–11): a throwaway server for a CI job, with and without the
//! template cluster cache, and the cost of one per-test database cloned from a template.

use crate::ctx::{Ctx, remove};
use crate::launch::{self, PASSWORD, Pgwarden, USER, block_on};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The prepared template every clone copies: a table of this many rows.
const TEMPLATE: &str = "bench_template";
const TEMPLATE_ROWS: u32 = 1000;

/// `pgwarden start --ephemeral --port 0 --name NAME`, stopped with `pgwarden stop` (also on a
/// panic, through its guard).
struct Started<'a> {
    ctx: &'a Ctx,
    name: String,
    pub port: u16,
    running: bool,
}

impl<'a> Started<'a> {
    /// Runs `pgwarden start …`; returns the instance and how long the command took.
    fn start(ctx: &'a Ctx, name: &str) -> (Started<'a>, Duration) {
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
            .stdin(Stdio::null());
        let t0 = Instant::now();
        let output = command.output().expect("run pgwarden start");
        let took = t0.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "pgwarden start failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = stdout
            .lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .and_then(|url| url.rsplit_once(':'))
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no port in the DATABASE_URL line: {stdout}"));
        let started = Started {
            ctx,
            name: name.to_string(),
            port,
            running: true,
        };
        (started, took)
    }

    /// The flags that address this instance.
    fn instance_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.ctx.config.display().to_string(),
            "--name".into(),
            self.name.clone(),
        ]
    }

    fn stop(mut self) {
        self.running = false;
        let mut command = launch::pgwarden_command(self.ctx);
        command.arg("stop").args(self.instance_args());
        launch::time_command(&mut command, 0);
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if self.running {
            let mut command = launch::pgwarden_command(self.ctx);
            command
                .arg("stop")
                .args(self.instance_args())
                .args(["--mode", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = command.status();
        }
    }
}

/// Fills the template cluster cache: an ephemeral first launch keeps its new cluster there.
pub fn warm_template_cache(ctx: &Ctx) {
    let (started, _) = Started::start(ctx, &format!("bench-primer-{}", std::process::id()));
    started.stop();
    assert!(
        ctx.install_dir.join("templates").is_dir(),
        "an ephemeral first launch kept no template cluster"
    );
}

/// Row 10: `pgwarden start --ephemeral --port 0` → returned (ready), with the template
/// cluster cache vs without it (`<install dir>/templates` removed before the run).
pub fn ephemeral_start(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let mut row = Row::new(
        "10",
        "`pgwarden start --ephemeral --port 0` → returned (ready), template cache warm",
        "same, template cache removed before each run",
        Unit::Millis,
    );
    let name = format!("bench-{}", std::process::id());
    for i in 0..runs {
        eprintln!("[bench] ephemeral start run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            if turn == 1 {
                remove(&ctx.install_dir.join("templates"));
            }
            let (started, took) = Started::start(ctx, &name);
            started.stop();
            if turn == 0 {
                row.ours.push(ms(took));
            } else {
                row.theirs.push(ms(took));
            }
        }
    }
    vec![row]
}

/// Row 11: one per-test database cloned from a small prepared template, `STRATEGY FILE_COPY`
/// vs `WAL_LOG`, timed in-process over one open connection, on a throwaway instance and on a
/// persistent one (fsync on); and `pgwarden db create --template` as a process, for scale.
pub fn clones(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let default = default_strategy(ctx);
    let mut rows = Vec::new();

    eprintln!("[bench] clones on an ephemeral instance ({runs} each)");
    let name = format!("bench-clones-{}", std::process::id());
    let (started, _) = Started::start(ctx, &name);
    rows.extend(clone_rows(
        ctx,
        "ephemeral",
        started.port,
        &started.instance_args(),
        &default,
        runs,
    ));
    started.stop();

    eprintln!("[bench] clones on a persistent instance ({runs} each)");
    let dir = ctx.fresh_dir("clones");
    let data = dir.join("data");
    let port = ctx.port();
    let mut pgw = Pgwarden::spawn(ctx, &ctx.install_dir, &data, port);
    pgw.wait_ready();
    let args = [
        "--config".to_string(),
        ctx.config.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    rows.extend(clone_rows(
        ctx,
        "persistent (fsync on)",
        port,
        &args,
        &default,
        runs,
    ));
    pgw.stop();
    remove(&dir);
    rows
}

/// `pgwarden db create`'s default `--strategy`, from its help text.
fn default_strategy(ctx: &Ctx) -> String {
    let output = Command::new(&ctx.pgwarden)
        .args(["db", "create", "--help"])
        .output()
        .expect("run pgwarden db create --help");
    let help = String::from_utf8_lossy(&output.stdout);
    let after = help.split("--strategy").nth(1).unwrap_or_default();
    after
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or("file-copy")
        .to_string()
}

fn clone_rows(
    ctx: &Ctx,
    kind: &str,
    port: u16,
    instance_args: &[String],
    default: &str,
    runs: usize,
) -> Vec<Row> {
    let client = connect(port, "postgres");
    prepare_template(&client, port);
    let mut strategies = Row::new(
        "11",
        &format!("clone of a {TEMPLATE_ROWS}-row template, {kind}: `STRATEGY FILE_COPY`"),
        "`STRATEGY WAL_LOG`",
        Unit::Millis,
    );
    let mut process = Row::new(
        "11",
        &format!("clone, {kind}: `pgwarden db create --template` process (default {default})"),
        "the same strategy in-process",
        Unit::Millis,
    );
    let mut sample = 0;
    for i in 0..runs {
        for turn in turns(i, 3) {
            sample += 1;
            let db = format!("bench_clone_{sample}");
            // Each clone starts from the same clean state: no dirty buffers of the last one.
            run_sql(&client, "CHECKPOINT");
            match turn {
                0 | 1 => {
                    let strategy = if turn == 0 { "FILE_COPY" } else { "WAL_LOG" };
                    let t0 = Instant::now();
                    run_sql(
                        &client,
                        &format!("CREATE DATABASE {db} TEMPLATE {TEMPLATE} STRATEGY {strategy}"),
                    );
                    let took = ms(t0.elapsed());
                    if turn == 0 {
                        strategies.ours.push(took);
                    } else {
                        strategies.theirs.push(took);
                    }
                    if strategy.eq_ignore_ascii_case(&default.replace('-', "_")) {
                        process.theirs.push(took);
                    }
                }
                _ => {
                    let mut command = launch::pgwarden_command(ctx);
                    command
                        .args(["db", "create", &db, "--template", TEMPLATE])
                        .args(instance_args);
                    process.ours.push(ms(launch::time_command(&mut command, 0)));
                }
            }
            run_sql(&client, &format!("DROP DATABASE {db}"));
        }
    }
    vec![strategies, process]
}

pub fn connect(port: u16, dbname: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname(dbname)
        .application_name("pgwarden-bench");
    let (client, connection) =
        block_on(config.connect(tokio_postgres::NoTls)).expect("connect to the server");
    block_on(async {
        tokio::spawn(connection);
    });
    client
}

fn run_sql(client: &tokio_postgres::Client, sql: &str) {
    block_on(client.batch_execute(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The template a test suite would migrate once: one table of `TEMPLATE_ROWS` rows.
fn prepare_template(client: &tokio_postgres::Client, port: u16) {
    run_sql(client, &format!("CREATE DATABASE {TEMPLATE}"));
    let template = connect(port, TEMPLATE);
    run_sql(
        &template,
        &format!(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now());\n\
             INSERT INTO items (id, name) SELECT n, 'item ' || n FROM generate_series(1, {TEMPLATE_ROWS}) AS n;\n\
             ANALYZE items;"
        ),
    );
    // A template must have no open connections while it is copied.
    drop(template);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let rows = block_on(client.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = $1",
            &[&TEMPLATE],
        ))
        .expect("pg_stat_activity");
        if rows.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the template's connection did not go away");
}

/// Row 12: `pgwarden exec --ephemeral -- true` (a throwaway server for one command: start,
/// run, remove) against row 10's `start --ephemeral --port 0` plus `stop`, template cache warm.
pub fn exec_ephemeral(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let mut row = Row::new(
        "12",
        "`pgwarden exec --ephemeral -- true` → returned (start, run, remove), a pool entry ready",
        "`start --ephemeral --port 0` + `stop`, a pool entry ready",
        Unit::Millis,
    );
    let name = format!("bench-exec-{}", std::process::id());
    for i in 0..runs {
        eprintln!("[bench] exec --ephemeral run {}/{runs}", i + 1);
        for turn in turns(i, 2) {
            // Both sides start from a pool entry: the one the previous turn's detached maker
            // made (waited for, not measured); else whichever side follows the other's stop
            // finds that maker still copying.
            crate::pool::wait_for_entries(ctx, 1);
            if turn == 0 {
                let mut command = launch::pgwarden_command(ctx);
                command
                    .arg("exec")
                    .arg("--config")
                    .arg(&ctx.config)
                    .arg("--archive")
                    .arg(&ctx.archive)
                    .arg("--install-dir")
                    .arg(&ctx.install_dir)
                    .args(["--ephemeral", "--", "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let t0 = Instant::now();
                let status = command.status().expect("run pgwarden exec");
                assert!(status.success(), "pgwarden exec --ephemeral -- true failed");
                row.ours.push(ms(t0.elapsed()));
            } else {
                let t0 = Instant::now();
                let (started, _) = Started::start(ctx, &name);
                started.stop();
                row.theirs.push(ms(t0.elapsed()));
            }
        }
    }
    vec![row]
}
