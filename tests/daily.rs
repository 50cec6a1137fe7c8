//! The daily commands against a real server and against none: wait, status, stop, url, env,
//! psql, logs, check --query, doctor, completions.

mod common;

use common::{Pgwarden, free_port, test_dir};
use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn run_args<'a>(data: &'a str, port: &'a str, archive: &'a str, install: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--archive",
        archive,
        "--install-dir",
        install,
        "--data-dir",
        data,
        "--port",
        port,
    ]
}

/// `pgwarden run` on a fresh data dir; returns the guard once it is ready.
fn start(data: &Path, port: u16) -> Pgwarden {
    let archive = common::npm_archive();
    let install = common::shared_install_dir();
    let port = port.to_string();
    let args = run_args(
        data.to_str().unwrap(),
        &port,
        archive.to_str().unwrap(),
        install.to_str().unwrap(),
    );
    let pgwarden = Pgwarden::start(&args, &[]);
    pgwarden.wait_ready(LONG);
    pgwarden
}

fn pgw(args: &[&str]) -> Output {
    pgw_env(args, &[])
}

/// Runs a short pgwarden command to completion. Not through `run_to_exit`: its guard kills the
/// postmaster of any `--data-dir` it was given, and these commands address a running server.
fn pgw_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("POSTGRES_USER")
        .env_remove("POSTGRES_DB")
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::output_within(child, LONG)
        .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {LONG:?}"));
    eprintln!("[test] pgwarden {} -> {:?}", args.join(" "), out);
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn status_json(data: &str) -> (serde_json::Value, i32) {
    let out = pgw(&["status", "--json", "--data-dir", data]);
    let value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out:?}"));
    (value, code(&out))
}

