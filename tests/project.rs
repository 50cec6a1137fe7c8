//! The project file and the compose-style day: `pgwarden.toml` found from a subdirectory,
//! `start` twice, `ls`, `exec`, `restart`, `reload`, `stop` twice, `reset` then `start`; two
//! projects side by side; names that cannot collide; a changed password followed by `url`,
//! `psql` and `check --query`; the template filled in the background after a persistent first
//! launch, which `reset` + `start` copies, and a stop in the middle of that fill.
//!
//! Every test has its own data root (`PGWARDEN_DATA_ROOT`) and registry
//! (`PGWARDEN_RUNTIME_DIR`), so `ls` lists only its own instances, and a guard that stops
//! every instance of that registry when the test ends, failed or not.

mod common;

use common::{free_port, test_dir};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(180);

/// One test's private pgwarden world: data root, registry, binaries.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data_root: PathBuf,
    runtime: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = test_dir();
        let root = tmp.path().to_path_buf();
        let data_root = root.join("data-root");
        let runtime = root.join("runtime");
        for dir in [&data_root, &runtime] {
            std::fs::create_dir_all(dir).unwrap();
            common::set_mode(dir, 0o755);
        }
        World {
            _tmp: tmp,
            root,
            data_root,
            runtime,
        }
    }

    /// A project directory `name` with `pgwarden.toml` = `toml` and a `src/` subdirectory.
    fn project(&self, name: &str, toml: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        common::set_mode(&dir, 0o755);
        std::fs::write(dir.join("pgwarden.toml"), toml).unwrap();
        dir
    }

    /// `pgwarden ARGS` in `cwd`, to completion.
    fn pgw(&self, cwd: &Path, args: &[&str]) -> Output {
        self.pgw_env(cwd, args, &[])
    }

    fn pgw_env(&self, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let archive = common::npm_archive();
        let install = common::shared_install_dir();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"));
        command.args(args).current_dir(cwd);
        for (key, _) in std::env::vars() {
            if key.starts_with("PGWARDEN_") || key.starts_with("POSTGRES_") || key == "PGDATA" {
                command.env_remove(key);
            }
        }
        command
            .env("NO_COLOR", "1")
            .env("PGWARDEN_DATA_ROOT", &self.data_root)
            .env("PGWARDEN_RUNTIME_DIR", &self.runtime)
            .env("PGWARDEN_ARCHIVE", &archive)
            .env("PGWARDEN_INSTALL_DIR", &install)
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = common::output_within(command.spawn().unwrap(), LONG)
            .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {LONG:?}"));
        eprintln!(
            "[test] (in {}) pgwarden {} -> {:?}",
            cwd.display(),
            args.join(" "),
            out
        );
        out
    }

    /// The instances `ls --json` reports.
    fn ls(&self) -> Vec<serde_json::Value> {
        let out = self.pgw(&self.root, &["ls", "--json"]);
        assert_eq!(code(&out), 0, "{out:?}");
        serde_json::from_str::<serde_json::Value>(&stdout(&out))
            .unwrap_or_else(|e| panic!("ls --json is not JSON ({e}): {out:?}"))
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for World {
    /// Stops every instance this world's registry knows, then kills what is left in its data.
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.runtime)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(state_dir) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(state_dir.join("lock")) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<i32>() else {
                continue;
            };
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(20);
                while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        common::kill_processes_under(&self.root);
    }
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

fn psql_value(world: &World, cwd: &Path, sql: &str) -> String {
    let out = world.pgw(cwd, &["exec", "--", "psql", "-XAtc", sql]);
    assert_eq!(code(&out), 0, "{out:?}");
    stdout(&out)
}

