//! The postgres image's contract on a native pgwarden: `POSTGRES_*` variables (and `_FILE`),
//! `POSTGRES_INITDB_ARGS`, `POSTGRES_INITDB_WALDIR`, `POSTGRES_HOST_AUTH_METHOD`, `PGDATA`, the
//! init-scripts directory (every file type), the atomic first launch with a failing script, and
//! the reconcile at every start. Real pgwarden, real PostgreSQL 16.

mod common;

use common::{
    Pgwarden, connect, free_port, npm_archive, prerequisite, run_to_exit, shared_install_dir,
    test_dir,
};
use nix::sys::signal::Signal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const READY: Duration = Duration::from_secs(300);
const EXIT: Duration = Duration::from_secs(120);

/// `run` with the shared binaries, on `data_dir` and `port`, plus `extra`.
fn run_args(data_dir: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--archive".into(),
        npm_archive().display().to_string(),
        "--install-dir".into(),
        shared_install_dir().display().to_string(),
        "--port".into(),
        port.to_string(),
    ];
    if !data_dir.as_os_str().is_empty() {
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(args: &[String], env: &[(&str, &str)]) -> Pgwarden {
    let args = common::as_strs(args);
    Pgwarden::start(&args, env)
}

fn stop(mut pgwarden: Pgwarden) -> Pgwarden {
    pgwarden.signal(Signal::SIGTERM);
    let status = pgwarden.wait_exit(EXIT);
    assert!(status.success(), "{status}\n{}", pgwarden.stderr_text());
    pgwarden
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn gzip(path: &Path, text: &str) {
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
}

fn xz(path: &Path, text: &str) {
    let mut encoder = liblzma::write::XzEncoder::new(std::fs::File::create(path).unwrap(), 6);
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
}

fn has_psql() -> bool {
    std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every file type, in name order, once; with the `_FILE` variables, initdb args and a WAL dir.
#[test]
fn init_scripts_run_once_in_order_with_the_image_variables() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let waldir = dir.path().join("wal");
    let init = dir.path().join("initdb.d");
    std::fs::create_dir(&init).unwrap();
    write(
        &init.join("01-schema.sql"),
        "-- a pg_dump-like script: COPY with data, semicolons in strings and bodies\n\
         CREATE TABLE steps (id serial PRIMARY KEY, name text, who text, db text);\n\
         CREATE FUNCTION note(t text) RETURNS void LANGUAGE plpgsql AS $$\n\
         BEGIN INSERT INTO steps (name) VALUES (t); END;\n$$;\n\
         COPY steps (name, who, db) FROM stdin;\n01-sql;copy\t\\N\t\\N\n\\.\n\
         SELECT note('01-sql; function');\n",
    );
    gzip(
        &init.join("02-data.sql.gz"),
        "INSERT INTO steps (name, who, db) VALUES ('02-gz', current_user, current_database());\n",
    );
    xz(
        &init.join("03-data.sql.xz"),
        "INSERT INTO steps (name, who, db) VALUES ('03-xz', current_user, current_database());\n",
    );
    write(&init.join("README.txt"), "not a script");
    // Outside CI the .sh script runs without psql where there is none.
    let psql = prerequisite(has_psql(), "psql (.ci/run installs postgresql-client)");
    if psql {
        // Not executable: run with bash, like the image sources it. psql finds the server
        // through PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE.
        write(
            &init.join("04-shell.sh"),
            "set -e\npsql -v ON_ERROR_STOP=1 -qc \"INSERT INTO steps (name, who, db) VALUES ('04-sh', '$POSTGRES_USER', '$POSTGRES_DB')\"\n",
        );
    }
    write(
        &init.join("05-exec.sh"),
        "#!/bin/sh\necho \"05-exec ran as $(id -un) for $PGDATABASE\"\n",
    );
    std::fs::set_permissions(
        init.join("05-exec.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for (name, text) in [
        ("user", "alice\n"),
        ("password", "s3cret pw\n\n"),
        ("db", "shop"),
    ] {
        write(&dir.path().join(name), text);
    }
    let secret = |n: &str| dir.path().join(n).display().to_string();
    let (user_file, password_file, db_file) = (secret("user"), secret("password"), secret("db"));
    let waldir_text = waldir.display().to_string();
    let env = [
        ("POSTGRES_USER_FILE", user_file.as_str()),
        ("POSTGRES_PASSWORD_FILE", password_file.as_str()),
        ("POSTGRES_DB_FILE", db_file.as_str()),
        ("POSTGRES_INITDB_ARGS", "--data-checksums"),
        ("POSTGRES_INITDB_WALDIR", waldir_text.as_str()),
    ];
    let port = free_port();
    let init_text = init.display().to_string();
    let args = run_args(&data_dir, port, &["--init-dir", &init_text]);

    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    pgwarden.wait_for_stderr("05-exec ran as", Duration::from_secs(5));
    let mut client = connect(port, "alice", "s3cret pw", "shop").expect("alice logs in to shop");
    let rows = client
        .query("SELECT name, who, db FROM steps ORDER BY id", &[])
        .unwrap();
    let steps: Vec<(String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut expected = vec![
        ("01-sql;copy".to_string(), None, None),
        ("01-sql; function".to_string(), None, None),
        (
            "02-gz".to_string(),
            Some("alice".into()),
            Some("shop".into()),
        ),
        (
            "03-xz".to_string(),
            Some("alice".into()),
            Some("shop".into()),
        ),
    ];
    if psql {
        expected.push(("04-sh".into(), Some("alice".into()), Some("shop".into())));
    }
    assert_eq!(steps, expected);
    let checksums: String = client.query_one("SHOW data_checksums", &[]).unwrap().get(0);
    assert_eq!(checksums, "on", "POSTGRES_INITDB_ARGS=--data-checksums");
    drop(client);
    assert_eq!(
        std::fs::read_link(data_dir.join("pg_wal")).unwrap(),
        waldir,
        "POSTGRES_INITDB_WALDIR"
    );
    let pgwarden = stop(pgwarden);
    drop(pgwarden);

    // Second start: the scripts do not run again; the reconcile finds everything in place.
    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    let line = pgwarden.wait_for_stderr("reconciled", Duration::from_secs(5));
    assert!(line.contains("password unchanged"), "{line}");
    assert!(line.contains("database shop exists"), "{line}");
    let mut client = connect(port, "alice", "s3cret pw", "shop").unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM steps", &[])
        .unwrap()
        .get(0);
    assert_eq!(count as usize, expected.len());
    assert!(!pgwarden.stderr_text().contains("running init script"));
    drop(client);
    stop(pgwarden);
}

/// A failing script fails the first launch as a whole, naming script, line and server error;
/// nothing is left at the data path; fixed, the next launch runs every script again.
#[test]
fn failing_init_script_fails_the_first_launch_atomically() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let waldir = dir.path().join("wal");
    let init = dir.path().join("initdb.d");
    std::fs::create_dir(&init).unwrap();
    write(&init.join("01-ok.sql"), "CREATE TABLE kept (a int);\n");
    write(
        &init.join("02-bad.sql"),
        "INSERT INTO kept VALUES (1);\nSELECT 1,\n       nope\nFROM kept;\n",
    );
    write(&init.join("03-never.sql"), "CREATE TABLE never (a int);\n");
    let port = free_port();
    let init_text = init.display().to_string();
    let waldir_text = waldir.display().to_string();
    let args = run_args(&data_dir, port, &["--init-dir", &init_text]);
    let env = [("POSTGRES_INITDB_WALDIR", waldir_text.as_str())];
    let argv = common::as_strs(&args);

    let output = run_to_exit(&argv, &env, READY);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("02-bad.sql failed at line 3"), "{stderr}");
    assert!(
        stderr.contains("column \"nope\" does not exist (SQLSTATE 42703)"),
        "{stderr}"
    );
    assert!(!stderr.contains("03-never.sql"), "{stderr}");
    assert!(!data_dir.exists(), "no half cluster at the data path");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("initdb"))
        .filter(|p| *p != init)
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    assert!(!waldir.exists(), "the WAL dir it created is gone too");

    write(&init.join("02-bad.sql"), "INSERT INTO kept VALUES (1);\n");
    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM kept", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    client.query_one("SELECT count(*) FROM never", &[]).unwrap();
    drop(client);
    stop(pgwarden);
}

/// Changed POSTGRES_PASSWORD, POSTGRES_USER and POSTGRES_DB take effect at the next start,
/// data kept; `reconcile = false` leaves them alone.
#[test]
fn reconcile_applies_a_changed_password_user_and_database() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let port = free_port();
    let args = run_args(&data_dir, port, &[]);

    let pgwarden = start(&args, &[("POSTGRES_PASSWORD", "old")]);
    pgwarden.wait_ready(READY);
    let mut client = connect(port, "trader", "old", "trader").unwrap();
    client
        .batch_execute("CREATE TABLE keep (a int); INSERT INTO keep VALUES (42)")
        .unwrap();
    drop(client);
    stop(pgwarden);

    // reconcile off: the old password still works, the new one does not.
    let pgwarden = start(
        &args,
        &[
            ("POSTGRES_PASSWORD", "new"),
            ("PGWARDEN_RECONCILE", "false"),
        ],
    );
    pgwarden.wait_ready(READY);
    assert!(connect(port, "trader", "new", "trader").is_err());
    connect(port, "trader", "old", "trader").unwrap();
    assert!(!pgwarden.stderr_text().contains("reconciled"));
    stop(pgwarden);

    // A changed configuration is applied before the ready line: the new password works at once.
    let pgwarden = start(&args, &[("POSTGRES_PASSWORD", "new")]);
    pgwarden.wait_ready(READY);
    let mut client = connect(port, "trader", "new", "trader").expect("the new password works");
    let line = pgwarden.wait_for_stderr("reconciled", Duration::from_secs(5));
    assert!(line.contains("password updated"), "{line}");
    let kept: i32 = client.query_one("SELECT a FROM keep", &[]).unwrap().get(0);
    assert_eq!(kept, 42, "data kept");
    drop(client);
    assert!(
        connect(port, "trader", "old", "trader").is_err(),
        "the old one no longer does"
    );
    stop(pgwarden);

    let env = [
        ("POSTGRES_USER", "bob"),
        ("POSTGRES_PASSWORD", "bobpw"),
        ("POSTGRES_DB", "bobdb"),
    ];
    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    let mut client = connect(port, "bob", "bobpw", "bobdb").unwrap();
    let line = pgwarden.wait_for_stderr("reconciled", Duration::from_secs(5));
    assert!(line.contains("role bob created"), "{line}");
    assert!(line.contains("database bobdb created"), "{line}");
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'bobdb'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "bob");
    drop(client);
    stop(pgwarden);
}