/// Alive and not a zombie.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Live processes whose working directory is `data_dir` (a postmaster and its backends).
fn processes_in(data_dir: &Path) -> Vec<String> {
    let data_dir = std::fs::canonicalize(data_dir).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir))
        .filter(|e| alive(e.file_name().to_str().unwrap().parse().unwrap()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn wait_status_stop_lifecycle() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = free_port();
    let p = port.to_string();

    // `wait` first, before any server exists.
    let mut wait = Pgwarden::start(
        &["wait", "--timeout", "120s", "--port", &p],
        &[("PGWARDEN_DATA_DIR", d)],
    );
    let (before, rc) = status_json(d);
    assert_eq!(
        (before["running"].as_bool(), rc),
        (Some(false), 3),
        "{before}"
    );
    assert!(
        !wait.has_exited(),
        "wait returned before the server existed"
    );

    let mut server = start(&data, port);
    assert!(wait.wait_exit(LONG).success(), "{}", wait.stderr_text());
    assert_eq!(
        wait.stdout_text(),
        format!("127.0.0.1:{port} - accepting connections")
    );
    // When wait returned, the server was ready: a check right after must agree.
    let check = pgw(&["check", "--data-dir", d]);
    assert_eq!(
        (stdout(&check), code(&check)),
        (format!("127.0.0.1:{port} - accepting connections"), 0)
    );

    let (status, rc) = status_json(d);
    assert_eq!(rc, 0, "{status}");
    assert_eq!(status["running"], true);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["supervisor_pid"].as_u64(), Some(server.pid() as u64));
    let postmaster = status["postmaster_pid"].as_i64().expect("postmaster pid");
    assert!(alive(postmaster));
    assert_eq!(status["port"].as_u64(), Some(port as u64));
    assert_eq!(status["listen_address"], "127.0.0.1");
    assert_eq!(status["restarts"], 0);
    assert!(
        status["postgresql_version"]
            .as_str()
            .unwrap()
            .starts_with("16."),
        "{status}"
    );
    assert_eq!(status["data_dir"].as_str(), Some(d));
    assert!(status["uptime_ms"].as_u64().is_some());
    let text = pgw(&["status", "--data-dir", d]);
    assert!(stdout(&text).starts_with("pgwarden: ready"), "{text:?}");
    assert!(
        stdout(&text).contains(&format!("postmaster pid  {postmaster}")),
        "{text:?}"
    );

    // A crash is counted and its exit recorded.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(postmaster as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = pgw(&["wait", "--timeout", "120s", "--data-dir", d]);
    assert_eq!(code(&again), 0, "{again:?}");
    let (status, _) = status_json(d);
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(status["last_exit"]["signal"], 9, "{status}");
    assert_eq!(status["last_exit"]["from_outside"], true, "{status}");
    assert_eq!(
        status["last_exit"]["text"], "signal 9 (SIGKILL), sent from outside pgwarden",
        "{status}"
    );
    assert_eq!(status["failed_starts"], 0, "{status}");
    assert_ne!(status["postmaster_pid"].as_i64(), Some(postmaster));

    // stop: exits 0 once pgwarden and postgres are gone.
    let postmaster = status["postmaster_pid"].as_i64().unwrap();
    let stop = pgw(&["stop", "--data-dir", d]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(stdout(&stop).contains("fast shutdown"), "{stop:?}");
    assert!(server.wait_exit(LONG).success());
    assert!(!alive(postmaster), "postmaster {postmaster} survived stop");
    assert_eq!(
        processes_in(&data),
        Vec::<String>::new(),
        "processes left in the data dir"
    );
    let (after, rc) = status_json(d);
    assert_eq!(
        (after["running"].as_bool(), rc),
        (Some(false), 3),
        "{after}"
    );

    // Without a server: `stop` has nothing to do (exit 0, like compose's `down`), `status`
    // says so with exit 3.
    let stop = pgw(&["stop", "--data-dir", d]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(stdout(&stop).contains("not running"), "{stop:?}");
    let status = pgw(&["status", "--data-dir", d]);
    assert_eq!(code(&status), 3, "{status:?}");
    assert!(
        stderr(&status).contains("no pgwarden is running"),
        "{status:?}"
    );
    let wait = pgw(&["wait", "--timeout", "300ms", "--data-dir", d]);
    assert_eq!(code(&wait), 1, "{wait:?}");
    assert!(
        stderr(&wait).contains("timed out after 300 ms: no pgwarden is running"),
        "{wait:?}"
    );
    let psql = pgw(&["psql", "--data-dir", d, "-c", "select 1"]);
    assert_eq!(code(&psql), 3, "{psql:?}");
    let check = pgw(&["check", "--data-dir", d, "-p", &p]);
    assert_eq!(
        (stdout(&check), code(&check)),
        (format!("127.0.0.1:{port} - no response"), 2)
    );
    // The log outlives the server.
    let logs = pgw(&["logs", "--data-dir", d]);
    assert!(stdout(&logs).contains("postgres stopped"), "{logs:?}");
}

#[test]
fn daily_commands_against_a_running_server() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = free_port();
    let server = start(&data, port);

    // url / env
    let url = pgw(&["url", "--data-dir", d]);
    assert_eq!(
        stdout(&url),
        format!("postgres://trader@127.0.0.1:{port}/trader")
    );
    assert!(stderr(&url).is_empty(), "{url:?}");
    let url = pgw(&["url", "--with-password", "--data-dir", d]);
    assert_eq!(
        stdout(&url),
        format!("postgres://trader:trader@127.0.0.1:{port}/trader")
    );
    let env = pgw(&["env", "--data-dir", d]);
    let vars: HashMap<String, String> = stdout(&env)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(vars["PGPORT"], port.to_string());
    assert_eq!(vars["PGHOST"], "127.0.0.1");
    assert_eq!(vars["PGUSER"], "trader");
    assert_eq!(vars["PGDATABASE"], "trader");
    assert!(!vars.contains_key("PGPASSWORD"));
    let shell = pgw(&["env", "--shell", "--with-password", "--data-dir", d]);
    assert!(
        stdout(&shell).lines().all(|l| l.starts_with("export ")),
        "{shell:?}"
    );
    assert!(
        stdout(&shell).contains("export PGPASSWORD='trader'"),
        "{shell:?}"
    );
    // The exported variables work for a real client.
    let script = format!(
        "eval \"$({} env --shell --with-password --data-dir {d})\" && psql -Atc 'select 6*7'",
        env!("CARGO_BIN_EXE_pgwarden")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");

    // psql
    let psql = pgw(&[
        "psql",
        "--data-dir",
        d,
        "-Atc",
        "select current_user || '@' || current_database()",
    ]);
    assert_eq!(
        (stdout(&psql), code(&psql)),
        ("trader@trader".to_string(), 0),
        "{psql:?}"
    );
    let no_psql = pgw_env(
        &["psql", "--data-dir", d, "-c", "select 1"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(code(&no_psql), 1, "{no_psql:?}");
    assert!(stderr(&no_psql).contains("no psql found"), "{no_psql:?}");
    assert!(
        stderr(&no_psql).contains("postgresql-client"),
        "{no_psql:?}"
    );

    // check --query
    let q = pgw(&["check", "--query", "--data-dir", d]);
    assert_eq!(code(&q), 0, "{q:?}");
    assert!(stdout(&q).contains("SELECT 1 ok"), "{q:?}");
    let q = pgw_env(
        &["check", "--query", "--data-dir", d],
        &[("POSTGRES_PASSWORD", "wrong")],
    );
    assert_eq!(code(&q), 4, "{q:?}");
    assert!(stdout(&q).contains("wrong password"), "{q:?}");
    let q = pgw(&["check", "--query", "--data-dir", d, "-d", "nosuchdb"]);
    assert_eq!(code(&q), 5, "{q:?}");
    assert!(
        stdout(&q).contains("database \"nosuchdb\" does not exist"),
        "{q:?}"
    );
    let q = pgw(&[
        "check",
        "--query",
        "--data-dir",
        d,
        "-p",
        &free_port().to_string(),
    ]);
    assert_eq!(code(&q), 2, "{q:?}");
    assert!(stdout(&q).ends_with("no response"), "{q:?}");

    // logs, and logs -f seeing a line written after it started
    let logs = pgw(&["logs", "-n", "3", "--data-dir", d]);
    assert_eq!(stdout(&logs).lines().count(), 3, "{logs:?}");
    let all = pgw(&["logs", "--data-dir", d]);
    assert!(
        stdout(&all).contains("database system is ready to accept connections"),
        "{all:?}"
    );
    assert!(stdout(&all).contains("to=Ready"), "{all:?}");
    // The data dir through the environment: the guard kills the postmaster of a --data-dir.
    let follow = Pgwarden::start(&["logs", "-f", "-n", "1"], &[("PGWARDEN_DATA_DIR", d)]);
    // Once the old lines are out, a line written now can only come by following.
    follow.wait_for_stdout("", LONG);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    follow.wait_for_stdout("reloading configuration files", LONG);
    drop(follow);

    // doctor, with the server running
    let doctor = pgw(&["doctor", "--data-dir", d, "--port", &port.to_string()]);
    assert_eq!(code(&doctor), 0, "{doctor:?}");
    let text = stdout(&doctor);
    for check in [
        "config",
        "user",
        "timezone data",
        "locale",
        "port",
        "data dir",
        "disk",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok   ") && l.contains(&format!(" {check}:"))),
            "{check}: {text}"
        );
    }
    assert!(text.contains("served by the running pgwarden"), "{text}");

    // stop --mode immediate
    let stop = pgw(&["stop", "--mode", "immediate", "--data-dir", d]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    let logs = pgw(&["logs", "--data-dir", d]);
    assert!(
        stdout(&logs).contains("received immediate shutdown request"),
        "{logs:?}"
    );
    assert_eq!(processes_in(&data), Vec::<String>::new());
}

#[test]
fn doctor_reports_what_would_fail() {
    let dir = test_dir();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let doctor = pgw(&[
        "doctor",
        "--data-dir",
        data.to_str().unwrap(),
        "--port",
        &port,
    ]);
    assert_eq!(code(&doctor), 1, "{doctor:?}");
    let text = stdout(&doctor);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL port:") && l.contains(&port)),
        "{text}"
    );
    assert!(text.contains("PostgreSQL 15 cluster"), "{text}");
    assert!(text.contains("mode"), "{text}");
}

#[test]
fn commands_without_a_server_read_the_config() {
    let dir = test_dir();
    let port = free_port();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(
        &config,
        format!("port = {port}\ndata_dir = \"data\"\nuser = \"app\"\npassword = \"p@ss word\"\n"),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let url = pgw(&["url", "--with-password", "--config", c]);
    assert_eq!(
        stdout(&url),
        format!("postgres://app:p%40ss%20word@127.0.0.1:{port}/app")
    );
    assert!(stderr(&url).contains("no pgwarden is running"), "{url:?}");
    let check = pgw(&["check", "--config", c]);
    assert_eq!(
        (stdout(&check), code(&check)),
        (format!("127.0.0.1:{port} - no response"), 2)
    );
    let logs = pgw(&["logs", "--config", c]);
    assert_eq!(code(&logs), 1, "{logs:?}");
    assert!(stderr(&logs).contains("pgwarden has not run"), "{logs:?}");
    let (status, rc) = status_json_config(c);
    assert_eq!((status["running"].as_bool(), rc), (Some(false), 3));
    for shell in ["bash", "zsh", "fish"] {
        let out = pgw(&["completions", shell]);
        assert_eq!(code(&out), 0, "{out:?}");
        assert!(
            stdout(&out).contains("pgwarden") && stdout(&out).contains("check"),
            "{shell}"
        );
    }
}

fn status_json_config(config: &str) -> (serde_json::Value, i32) {
    let out = pgw(&["status", "--json", "--config", config]);
    (serde_json::from_str(&stdout(&out)).unwrap(), code(&out))
}