#[test]
fn a_project_day_from_init_to_reset() {
    let world = World::new();
    let port = free_port();
    let shop = world.project(
        "shop",
        &format!("port = {port}\nuser = \"app\"\npassword = \"apppw\"\ninit_dir = \"./db/init\"\n"),
    );
    std::fs::create_dir_all(shop.join("db/init")).unwrap();
    common::set_mode(&shop.join("db"), 0o755);
    common::set_mode(&shop.join("db/init"), 0o755);
    std::fs::write(
        shop.join("db/init/01-seed.sql"),
        "CREATE TABLE seeded (x int); INSERT INTO seeded VALUES (42);\n",
    )
    .unwrap();
    let src = shop.join("src");
    let url = format!("DATABASE_URL=postgres://app@127.0.0.1:{port}/app");

    // From a subdirectory: the project's instance, named after its directory, data under the
    // data root keyed by that name (not in the source tree).
    let first = world.pgw(&src, &["start"]);
    assert_eq!(code(&first), 0, "{first:?}");
    assert_eq!(stdout(&first), url, "{first:?}");
    let data_dir = world.data_root.join("shop/16/data");
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "no cluster in {data_dir:?}"
    );
    assert!(!shop.join("data").exists() && !src.join("data").exists());

    let listed = world.ls();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "shop", "{listed:?}");
    assert_eq!(listed[0]["state"], "ready", "{listed:?}");
    assert_eq!(listed[0]["port"], port, "{listed:?}");
    assert_eq!(
        listed[0]["project_file"].as_str(),
        Some(shop.join("pgwarden.toml").to_str().unwrap()),
        "{listed:?}"
    );
    let table = world.pgw(&world.root, &["ls"]);
    assert!(stdout(&table).starts_with("NAME"), "{table:?}");
    assert!(stdout(&table).contains("shop"), "{table:?}");

    // Again: nothing to do, same URL, exit 0 (compose's `up -d`).
    let again = world.pgw(&shop, &["start"]);
    assert_eq!(
        (code(&again), stdout(&again)),
        (0, url.clone()),
        "{again:?}"
    );
    // Other settings than what runs: refused, naming the difference.
    let other = world.pgw(&shop, &["start", "--port", &free_port().to_string()]);
    assert_ne!(code(&other), 0, "{other:?}");
    assert!(stderr(&other).contains("port"), "{other:?}");

    // exec: the variables, CMD's exit code; the init script ran.
    assert_eq!(psql_value(&world, &src, "SELECT 1"), "1");
    assert_eq!(psql_value(&world, &src, "SELECT x FROM seeded"), "42");
    psql_value(&world, &src, "INSERT INTO seeded VALUES (7)");
    let exit = world.pgw(
        &src,
        &["exec", "--", "sh", "-c", "echo $PGPORT $PGUSER; exit 7"],
    );
    assert_eq!(code(&exit), 7, "{exit:?}");
    assert_eq!(stdout(&exit), format!("{port} app"), "{exit:?}");

    // Every command run inside the project finds its instance.
    let status = world.pgw(&src, &["status", "--json"]);
    assert_eq!(code(&status), 0, "{status:?}");
    let url_out = world.pgw(&src, &["url", "--with-password"]);
    assert_eq!(
        stdout(&url_out),
        format!("postgres://app:apppw@127.0.0.1:{port}/app")
    );
    let check = world.pgw(&src, &["check", "--query"]);
    assert_eq!(code(&check), 0, "{check:?}");

    // db: hints repeat the user's own flags; --if-exists says what happened; the main database
    // is dropped only when confirmed.
    let shop_flag = ["--name", "shop"];
    let made = world.pgw(
        &world.root,
        &["db", "create", "test_1", shop_flag[0], shop_flag[1]],
    );
    assert_eq!(code(&made), 0, "{made:?}");
    let twice = world.pgw(&world.root, &["db", "create", "test_1", "--name", "shop"]);
    assert!(
        stderr(&twice).contains("pgwarden db drop test_1 --name shop"),
        "{twice:?}"
    );
    let gone = world.pgw(&src, &["db", "drop", "nosuch", "--if-exists"]);
    assert_eq!(code(&gone), 0, "{gone:?}");
    assert!(stdout(&gone).contains("no such database"), "{gone:?}");
    let main_db = world.pgw(&src, &["db", "drop", "app"]);
    assert_ne!(code(&main_db), 0, "{main_db:?}");
    assert!(stderr(&main_db).contains("--yes"), "{main_db:?}");
    assert_eq!(
        psql_value(&world, &src, "SELECT 1"),
        "1",
        "the main database is kept"
    );

    // restart: a new server, same settings.
    let before = common::postmaster_pid(&data_dir);
    let restart = world.pgw(&src, &["restart"]);
    assert_eq!(
        (code(&restart), stdout(&restart)),
        (0, url.clone()),
        "{restart:?}"
    );
    assert_ne!(
        common::postmaster_pid(&data_dir),
        before,
        "restart kept the server"
    );
    assert_eq!(psql_value(&world, &src, "SELECT count(*) FROM seeded"), "2");

    // reload: returns once applied.
    let reload = world.pgw(&src, &["reload"]);
    assert_eq!(code(&reload), 0, "{reload:?}");
    assert!(stdout(&reload).starts_with("reloaded:"), "{reload:?}");

    // stop twice: both exit 0 (compose's `down`); status keeps exit 3.
    let stop = world.pgw(&src, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(stdout(&stop).starts_with("stopped:"), "{stop:?}");
    let stop = world.pgw(&src, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(stdout(&stop).contains("not running"), "{stop:?}");
    let status = world.pgw(&src, &["status"]);
    assert_eq!(code(&status), 3, "{status:?}");
    assert_eq!(world.ls()[0]["state"], "stopped");

    // reset: asks (no terminal here: --yes needed), then a fresh cluster with the scripts.
    let refused = world.pgw(&src, &["reset"]);
    assert_ne!(code(&refused), 0, "{refused:?}");
    assert!(stderr(&refused).contains("--yes"), "{refused:?}");
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "a refused reset deleted the cluster"
    );
    let reset = world.pgw(&src, &["reset", "--yes"]);
    assert_eq!(code(&reset), 0, "{reset:?}");
    assert!(!data_dir.exists(), "reset left {data_dir:?}");
    let fresh = world.pgw(&src, &["start"]);
    assert_eq!((code(&fresh), stdout(&fresh)), (0, url), "{fresh:?}");
    assert_eq!(
        psql_value(&world, &src, "SELECT string_agg(x::text, ',') FROM seeded"),
        "42"
    );
    // With init scripts no template is filled: the fresh cluster came from initdb again.
    let log = logs(&world, &src);
    assert!(
        log.contains(": running initdb") && !log.contains("copying the cached template"),
        "{log}"
    );
    let stop = world.pgw(&src, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn projects_side_by_side_and_names_that_cannot_collide() {
    let world = World::new();
    let (port_a, port_b) = (free_port(), free_port());
    let a = world.project("alpha", &format!("port = {port_a}\n"));
    let b = world.project("beta", &format!("port = {port_b}\n"));
    for (dir, port) in [(&a, port_a), (&b, port_b)] {
        let out = world.pgw(&dir.join("src"), &["start"]);
        assert_eq!(code(&out), 0, "{out:?}");
        assert!(stdout(&out).contains(&format!(":{port}/")), "{out:?}");
    }
    for (dir, port) in [(&a, port_a), (&b, port_b)] {
        let out = world.pgw(dir, &["url"]);
        assert_eq!(
            stdout(&out),
            format!("postgres://trader@127.0.0.1:{port}/trader")
        );
    }
    let names: Vec<String> = world.ls().iter().map(|v| v["name"].to_string()).collect();
    assert_eq!(names, ["\"alpha\"", "\"beta\""]);
    // -f / --project-dir from anywhere.
    let out = world.pgw(&world.root, &["--project-dir", a.to_str().unwrap(), "url"]);
    assert!(stdout(&out).contains(&format!(":{port_a}/")), "{out:?}");
    let file = b.join("pgwarden.toml");
    let out = world.pgw(&world.root, &["-f", file.to_str().unwrap(), "url"]);
    assert!(stdout(&out).contains(&format!(":{port_b}/")), "{out:?}");

    // One name, two data dirs: the second is refused, naming the first.
    let (d1, d2) = (world.root.join("d1"), world.root.join("d2"));
    let (p1, p2) = (free_port().to_string(), free_port().to_string());
    let d1s = d1.to_str().unwrap();
    let d2s = d2.to_str().unwrap();
    let first = world.pgw(
        &world.root,
        &["start", "--name", "dup", "--data-dir", d1s, "--port", &p1],
    );
    assert_eq!(code(&first), 0, "{first:?}");
    let second = world.pgw(
        &world.root,
        &["start", "--name", "dup", "--data-dir", d2s, "--port", &p2],
    );
    assert_ne!(code(&second), 0, "{second:?}");
    assert!(
        stderr(&second).contains(d1s),
        "the error names the first: {second:?}"
    );
    assert!(
        !d2.join("PG_VERSION").exists(),
        "the refused start made a cluster"
    );
    // Name and data dir given together must agree.
    let mismatch = world.pgw(&world.root, &["url", "--name", "dup", "--data-dir", d2s]);
    assert_ne!(code(&mismatch), 0, "{mismatch:?}");
    assert!(stderr(&mismatch).contains(d1s), "{mismatch:?}");
    // The name alone finds it, and stops it.
    let stop = world.pgw(&world.root, &["stop", "--name", "dup"]);
    assert!(stdout(&stop).starts_with("stopped:"), "{stop:?}");

    // An unnamed instance with its own data dir is not what a bare command reaches.
    let d3 = world.root.join("d3");
    let p3 = free_port().to_string();
    let third = world.pgw(
        &world.root,
        &["start", "--data-dir", d3.to_str().unwrap(), "--port", &p3],
    );
    assert_eq!(code(&third), 0, "{third:?}");
    let bare = world.pgw(&world.root, &["stop"]);
    assert_eq!(code(&bare), 0, "{bare:?}");
    assert!(
        stdout(&bare).contains("not running"),
        "a bare stop reached it: {bare:?}"
    );
    let status = world.pgw(&world.root, &["status", "--data-dir", d3.to_str().unwrap()]);
    assert_eq!(
        code(&status),
        0,
        "the unnamed instance was stopped: {status:?}"
    );
    let listed = world.ls();
    assert!(
        listed
            .iter()
            .any(|v| v["name"] == "-" && v["running"] == true),
        "ls lists the unnamed instance: {listed:?}"
    );
    for dir in [&a, &b] {
        assert_eq!(code(&world.pgw(dir, &["stop"])), 0);
    }
    assert_eq!(
        code(&world.pgw(&world.root, &["stop", "--data-dir", d3.to_str().unwrap()])),
        0
    );
}

#[test]
fn a_changed_password_is_what_url_psql_and_check_use() {
    let world = World::new();
    let port = free_port();
    let dir = world.project("pw", &format!("port = {port}\npassword = \"one\"\n"));
    let out = world.pgw(&dir, &["start"]);
    assert_eq!(code(&out), 0, "{out:?}");

    // The project file's password changes; the restart reconciles it.
    std::fs::write(
        dir.join("pgwarden.toml"),
        format!("port = {port}\npassword = \"two\"\n"),
    )
    .unwrap();
    let out = world.pgw(&dir, &["restart"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let url = world.pgw(&dir, &["url", "--with-password"]);
    assert_eq!(
        stdout(&url),
        format!("postgres://trader:two@127.0.0.1:{port}/trader")
    );
    assert_eq!(code(&world.pgw(&dir, &["check", "--query"])), 0);
    let psql = world.pgw(&dir, &["psql", "-XAtc", "SELECT current_user"]);
    assert_eq!(
        (code(&psql), stdout(&psql)),
        (0, "trader".to_string()),
        "{psql:?}"
    );

    // From the environment: remembered by name, never stored; a command without it says so.
    let out = world.pgw_env(&dir, &["restart"], &[("POSTGRES_PASSWORD", "three")]);
    assert_eq!(code(&out), 0, "{out:?}");
    let without = world.pgw(&dir, &["url", "--with-password"]);
    assert_ne!(code(&without), 0, "{without:?}");
    assert!(
        stderr(&without).contains("POSTGRES_PASSWORD"),
        "{without:?}"
    );
    let state =
        std::fs::read_to_string(world.data_root.join("pw/16/data.pgwarden/settings.json")).unwrap();
    assert!(
        !state.contains("three"),
        "the password is in the state: {state}"
    );
    let with = world.pgw_env(
        &dir,
        &["url", "--with-password"],
        &[("POSTGRES_PASSWORD", "three")],
    );
    assert!(stdout(&with).contains(":three@"), "{with:?}");
    let check = world.pgw_env(
        &dir,
        &["check", "--query"],
        &[("POSTGRES_PASSWORD", "three")],
    );
    assert_eq!(code(&check), 0, "{check:?}");
    assert_eq!(code(&world.pgw(&dir, &["stop"])), 0);
}

/// Forwarded server lines that still start with the server's own timestamp.
fn two_timestamps(text: &str) -> Vec<&str> {
    let is_date = |w: &[u8]| {
        w.len() == 10
            && w.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                _ => c.is_ascii_digit(),
            })
    };
    text.lines()
        .filter(|l| {
            l.split_once("postgres: ")
                .is_some_and(|(_, rest)| rest.len() >= 10 && is_date(&rest.as_bytes()[..10]))
        })
        .collect()
}

#[test]
fn the_default_level_is_quiet_with_one_timestamp_per_line() {
    let dir = test_dir();
    let port = free_port();
    // A first launch, a warm start, a warm start with -v: each stopped, stderr read after exit.
    let mut runs = Vec::new();
    for extra in [&[][..], &[][..], &["-v"][..]] {
        let mut pgwarden = common::start_with(dir.path(), port, extra, &[]);
        pgwarden.wait_ready(LONG);
        pgwarden.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(pgwarden.wait_exit(common::STOP).success());
        runs.push(pgwarden.stderr_text());
    }
    let (first, warm, verbose) = (&runs[0], &runs[1], &runs[2]);
    let lines = |t: &str| t.lines().count();
    assert!(
        lines(first) <= 12,
        "a first launch + stop printed {} lines:\n{first}",
        lines(first)
    );
    assert!(
        lines(warm) <= 10,
        "a warm start + stop printed {} lines:\n{warm}",
        lines(warm)
    );
    for text in [first, warm] {
        assert!(
            !text.contains(" LOG: "),
            "server LOG lines by default:\n{text}"
        );
    }
    assert!(
        verbose.contains("postmaster LOG:"),
        "-v shows the server's log:\n{verbose}"
    );
    assert!(lines(verbose) > lines(warm) + 5, "{verbose}");
    for text in [first, warm, verbose] {
        let doubled = two_timestamps(text);
        assert!(
            doubled.is_empty(),
            "lines with two timestamps: {doubled:#?}"
        );
    }
}

/// `pgwarden logs` of the instance of the project in `cwd`.
fn logs(world: &World, cwd: &Path) -> String {
    let out = world.pgw(cwd, &["logs", "-n", "10000"]);
    assert_eq!(code(&out), 0, "{out:?}");
    stdout(&out)
}

/// Polls the instance's log file (what `pgwarden logs` prints) until it has a line containing
/// `needle`; returns that line.
fn wait_for_log(state_dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let text = std::fs::read_to_string(state_dir.join("pgwarden.log")).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log after {LONG:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of `key=` in a log line (up to the next space).
fn log_field(line: &str, key: &str) -> String {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 2;
    line[start..].split(' ').next().unwrap().to_string()
}

/// A password no other test uses: a template key of this test's own.
fn own_password(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), free_port())
}

/// Removes, on drop, a template this test made for its own settings (the shared cache would
/// otherwise keep one more with every run).
struct OwnTemplate(PathBuf);

impl Drop for OwnTemplate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn system_identifier(client: &mut postgres::Client) -> i64 {
    client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .unwrap()
        .get(0)
}

#[test]
fn reset_then_start_copies_the_template_filled_after_the_first_launch() {
    let world = World::new();
    let port = free_port();
    let password = own_password("fast");
    // No spare: this is the template's path (the spare's tests are below).
    let dir = world.project(
        "fast",
        &format!(
            "port = {port}\nuser = \"fast\"\npassword = \"{password}\"\ndatabase = \"fastdb\"\nspare = false\n"
        ),
    );
    let first = world.pgw(&dir, &["start"]);
    assert_eq!(code(&first), 0, "{first:?}");

    // The persistent first launch ran initdb; once ready, it saves the template on its own.
    let state_dir = world.data_root.join("fast/16/data.pgwarden");
    let saved = wait_for_log(&state_dir, "template cluster saved");
    let template = PathBuf::from(log_field(&saved, "template"));
    let _own = OwnTemplate(template.clone());
    assert!(
        template.join(".pgwarden-template-complete").is_file(),
        "{saved}: no complete template at {template:?}"
    );
    let working = template.with_file_name(format!(
        ".fill-{}",
        template.file_name().unwrap().to_string_lossy()
    ));
    assert!(!working.exists(), "the fill left {working:?}");
    let log = logs(&world, &dir);
    assert!(log.contains(": running initdb"), "{log}");
    assert_eq!(
        log.matches(": running initdb").count(),
        1,
        "the fill's own steps are not info lines:\n{log}"
    );

    // The user's data, then reset + start.
    let mut client = common::connect(port, "fast", &password, "fastdb").unwrap();
    client
        .batch_execute("CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)")
        .unwrap();
    let before = system_identifier(&mut client);
    drop(client);
    let reset = world.pgw(&dir, &["reset", "--yes"]);
    assert_eq!(code(&reset), 0, "{reset:?}");
    let data_dir = world.data_root.join("fast/16/data");
    assert!(!data_dir.exists(), "reset left {data_dir:?}");
    let fresh = world.pgw(&dir, &["start"]);
    assert_eq!(code(&fresh), 0, "{fresh:?}");
    // The old cluster, moved aside by reset, is deleted in the background.
    let parent = data_dir.parent().unwrap();
    let aside = || -> Vec<String> {
        std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".data.pgwarden-deleting-"))
            .collect()
    };
    let deadline = Instant::now() + LONG;
    while !aside().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the old cluster is still there: {:?}",
            aside()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let log = logs(&world, &dir);
    assert!(
        log.contains("copying the cached template cluster") && !log.contains(": running initdb"),
        "the fresh cluster was not copied from the template:\n{log}"
    );
    // The user, password and database work; the table is gone; a cluster of its own.
    let mut client = common::connect(port, "fast", &password, "fastdb")
        .expect("user, password and database of the copied cluster");
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, to_regclass('mine') IS NULL",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get(2)),
        ("fast".to_string(), "fastdb".to_string(), true)
    );
    assert_ne!(
        system_identifier(&mut client),
        before,
        "the cluster after the reset is the old one"
    );
    client
        .batch_execute("CREATE TABLE again (x int); INSERT INTO again VALUES (2)")
        .unwrap();
    drop(client);
    assert!(common::connect(port, "fast", "wrong", "fastdb").is_err());
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