/// With the configuration unchanged, a start puts back what was changed by hand inside the
/// server (the database dropped, the password altered by SQL) right after its ready line.
#[test]
fn reconcile_puts_back_changes_made_by_hand() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let port = free_port();
    let args = run_args(&data_dir, port, &[]);
    let env = [("POSTGRES_PASSWORD", "pw1")];

    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    let mut client = connect(port, "trader", "pw1", "postgres").unwrap();
    client.batch_execute("DROP DATABASE trader").unwrap();
    client
        .batch_execute("ALTER ROLE trader PASSWORD 'by hand'")
        .unwrap();
    drop(client);
    stop(pgwarden);

    let pgwarden = start(&args, &env);
    pgwarden.wait_ready(READY);
    let line = pgwarden.wait_for_stderr("reconciled", Duration::from_secs(5));
    assert!(line.contains("password updated"), "{line}");
    assert!(line.contains("database trader created"), "{line}");
    connect(port, "trader", "pw1", "trader").expect("the configured password and database");
    assert!(connect(port, "trader", "by hand", "trader").is_err());
    let text = pgwarden.stderr_text();
    assert!(
        text.find("to=Ready").unwrap() < text.find("reconciled").unwrap(),
        "an unchanged configuration is reconciled after the ready line:\n{text}"
    );
    stop(pgwarden);
}