/// Fields of /proc/PID/stat after the command name (field 3, the state, is index 0).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// Every live process below `root`, with its start time (against pid reuse) and command line.
fn descendants(root: i32) -> Vec<(i32, String, String)> {
    let all: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let fields = stat_fields(pid).filter(|f| f[0] != "Z")?;
            Some((pid, fields[1].parse().ok()?, fields[19].clone()))
        })
        .collect();
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (pid, ppid, start) in &all {
            if *ppid == parent {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                found.push((*pid, start.clone(), cmdline));
                parents.push(*pid);
            }
        }
    }
    found
}

/// A template key no pgwarden uses (the name of an abandoned fill's directory).
fn rand_key() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ (u128::from(std::process::id()) << 64)
}

/// The I/O scheduling class of `pid` (3: idle).
fn io_class(pid: i32) -> i64 {
    // SAFETY: a read-only system call.
    let value = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_get, 1, pid) };
    value >> 13
}

#[test]
fn a_stop_during_the_template_fill_cancels_it_and_leaves_nothing() {
    let dir = test_dir();
    let port = free_port();
    let password = own_password("cancel");
    let envs = [("POSTGRES_PASSWORD", password.as_str())];
    let data_dir = dir.path().join("data");
    let mut pgwarden = common::start(dir.path(), port, &envs);
    pgwarden.wait_ready(LONG);

    // The fill's processes: below pgwarden, not the server's, working in a `.fill-` directory.
    let server = common::postmaster_pid(&data_dir);
    let deadline = Instant::now() + LONG;
    let (fill, working) = loop {
        let below = descendants(pgwarden.pid() as i32);
        let server_tree: Vec<i32> = descendants(server).iter().map(|d| d.0).collect();
        let fill: Vec<(i32, String, String)> = below
            .into_iter()
            .filter(|d| d.0 != server && !server_tree.contains(&d.0))
            .collect();
        let working = fill.iter().find_map(|(_, _, cmdline)| {
            let arg = Path::new(cmdline.split(' ').find(|a| a.contains("/.fill-"))?);
            arg.ancestors()
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".fill-"))
                })
                .map(Path::to_path_buf)
        });
        if let Some(working) = working {
            break (fill, working);
        }
        assert!(
            Instant::now() < deadline,
            "no template fill started after the first launch"
        );
        assert!(
            !pgwarden.stderr_text().contains("template cluster saved"),
            "the fill ended before it was seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("[test] the fill's processes: {fill:#?}, working in {working:?}");
    let name = working.file_name().unwrap().to_string_lossy().to_string();
    let template = working.with_file_name(name.trim_start_matches(".fill-"));
    let _own = OwnTemplate(template.clone());
    assert!(working.is_dir(), "{working:?}");
    // A process that is exiting has no command line any more and has dropped its I/O context
    // (its class then reads as "none"): only a process alive before and after the reads counts.
    let mut checked = 0;
    for (pid, start, cmdline) in &fill {
        let alive = || {
            stat_fields(*pid).is_some_and(|f| f[0] != "Z" && &f[19] == start)
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        };
        if cmdline.is_empty() || !alive() {
            continue;
        }
        let (fields, class) = (stat_fields(*pid), io_class(*pid));
        if !alive() {
            continue;
        }
        let fields = fields.expect("read while alive");
        assert_eq!(fields[16], "19", "not at nice 19: {pid} {cmdline}");
        assert_eq!(class, 3, "not in the idle I/O class: {pid} {cmdline}");
        checked += 1;
    }
    assert!(
        checked > 0,
        "no process of the fill was alive to check: {fill:?}"
    );

    pgwarden.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        pgwarden.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        pgwarden.stderr_text()
    );
    for (pid, start, cmdline) in &fill {
        let still = stat_fields(*pid).is_some_and(|f| f[0] != "Z" && &f[19] == start);
        assert!(
            !still,
            "a process of the fill survived the stop: {pid} {cmdline}"
        );
    }
    assert!(!working.exists(), "the cancelled fill left {working:?}");
    assert!(
        !template.join(".pgwarden-template-complete").exists(),
        "a cancelled fill published {template:?}"
    );
    let stderr = pgwarden.stderr_text();
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "a cancelled fill is not a failure:\n{stderr}"
    );

    // The next first launch of these settings runs initdb (nothing torn is copied) and fills;
    // it also removes what a fill of other settings left when its pgwarden was killed.
    let abandoned = working.with_file_name(format!(".fill-{:032x}", rand_key()));
    std::fs::create_dir_all(abandoned.join("cluster")).unwrap();
    std::fs::write(abandoned.join("cluster/PG_VERSION"), "16\n").unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::remove_dir_all(dir.path().join("data.pgwarden")).unwrap();
    let pgwarden = common::start(dir.path(), port, &envs);
    pgwarden.wait_ready(LONG);
    pgwarden.wait_for_stderr("template cluster saved", LONG);
    let stderr = pgwarden.stderr_text();
    assert!(
        stderr.contains(": running initdb") && !stderr.contains("copying the cached template"),
        "{stderr}"
    );
    assert!(template.join(".pgwarden-template-complete").is_file());
    assert!(!working.exists());
    assert!(
        !abandoned.exists(),
        "an abandoned fill was not swept: {abandoned:?}"
    );
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
}

// ---------------------------------------------------------------------------
// Which instance a command addresses, decided once (issue 24): the symptoms users met
// ---------------------------------------------------------------------------

/// The port in a `DATABASE_URL=postgres://…@127.0.0.1:PORT/…` line.
fn url_port(line: &str) -> u16 {
    let after = line
        .split_once("@127.0.0.1:")
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .1;
    after[..after.find('/').expect("a path after the port")]
        .parse()
        .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"))
}

/// The status code of `GET path` on 127.0.0.1:`port`, or the connection error.
fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0))
}

/// The only `*.tar.zst` in `dir`.
fn only_backup(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(found.len(), 1, "one backup expected in {dir:?}: {found:?}");
    found[0].clone()
}

/// The README's CI recipe on a machine where an instance of the same name ran before: the
/// printed URL carries the port the throwaway server listens on, not the `0` it was asked for.
#[test]
fn a_port_0_start_after_a_stopped_instance_of_the_same_name_prints_the_real_port() {
    let world = World::new();
    let port = free_port().to_string();
    let first = world.pgw(&world.root, &["start", "--name", "ci", "--port", &port]);
    assert_eq!(code(&first), 0, "{first:?}");
    let stop = world.pgw(&world.root, &["stop", "--name", "ci"]);
    assert_eq!(code(&stop), 0, "{stop:?}");

    let throwaway = world.pgw(
        &world.root,
        &[
            "start",
            "--ephemeral",
            "--port",
            "0",
            "--name",
            "ci",
            "--with-password",
        ],
    );
    assert_eq!(code(&throwaway), 0, "{throwaway:?}");
    let line = stdout(&throwaway);
    assert!(
        line.starts_with("DATABASE_URL=postgres://trader:trader@127.0.0.1:"),
        "{throwaway:?}"
    );
    let listening = url_port(&line);
    assert_ne!(listening, 0, "{throwaway:?}");
    // What a CI job does with it: connect.
    let check = world.pgw(
        &world.root,
        &["check", "--port", &listening.to_string(), "--query"],
    );
    assert_eq!(code(&check), 0, "nothing accepts on {listening}: {check:?}");
    let url = world.pgw(&world.root, &["url", "--name", "ci"]);
    assert_eq!(url_port(&stdout(&url)), listening, "{url:?}");
    let stop = world.pgw(&world.root, &["stop", "--name", "ci"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

/// `restart` without flags restarts the instance as `start` was told: its HTTP endpoint too.
#[test]
fn a_plain_restart_keeps_the_http_address_start_was_given() {
    let world = World::new();
    let port = free_port().to_string();
    let http = free_port();
    let http_address = format!("127.0.0.1:{http}");
    let start = world.pgw(
        &world.root,
        &[
            "start",
            "--name",
            "web",
            "--port",
            &port,
            "--http-address",
            &http_address,
        ],
    );
    assert_eq!(code(&start), 0, "{start:?}");
    assert_eq!(http_status(http, "/livez").unwrap(), 200);

    let restart = world.pgw(&world.root, &["restart", "--name", "web"]);
    assert_eq!(code(&restart), 0, "{restart:?}");
    assert_eq!(url_port(&stdout(&restart)), port.parse::<u16>().unwrap());
    let after = http_status(http, "/livez");
    assert!(
        matches!(after, Ok(200)),
        "/livez after a plain restart: {after:?} ({restart:?})"
    );

    // A stop and a later plain start: the same instance again.
    assert_eq!(code(&world.pgw(&world.root, &["stop", "--name", "web"])), 0);
    let again = world.pgw(&world.root, &["start", "--name", "web"]);
    assert_eq!(code(&again), 0, "{again:?}");
    assert!(matches!(http_status(http, "/livez"), Ok(200)), "{again:?}");
    assert_eq!(code(&world.pgw(&world.root, &["stop", "--name", "web"])), 0);
}

/// `restore -v FILE` starts the restored cluster (its relaunch was once `start FILE`, which
/// clap refused after the restore had replaced the data).
#[test]
fn restore_with_verbose_relaunches_the_restored_cluster() {
    let world = World::new();
    let port = free_port().to_string();
    let start = world.pgw(&world.root, &["start", "--name", "src", "--port", &port]);
    assert_eq!(code(&start), 0, "{start:?}");
    let made = world.pgw(
        &world.root,
        &[
            "exec",
            "--name",
            "src",
            "--",
            "psql",
            "-XAtc",
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
        ],
    );
    assert_eq!(code(&made), 0, "{made:?}");
    let backups = world.root.join("backups");
    let backup = world.pgw(
        &world.root,
        &[
            "backup",
            &format!("{}/", backups.display()),
            "--name",
            "src",
        ],
    );
    assert_eq!(code(&backup), 0, "{backup:?}");
    let file = only_backup(&backups);

    let other_port = free_port().to_string();
    let restore = world.pgw(
        &world.root,
        &[
            "restore",
            "-v",
            file.to_str().unwrap(),
            "--name",
            "dst",
            "--port",
            &other_port,
        ],
    );
    assert_eq!(code(&restore), 0, "{restore:?}");
    let read = world.pgw(
        &world.root,
        &[
            "exec",
            "--name",
            "dst",
            "--",
            "psql",
            "-XAtc",
            "SELECT x FROM kept",
        ],
    );
    assert_eq!((code(&read), stdout(&read)), (0, "42".into()), "{read:?}");
    let url = world.pgw(&world.root, &["url", "--name", "dst"]);
    assert_eq!(url_port(&stdout(&url)).to_string(), other_port, "{url:?}");
}

/// Inside a project, `--data-dir X` addresses X: `restore FILE --data-dir X` restores and
/// starts it beside the project's own instance, and `stop --data-dir X` stops it (both were
/// refused with a help line about a `--name` the user never gave).
#[test]
fn a_data_dir_flag_inside_a_project_addresses_that_data_dir() {
    let world = World::new();
    let port = free_port();
    let shop = world.project("shop", &format!("port = {port}\n"));
    let start = world.pgw(&shop, &["start"]);
    assert_eq!(code(&start), 0, "{start:?}");
    let backups = world.root.join("backups");
    let backup = world.pgw(&shop, &["backup", &format!("{}/", backups.display())]);
    assert_eq!(code(&backup), 0, "{backup:?}");
    let file = only_backup(&backups);

    let copy = world.root.join("copy/data");
    let copy_port = free_port().to_string();
    let restore = world.pgw(
        &shop,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            copy.to_str().unwrap(),
            "--port",
            &copy_port,
        ],
    );
    assert_eq!(code(&restore), 0, "{restore:?}");
    assert!(copy.join("PG_VERSION").is_file(), "{restore:?}");
    let status = world.pgw(&shop, &["status", "--data-dir", copy.to_str().unwrap()]);
    assert_eq!(code(&status), 0, "{status:?}");

    let stop = world.pgw(&shop, &["stop", "--data-dir", copy.to_str().unwrap()]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(stdout(&stop).starts_with("stopped: "), "{stop:?}");
    // The project's own instance was not touched.
    let check = world.pgw(&shop, &["check", "--query"]);
    assert_eq!(code(&check), 0, "{check:?}");
    let status = world.pgw(&shop, &["status", "--data-dir", copy.to_str().unwrap()]);
    assert_ne!(code(&status), 0, "{status:?}");
}

/// `start --port N; stop; <command>`: every command that only reads addresses the instance
/// `start` left, with its port and data directory — inside a project (from a subdirectory),
/// outside it by name, and by data directory. `commands::dispatch` resolves each command's
/// instance once, the way `start` resolved it (remembered port included).
#[test]
fn every_reading_command_finds_the_stopped_instance_start_left() {
    let world = World::new();
    let shop = world.project("shop", "");
    let data = world.root.join("own/data");
    let data = data.to_str().unwrap();
    let cases: [(PathBuf, Vec<&str>); 3] = [
        (shop.join("src"), vec![]),
        (world.root.clone(), vec!["--name", "stock"]),
        (world.root.clone(), vec!["--data-dir", data]),
    ];
    for (cwd, flags) in cases {
        let port = free_port();
        let with = |verb: &[&str]| -> Vec<String> {
            verb.iter()
                .chain(flags.iter())
                .map(|s| s.to_string())
                .collect()
        };
        let pgw = |verb: &[&str]| {
            let args = with(verb);
            world.pgw(&cwd, &args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let start = pgw(&["start", "--port", &port.to_string()]);
        assert_eq!(code(&start), 0, "{start:?}");
        let running = pgw(&["status", "--json"]);
        assert_eq!(code(&running), 0, "{running:?}");
        let running: serde_json::Value = serde_json::from_str(&stdout(&running)).unwrap();
        let stop = pgw(&["stop"]);
        assert_eq!(code(&stop), 0, "{stop:?}");

        let case = format!("{flags:?} in {}", cwd.display());
        let url = pgw(&["url"]);
        assert_eq!(code(&url), 0, "{case}: {url:?}");
        assert_eq!(url_port(&stdout(&url)), port, "{case}: {url:?}");
        let env = pgw(&["env"]);
        assert!(
            stdout(&env).lines().any(|l| l == format!("PGPORT={port}")),
            "{case}: {env:?}"
        );
        let status = pgw(&["status", "--json"]);
        assert_eq!(code(&status), 3, "{case}: {status:?}");
        let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
        assert_eq!(status["data_dir"], running["data_dir"], "{case}");
        // pg_isready's "no response", at the port start was given.
        let check = pgw(&["check"]);
        assert_eq!(code(&check), 2, "{case}: {check:?}");
        assert!(
            stdout(&check).contains(&format!(":{port} - no response")),
            "{case}: {check:?}"
        );
    }
}

/// compose's own verbs: `up` starts, `down` stops, and `--help` lists them.
#[test]
fn up_and_down_start_and_stop_the_project() {
    let world = World::new();
    let port = free_port();
    let shop = world.project("shop", &format!("port = {port}\n"));
    let help = world.pgw(&shop, &["--help"]);
    // Words only: clap wraps the alias onto the next line where the text is long.
    let words = stdout(&help)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(words.contains("[alias: up]"), "{help:?}");
    assert!(words.contains("[alias: down]"), "{help:?}");
    let up = world.pgw(&shop, &["up"]);
    assert_eq!(code(&up), 0, "{up:?}");
    assert_eq!(
        stdout(&up),
        format!("DATABASE_URL=postgres://trader@127.0.0.1:{port}/trader")
    );
    assert_eq!(code(&world.pgw(&shop, &["check"])), 0);
    let down = world.pgw(&shop, &["down"]);
    assert_eq!(code(&down), 0, "{down:?}");
    assert!(stdout(&down).starts_with("stopped: "), "{down:?}");
    assert_ne!(code(&world.pgw(&shop, &["check"])), 0);
    // Idempotent, like compose's.
    let again = world.pgw(&shop, &["down"]);
    assert_eq!(code(&again), 0, "{again:?}");
}

/// A normal user's data dir below a directory only root can write to (`/var/lib/...` on a
/// real machine): `run` refuses it with a `help:` line, and `doctor` fails it with the same
/// words before anything is tried.
#[test]
fn doctor_and_run_agree_on_a_data_dir_that_cannot_be_created() {
    if !common::require_root("to run pgwarden as a second, unprivileged user") {
        return;
    }
    // The second user, here as any unprivileged user.
    let user = common::intruder();
    let world = World::new();
    let locked = world.root.join("locked");
    std::fs::create_dir(&locked).unwrap();
    common::set_mode(&locked, 0o755);
    let home = world.root.join("home");
    std::fs::create_dir(&home).unwrap();
    nix::unistd::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    // Never unpacked: both refuse before they would install anything.
    std::fs::write(home.join("archive.tgz"), "").unwrap();
    let data_dir = locked.join("app/data");
    let as_user = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"));
        use std::os::unix::process::CommandExt;
        command
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .current_dir(&home)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env("PGWARDEN_RUNTIME_DIR", home.join("runtime"))
            .env("PGWARDEN_INSTALL_DIR", home.join("binaries"))
            .env("PGWARDEN_ARCHIVE", home.join("archive.tgz"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = common::output_within(command.spawn().unwrap(), LONG)
            .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {LONG:?}"));
        eprintln!(
            "[test] (as {}) pgwarden {args:?} -> {out:?}",
            common::INTRUDER
        );
        out
    };

    let run = as_user(&["run"]);
    assert_ne!(code(&run), 0, "{run:?}");
    let error = stderr(&run);
    assert!(error.contains("cannot create"), "{run:?}");
    assert!(error.contains(locked.to_str().unwrap()), "{run:?}");
    assert!(
        error.contains("help: "),
        "run's error has no help line: {run:?}"
    );
    assert!(!locked.join("app").exists());

    let doctor = as_user(&["doctor"]);
    assert_eq!(code(&doctor), 1, "{doctor:?}");
    let report = stdout(&doctor);
    let line = report
        .lines()
        .find(|l| l.starts_with("FAIL data dir: "))
        .unwrap_or_else(|| panic!("doctor passed the data dir run refuses: {doctor:?}"));
    assert!(line.contains("cannot create"), "{doctor:?}");
    assert!(line.contains(locked.to_str().unwrap()), "{doctor:?}");
    assert!(report.contains("help: "), "{doctor:?}");
}

// ---------------------------------------------------------------------------
// Spare clusters (issue 29): the next cluster a command needs, made in the background.

/// The reset spare of `data_dir`: `.<name>.spare` beside it.
fn reset_spare(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().unwrap().to_string_lossy().to_string();
    data_dir.with_file_name(format!(".{name}.spare"))
}

/// The inode of `path` (a rename keeps it, a copy does not).
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .ino()
}

/// A project of its own settings (its own template key) whose first launch is ready, its
/// template saved and its reset spare made; returns the project dir, data dir, state dir, the
/// password and the template (removed when the guard drops).
fn project_with_a_spare(
    world: &World,
    tag: &str,
    port: u16,
) -> (PathBuf, PathBuf, PathBuf, String, OwnTemplate) {
    let password = own_password(tag);
    let dir = world.project(
        tag,
        &format!("port = {port}\nuser = \"sp\"\npassword = \"{password}\"\ndatabase = \"spdb\"\n"),
    );
    let first = world.pgw(&dir, &["start"]);
    assert_eq!(code(&first), 0, "{first:?}");
    let state_dir = world.data_root.join(format!("{tag}/16/data.pgwarden"));
    let saved = wait_for_log(&state_dir, "template cluster saved");
    let template = OwnTemplate(PathBuf::from(log_field(&saved, "template")));
    wait_for_log(&state_dir, "spare cluster ready");
    let data_dir = world.data_root.join(format!("{tag}/16/data"));
    assert!(
        reset_spare(&data_dir).join("spare.json").is_file(),
        "no spare beside {data_dir:?}"
    );
    (dir, data_dir, state_dir, password, template)
}

/// `reset --yes` then `start`, both succeeding; the new launch's log.
fn reset_and_start(world: &World, dir: &Path, state_dir: &Path) -> String {
    let reset = world.pgw(dir, &["reset", "--yes"]);
    assert_eq!(code(&reset), 0, "{reset:?}");
    let start = world.pgw(dir, &["start"]);
    assert_eq!(code(&start), 0, "{start:?}");
    wait_for_log(state_dir, "cluster initialised");
    std::fs::read_to_string(state_dir.join("pgwarden.log")).unwrap()
}

#[test]
fn reset_after_reset_after_reset_renames_the_spare_into_a_fresh_empty_cluster() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) =
        project_with_a_spare(&world, "thrice", port);
    for round in 1..=3 {
        let mut client = common::connect(port, "sp", &password, "spdb").unwrap();
        client
            .batch_execute(&format!("CREATE TABLE made_before_{round} (x int)"))
            .unwrap();
        drop(client);
        let spare = reset_spare(&data_dir);
        let spare_file = inode(&spare.join("cluster/PG_VERSION"));
        let log = reset_and_start(&world, &dir, &state_dir);
        assert!(
            log.contains("the cluster from spare"),
            "round {round}: the spare was not used:\n{log}"
        );
        assert!(
            !log.contains("copying the cached template") && !log.contains(": running initdb"),
            "round {round}:\n{log}"
        );
        assert_eq!(
            inode(&data_dir.join("PG_VERSION")),
            spare_file,
            "round {round}: the data directory is not the spare renamed"
        );
        let mut client = common::connect(port, "sp", &password, "spdb")
            .expect("user, password and database of the spare");
        let gone: bool = client
            .query_one(
                &format!("SELECT to_regclass('made_before_{round}') IS NULL"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(
            gone,
            "round {round}: the table made before the reset is there"
        );
        drop(client);
        // The next spare is made in the background after this launch too.
        wait_for_log(&state_dir, "spare cluster ready");
        assert!(spare.join("spare.json").is_file(), "round {round}");
    }
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

/// Waits until the instance's log has `n` lines containing `needle`.
fn wait_for_log_count(state_dir: &Path, needle: &str, n: usize) {
    let deadline = Instant::now() + LONG;
    loop {
        let text = std::fs::read_to_string(state_dir.join("pgwarden.log")).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {n} {needle:?} in the log after {LONG:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_spare_of_other_settings_is_not_used() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, _password, _template) =
        project_with_a_spare(&world, "settings", port);
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    let changed = own_password("changed");
    std::fs::write(
        dir.join("pgwarden.toml"),
        format!("port = {port}\nuser = \"sp\"\npassword = \"{changed}\"\ndatabase = \"spdb\"\n"),
    )
    .unwrap();
    let log = reset_and_start(&world, &dir, &state_dir);
    assert!(
        !log.contains("the cluster from spare") && log.contains(": running initdb"),
        "a spare of the old settings was used:\n{log}"
    );
    assert!(log.contains("not using the spare"), "{log}");
    common::connect(port, "sp", &changed, "spdb").expect("the new password");
    let saved = wait_for_log(&state_dir, "template cluster saved");
    let _new_template = OwnTemplate(PathBuf::from(log_field(&saved, "template")));
    wait_for_log(&state_dir, "spare cluster ready");
    let marker = std::fs::read_to_string(reset_spare(&data_dir).join("spare.json")).unwrap();
    assert!(
        marker.contains(&log_field(&saved, "template")),
        "the new spare is a copy of the new settings' template: {marker}"
    );
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn a_spare_of_another_postgresql_version_is_not_used() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) =
        project_with_a_spare(&world, "version", port);
    // What binaries of another release would have made: the marker names that version.
    let marker = reset_spare(&data_dir).join("spare.json");
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.contains("\"postgresql\": \"16.14.0\""), "{text}");
    std::fs::write(&marker, text.replace("16.14.0", "16.13.0")).unwrap();
    let log = reset_and_start(&world, &dir, &state_dir);
    assert!(
        !log.contains("the cluster from spare")
            && log.contains("of another PostgreSQL version")
            && log.contains("copying the cached template"),
        "{log}"
    );
    common::connect(port, "sp", &password, "spdb").expect("a fresh cluster");
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn a_spare_of_an_earlier_template_is_not_used() {
    let world = World::new();
    let port = free_port();
    let (dir, _data_dir, state_dir, password, template) =
        project_with_a_spare(&world, "template", port);
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    // The template deleted and made again (here: copied back, new files).
    let again = template.0.with_extension("again");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&template.0)
        .arg(&again)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_dir_all(&template.0).unwrap();
    std::fs::rename(&again, &template.0).unwrap();
    let log = reset_and_start(&world, &dir, &state_dir);
    assert!(
        !log.contains("the cluster from spare")
            && log.contains("a copy of an earlier template")
            && log.contains("copying the cached template"),
        "{log}"
    );
    common::connect(port, "sp", &password, "spdb").expect("a fresh cluster");
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn snapshot_restore_renames_the_spare_copy_of_the_snapshot() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) =
        project_with_a_spare(&world, "snap", port);
    let mut client = common::connect(port, "sp", &password, "spdb").unwrap();
    client.batch_execute("CREATE TABLE kept (x int)").unwrap();
    drop(client);
    let save = world.pgw(&dir, &["snapshot", "save", "s1"]);
    assert_eq!(code(&save), 0, "{save:?}");
    wait_for_log_count(&state_dir, "spare snapshot copy ready", 1);
    let snapshots = data_dir.with_file_name("data.snapshots");
    let spare = snapshots.join(".s1.spare");
    let spare_file = inode(&spare.join("cluster/PG_VERSION"));
    let ls = world.pgw(&dir, &["snapshot", "ls"]);
    assert!(!stdout(&ls).contains("spare"), "{ls:?}");
    let status = world.pgw(&dir, &["status"]);
    assert!(stdout(&status).contains("  spares          "), "{status:?}");

    let mut client = common::connect(port, "sp", &password, "spdb").unwrap();
    client
        .batch_execute("CREATE TABLE after_save (x int)")
        .unwrap();
    drop(client);
    let restore = world.pgw(&dir, &["snapshot", "restore", "s1"]);
    assert_eq!(code(&restore), 0, "{restore:?}");
    assert_eq!(
        inode(&data_dir.join("PG_VERSION")),
        spare_file,
        "the restored data directory is not the spare renamed"
    );
    let mut client = common::connect(port, "sp", &password, "spdb").unwrap();
    let row = client
        .query_one(
            "SELECT to_regclass('kept') IS NOT NULL, to_regclass('after_save') IS NULL",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));
    drop(client);
    // After the restore, the next spare copy is made again; `snapshot rm` removes it with it.
    wait_for_log_count(&state_dir, "spare snapshot copy ready", 2);
    assert_ne!(inode(&spare.join("cluster/PG_VERSION")), spare_file);
    let rm = world.pgw(&dir, &["snapshot", "rm", "s1"]);
    assert_eq!(code(&rm), 0, "{rm:?}");
    assert!(!spare.exists(), "snapshot rm left its spare");
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn a_kill_during_the_spare_preparation_leaves_nothing_used_or_growing() {
    let dir = test_dir();
    let port = free_port();
    let password = own_password("killed");
    let envs = [("POSTGRES_PASSWORD", password.as_str())];
    let data_dir = dir.path().join("data");
    let spare = reset_spare(&data_dir);
    let spares_beside = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".data.spare"))
            .collect();
        names.sort();
        names
    };
    // The first launch: its template, then (cancelled by the stop, or not) its spare.
    let pgwarden = common::start(dir.path(), port, &envs);
    pgwarden.wait_ready(LONG);
    let saved = pgwarden.wait_for_stderr("template cluster saved", LONG);
    let _own = OwnTemplate(PathBuf::from(log_field(&saved, "template")));
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);

    // Launches of the existing cluster make the spare at once; one is killed while it copies
    // (a few tries: the copy may finish between a look and the kill).
    let mut killed_work = None;
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(&spare);
        let mut pgwarden = common::start(dir.path(), port, &envs);
        let work = spare.with_file_name(format!(".data.spare.work-{}", pgwarden.pid()));
        pgwarden.wait_ready(LONG);
        let deadline = Instant::now() + LONG;
        while !work.exists() && !spare.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
        pgwarden.signal(nix::sys::signal::Signal::SIGKILL);
        pgwarden.wait_exit(Duration::from_secs(20));
        // The server outlives a killed pgwarden: stopped here as an operator would.
        if data_dir.join("postmaster.pid").exists() {
            let postmaster = common::postmaster_pid(&data_dir);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(postmaster),
                nix::sys::signal::Signal::SIGKILL,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while common::process_alive(postmaster) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if work.exists() && !spare.exists() {
            killed_work = Some(work);
            break;
        }
    }
    let killed_work = killed_work.expect("no kill landed while the spare was being made");
    assert_eq!(
        spares_beside(),
        vec![
            killed_work
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        ]
    );

    // A first launch after that (the data directory deleted, as reset does) copies the
    // template: the torn copy is not a spare; and the next spare sweeps it.
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::remove_dir_all(dir.path().join("data.pgwarden")).unwrap();
    let pgwarden = common::start(dir.path(), port, &envs);
    pgwarden.wait_ready(LONG);
    pgwarden.wait_for_stderr("spare cluster ready", LONG);
    let stderr = pgwarden.stderr_text();
    assert!(
        stderr.contains("copying the cached template")
            && !stderr.contains("the cluster from spare"),
        "{stderr}"
    );
    assert_eq!(spares_beside(), vec![".data.spare".to_string()]);
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn a_spare_another_user_made_is_neither_used_nor_deleted() {
    if !common::require_root("a second user plants the spare") {
        return;
    }
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) =
        project_with_a_spare(&world, "planted", port);
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    // A whole, valid-looking spare — but the second user's (where the data directory's parent
    // is shared, they could have made it first, with a cluster of their choosing).
    let spare = reset_spare(&data_dir);
    common::give_to_intruder(&spare);
    let planted = inode(&spare.join("cluster/PG_VERSION"));
    let log = reset_and_start(&world, &dir, &state_dir);
    assert!(
        !log.contains("the cluster from spare") && log.contains("not pgwarden's own"),
        "{log}"
    );
    assert_ne!(inode(&data_dir.join("PG_VERSION")), planted);
    common::connect(port, "sp", &password, "spdb").expect("a fresh cluster");
    wait_for_log(&state_dir, "no spare cluster");
    assert_eq!(
        inode(&spare.join("cluster/PG_VERSION")),
        planted,
        "the other user's directory was deleted or replaced"
    );
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}