/// Kills the postmaster of a data dir given by PGDATA (the guard only knows --data-dir).
struct PostmasterGuard(PathBuf);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.0.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            && std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .as_deref()
                == Some(&self.0)
        {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// POSTGRES_HOST_AUTH_METHOD=trust: refused beyond loopback; on loopback it warns, needs no
/// password, and PGDATA names the data dir.
#[test]
fn host_auth_method_trust_and_pgdata() {
    let dir = test_dir();
    let port = free_port();
    let refused = run_args(Path::new(""), port, &["--listen-address", "0.0.0.0"]);
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    let output = run_to_exit(&refused, &[("POSTGRES_HOST_AUTH_METHOD", "trust")], EXIT);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("\"trust\" on 0.0.0.0"),
        "{output:?}"
    );

    let data_dir = dir.path().join("pgdata");
    let _guard = PostmasterGuard(data_dir.clone());
    let pgdata = data_dir.display().to_string();
    let args = run_args(Path::new(""), port, &[]);
    let pgwarden = start(
        &args,
        &[
            ("POSTGRES_HOST_AUTH_METHOD", "trust"),
            ("POSTGRES_PASSWORD", ""),
            ("PGDATA", &pgdata),
        ],
    );
    pgwarden.wait_ready(READY);
    assert!(pgwarden.stderr_text().contains("host_auth_method is trust"));
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "PGDATA is the data dir"
    );
    connect(port, "trader", "any password at all", "trader").expect("trust needs no password");
    stop(pgwarden);
}