#[test]
fn spare_false_makes_none_and_removes_the_ones_there_are() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) = project_with_a_spare(&world, "off", port);
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    std::fs::write(
        dir.join("pgwarden.toml"),
        format!(
            "port = {port}\nuser = \"sp\"\npassword = \"{password}\"\ndatabase = \"spdb\"\nspare = false\n"
        ),
    )
    .unwrap();
    let start = world.pgw(&dir, &["start"]);
    assert_eq!(code(&start), 0, "{start:?}");
    let spare = reset_spare(&data_dir);
    let deadline = Instant::now() + LONG;
    while spare.exists() {
        assert!(Instant::now() < deadline, "spare = false left {spare:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = world.pgw(&dir, &["status"]);
    assert!(
        stdout(&status).contains("  spares          none"),
        "{status:?}"
    );
    let log = reset_and_start(&world, &dir, &state_dir);
    assert!(
        log.contains("copying the cached template") && !log.contains("the cluster from spare"),
        "{log}"
    );
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
    assert!(!spare.exists(), "a launch with spare = false made one");
}

#[test]
fn snapshot_restore_with_spare_false_copies_the_snapshot() {
    let world = World::new();
    let port = free_port();
    let (dir, data_dir, state_dir, password, _template) =
        project_with_a_spare(&world, "snapoff", port);
    let save = world.pgw(&dir, &["snapshot", "save", "s1"]);
    assert_eq!(code(&save), 0, "{save:?}");
    wait_for_log_count(&state_dir, "spare snapshot copy ready", 1);
    let spare = data_dir.with_file_name("data.snapshots").join(".s1.spare");
    let spare_file = inode(&spare.join("cluster/PG_VERSION"));
    // The setting turned off while the spare copy is there: the restore must not take it.
    std::fs::write(
        dir.join("pgwarden.toml"),
        format!(
            "port = {port}\nuser = \"sp\"\npassword = \"{password}\"\ndatabase = \"spdb\"\nspare = false\n"
        ),
    )
    .unwrap();
    let restore = world.pgw(&dir, &["snapshot", "restore", "s1"]);
    assert_eq!(code(&restore), 0, "{restore:?}");
    assert!(
        !String::from_utf8_lossy(&restore.stderr).contains("snapshot copy from spare"),
        "{restore:?}"
    );
    assert_ne!(
        inode(&data_dir.join("PG_VERSION")),
        spare_file,
        "spare = false, yet the restore renamed the spare copy into place"
    );
    common::connect(port, "sp", &password, "spdb").expect("the restored cluster runs");
    let stop = world.pgw(&dir, &["stop"]);
    assert_eq!(code(&stop), 0, "{stop:?}");
}
