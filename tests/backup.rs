//! Backups that restore, against real servers with real writes: `backup` while a writer
//! commits, `restore` into a new data directory (every acknowledged id there, amcheck clean),
//! a damaged backup refused, the refusals (not running, inside the data dir, no space, over a
//! running cluster), and `restore --force` over a running cluster.

mod common;

use common::{Pgwarden, connect, free_port, test_dir};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(300);

/// Commits ids above `after` one autocommit `insert` (taking the id as $1) at a time, each
/// recorded with the time its INSERT returned; started once 50 are acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, u64)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(port: u16, after: i64, insert: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut c = connect(port, "trader", "trader", "trader").unwrap();
                let mut id = after;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    c.execute(insert, &[&id]).unwrap();
                    acked.lock().unwrap().push((id, now_ms()));
                }
            })
        };
        while acked.lock().unwrap().len() < 50 {
            std::thread::sleep(Duration::from_millis(5));
        }
        Writer {
            stop,
            acked,
            thread,
        }
    }

    /// Stops the writer; the acknowledged (id, time) pairs.
    fn finish(self) -> Vec<(i64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Runs a short pgwarden command to completion (not through `run_to_exit`, whose guard would
/// kill the server of the `--data-dir` it names).
fn pgw(args: &[&str]) -> Output {
    pgw_env(args, &[])
}

fn pgw_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("POSTGRES_USER")
        .env_remove("POSTGRES_DB")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgwarden {args:?} did not exit within {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("[test] pgwarden {} -> {:?}", args.join(" "), out);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A server that `pgwarden start` put in the background (by `restore`): stopped on drop, and
/// killed if `stop` could not.
struct Background {
    data_dir: PathBuf,
}

impl Drop for Background {
    fn drop(&mut self) {
        let data = self.data_dir.display().to_string();
        let out = pgw(&["stop", "--data-dir", &data, "--mode", "immediate"]);
        if out.status.success() || out.status.code() == Some(3) {
            return;
        }
        let status = self.data_dir.with_file_name(format!(
            "{}.pgwarden/status.json",
            self.data_dir.file_name().unwrap().to_string_lossy()
        ));
        if let Ok(s) = std::fs::read_to_string(status)
            && let Some(pid) = s
                .split("\"supervisor_pid\":")
                .nth(1)
                .and_then(|r| r.trim_start().split(',').next())
                .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(pm) = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            && let Some(pid) = pm.lines().next().and_then(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn start_server(dir: &Path, port: u16) -> Pgwarden {
    let pgwarden = common::start(dir, port, &[]);
    pgwarden.wait_ready(common::FIRST_LAUNCH);
    pgwarden
}

/// The `run` flags for binaries (shared install), for commands that start a server.
fn binary_flags() -> Vec<String> {
    vec![
        "--archive".into(),
        common::npm_archive().display().to_string(),
        "--install-dir".into(),
        common::shared_install_dir().display().to_string(),
    ]
}

/// The single archive in `dir`.
fn only_archive(dir: &Path) -> PathBuf {
    let archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(
        archives.len(),
        1,
        "one archive in {}: {archives:?}",
        dir.display()
    );
    archives[0].clone()
}

fn manifest_of(archive: &Path) -> serde_json::Value {
    let path = format!("{}.manifest.json", archive.display());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_backup_taken_during_writes_restores_every_acknowledged_id() {
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");

    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .batch_execute(
            "CREATE TABLE bulk (id bigint PRIMARY KEY, payload text);
             INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 100000) g;
             CREATE TABLE ids (id bigint PRIMARY KEY, at timestamptz DEFAULT now());",
        )
        .unwrap();

    // The writer: one autocommit INSERT per id; an id counts once the INSERT returned.
    let writer = Writer::start(port, 0, "INSERT INTO ids (id) VALUES ($1)");
    let backups = dir.path().join("backups");
    let before_backup = now_ms();
    let out = pgw(&[
        "backup",
        &format!("{}/", backups.display()),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "backup failed: {out:?}");
    assert!(text(&out.stdout).starts_with("backup: "), "{out:?}");
    // Writes continue after the backup: they must not matter.
    std::thread::sleep(Duration::from_millis(200));
    let acked = writer.finish();

    let archive = only_archive(&backups);
    let manifest = manifest_of(&archive);
    let stop_ms = manifest["stop_ms"].as_u64().unwrap();
    let must_have: Vec<i64> = acked
        .iter()
        .filter(|(_, at)| *at < stop_ms)
        .map(|(id, _)| *id)
        .collect();
    let during = acked
        .iter()
        .filter(|(_, at)| *at >= before_backup && *at < stop_ms)
        .count();
    assert!(
        during > 0,
        "the writer committed nothing while the backup ran"
    );
    assert!(
        manifest["files"].as_array().unwrap().len() > 100,
        "{manifest}"
    );
    // The record `status` reads.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data.pgwarden/backup.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["last_result"], "ok");

    // Restore into a new data directory on another port, while the original keeps running.
    let restored = dir.path().join("restored");
    let port2 = free_port();
    let mut args: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        restored.display().to_string(),
        "--port".into(),
        port2.to_string(),
    ];
    args.extend(binary_flags());
    let _background = Background {
        data_dir: restored.clone(),
    };
    let out = pgw(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "restore failed: {out:?}");
    assert!(text(&out.stdout).contains("DATABASE_URL="), "{out:?}");

    let mut c2 = connect(port2, "trader", "trader", "trader").unwrap();
    let present: std::collections::HashSet<i64> = c2
        .query("SELECT id FROM ids", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&i64> = must_have
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} ids acknowledged before the backup's stop are missing: {:?}",
        missing.len(),
        must_have.len(),
        &missing[..missing.len().min(10)]
    );
    // A full scan and amcheck on the tables and their indexes.
    let row = c2
        .query_one("SELECT count(*), sum(length(payload)) FROM bulk", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 100_000);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(100_000 * 256));
    c2.batch_execute("CREATE EXTENSION amcheck").unwrap();
    for table in ["bulk", "ids"] {
        let corrupt: i64 = c2
            .query_one(
                &format!("SELECT count(*) FROM verify_heapam('{table}')"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(corrupt, 0, "verify_heapam({table})");
        c2.batch_execute(&format!(
            "SELECT bt_index_check('{table}_pkey'::regclass, true)"
        ))
        .unwrap();
    }
    // The restored cluster takes writes.
    c2.execute("INSERT INTO ids (id) VALUES (-1)", &[]).unwrap();
    drop(server);
}

#[test]
fn a_damaged_backup_is_refused_before_anything_is_written() {
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&[
        "backup",
        archive.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    drop(server);

    // One byte in the middle changed.
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&archive, &bytes).unwrap();
    let restored = dir.path().join("restored");
    let mut args: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        restored.display().to_string(),
        "--port".into(),
        free_port().to_string(),
    ];
    args.extend(binary_flags());
    let out = pgw(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("does not match its manifest"),
        "{out:?}"
    );
    assert!(
        !restored.exists(),
        "a refused restore wrote {}",
        restored.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A manifest entry that does not match its member (the archive checksum fixed up to match):
    // caught while unpacking, and the staging directory is removed.
    bytes[middle] ^= 0x5a;
    std::fs::write(&archive, &bytes).unwrap();
    let manifest_path = format!("{}.manifest.json", archive.display());
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["files"][3]["sha256"] = serde_json::Value::String("00".repeat(32));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let out = pgw(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("is damaged"), "{out:?}");
    assert!(!restored.exists());
}

#[test]
fn backup_and_restore_refuse_clearly() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();

    // No server.
    let out = pgw(&["backup", "--data-dir", data_s]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).contains("no pgwarden is running"),
        "{out:?}"
    );

    let port = free_port();
    let server = start_server(dir.path(), port);

    // Inside the data directory.
    let inside = data.join("backups/");
    let out = pgw(&["backup", inside.to_str().unwrap(), "--data-dir", data_s]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("is inside the data directory"),
        "{out:?}"
    );
    assert!(!inside.exists());

    // Not enough space: a 2 MB filesystem.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (the tests run as root)");
    let out = pgw(&[
        "backup",
        &format!("{}/", small.display()),
        "--data-dir",
        data_s,
    ]);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("not enough space"), "{out:?}");

    // A good backup, then a restore over the running cluster without --force.
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&["backup", archive.to_str().unwrap(), "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    let out = pgw(&["restore", archive.to_str().unwrap(), "--data-dir", data_s]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("is running"), "{out:?}");
    // A backup that exists is not overwritten.
    let out = pgw(&["backup", archive.to_str().unwrap(), "--data-dir", data_s]);
    assert!(text(&out.stderr).contains("exists already"), "{out:?}");
    drop(server);
}

#[test]
fn restore_force_replaces_a_running_cluster_and_keeps_the_old_one_aside() {
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('in the backup')")
        .unwrap();
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&["backup", archive.to_str().unwrap(), "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    c.batch_execute("INSERT INTO t VALUES ('after the backup')")
        .unwrap();
    drop(c);

    let _background = Background {
        data_dir: data.clone(),
    };
    let out = pgw(&[
        "restore",
        archive.to_str().unwrap(),
        "--data-dir",
        data_s,
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The foreground supervisor was stopped cleanly; the cluster runs again, same port.
    let mut server = server;
    assert!(server.wait_exit(common::STOP).success());
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    let rows: Vec<String> = c
        .query("SELECT v FROM t ORDER BY v", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["in the backup"]);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("data.before-restore-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the old cluster kept aside");
    assert!(aside[0].path().join("PG_VERSION").is_file());
}

#[test]
fn a_snapshot_round_trip_undoes_a_schema_change() {
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts VALUES (1), (2)",
    )
    .unwrap();
    drop(c);

    // Bad names and unknown snapshots are refused, with the server left running.
    for bad in ["../x", ".hidden", "a b"] {
        let out = pgw(&["snapshot", "save", bad, "--data-dir", data_s]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    }
    let out = pgw(&["snapshot", "restore", "nope", "--data-dir", data_s]);
    assert!(
        text(&out.stderr).contains("no snapshot \"nope\""),
        "{out:?}"
    );
    assert!(connect(port, "trader", "trader", "trader").is_ok());

    let _background = Background {
        data_dir: data.clone(),
    };
    let out = pgw(&["snapshot", "save", "before-migration", "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    let mut server = server;
    assert!(server.wait_exit(common::STOP).success());

    // The "migration": a schema change and new rows, on the server started again.
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(
        "ALTER TABLE accounts ADD COLUMN email text; INSERT INTO accounts VALUES (3, 'x@y'); \
         CREATE TABLE audit (n int)",
    )
    .unwrap();
    drop(c);

    let supervisor = supervisor_pid(data_s);
    let out = pgw(&[
        "snapshot",
        "restore",
        "before-migration",
        "--data-dir",
        data_s,
    ]);
    assert!(out.status.success(), "{out:?}");
    // The running supervisor swapped the cluster itself: no second pgwarden.
    assert_eq!(supervisor_pid(data_s), supervisor, "the same supervisor");
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    let ids: Vec<i32> = c
        .query("SELECT id FROM accounts ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 2]);
    let columns: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(columns, 1, "the added column is gone");
    assert!(c.batch_execute("SELECT * FROM audit").is_err());
    drop(c);
    // The cluster the snapshot replaced is deleted (in the background); nothing else is left
    // beside the data directory but the snapshots and the spare cluster (README "Spare
    // clusters"; a spare being made, `.data.spare.work-PID`, is not left).
    let beside = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".data") && n != ".data.spare")
            .collect();
        names.sort();
        names
    };
    let deadline = Instant::now() + common::STOP;
    while !beside().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left beside the data dir: {:?}",
            beside()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = pgw(&["snapshot", "ls", "--data-dir", data_s]);
    assert!(text(&out.stdout).contains("before-migration"), "{out:?}");
    // A snapshot of another major version is refused.
    let other = dir.path().join("data.snapshots/old-major");
    std::fs::create_dir_all(other.join("data")).unwrap();
    std::fs::write(
        other.join("snapshot.json"),
        r#"{"name":"old-major","created_ms":1,"postgresql_major":"15","bytes":0,"files":0}"#,
    )
    .unwrap();
    let out = pgw(&["snapshot", "restore", "old-major", "--data-dir", data_s]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("PostgreSQL 15"), "{out:?}");
    assert!(connect(port, "trader", "trader", "trader").is_ok());

    let out = pgw(&["snapshot", "rm", "before-migration", "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    let out = pgw(&["snapshot", "ls", "--data-dir", data_s]);
    assert!(!text(&out.stdout).contains("before-migration"), "{out:?}");
}

/// The pid of the pgwarden supervising `data` (`status --json`).
fn supervisor_pid(data: &str) -> u64 {
    let out = pgw(&["status", "--data-dir", data, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["supervisor_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no supervisor: {status}"))
}

/// The state directory of supervisor `pid`: where its open `lock` file lives.
fn state_dir_of(pid: u64) -> PathBuf {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .find(|p| p.file_name().is_some_and(|n| n == "lock"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the supervisor holds its lock file open")
}

#[test]
fn a_swap_request_for_a_planted_staging_directory_is_refused_and_the_server_keeps_its_data() {
    let dir = test_dir();
    let port = free_port();
    let server = common::start(dir.path(), port, &[("PGWARDEN_SPARE", "0")]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .unwrap();
    drop(c);
    let supervisor = supervisor_pid(data_s);
    let state = state_dir_of(supervisor);
    // Another cluster, planted where a restore stages its copy: a symlink, then a directory of
    // another owner. Neither may replace the data directory.
    let planted = dir.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("PG_VERSION"), "16\n").unwrap();
    let staging = dir.path().join(".data.snapshot-staging");
    std::os::unix::fs::symlink(&planted, &staging).unwrap();
    for round in ["symlink", "foreign owner"] {
        if round == "foreign owner" {
            std::fs::remove_file(&staging).unwrap();
            std::fs::create_dir(&staging).unwrap();
            std::fs::write(staging.join("PG_VERSION"), "16\n").unwrap();
            nix::unistd::chown(&staging, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        }
        let answer = state.join("snapshot-swap.answer");
        let _ = std::fs::remove_file(&answer);
        std::fs::write(state.join("snapshot-swap.request"), "swap\n").unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        let deadline = Instant::now() + LONG;
        while !answer.is_file() {
            assert!(Instant::now() < deadline, "{round}: no answer");
            std::thread::sleep(Duration::from_millis(5));
        }
        let said = std::fs::read_to_string(&answer).unwrap();
        assert!(
            said.starts_with("failed: refusing to swap"),
            "{round}: {said}"
        );
        // The old cluster runs again, under the same supervisor, with its rows.
        assert_eq!(rows_of_t(port), ["kept"], "{round}");
        assert_eq!(supervisor_pid(data_s), supervisor, "{round}");
        assert!(planted.join("PG_VERSION").is_file(), "{round}: untouched");
        assert!(
            data.join("base").is_dir(),
            "{round}: the data directory stays"
        );
    }
    // A SIGUSR1 without a request changes nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    assert_eq!(rows_of_t(port), ["kept"]);
    assert_eq!(supervisor_pid(data_s), supervisor);
    let _ = std::fs::remove_dir_all(&staging);
}

/// A WAL archive directory the server's user can write to.
fn archive_dir(dir: &Path) -> PathBuf {
    let archive = dir.join("wal-archive");
    std::fs::create_dir(&archive).unwrap();
    let user = nix::unistd::User::from_name("pgwarden")
        .unwrap()
        .expect("user pgwarden");
    nix::unistd::chown(&archive, Some(user.uid), Some(user.gid)).unwrap();
    archive
}

/// Switches to a new WAL segment and waits until the one holding everything so far is archived.
fn archive_now(c: &mut postgres::Client) {
    let name: String = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .unwrap()
        .get(0);
    c.batch_execute("SELECT pg_switch_wal()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last: Option<String> = c
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        if last.is_some_and(|l| l >= name) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} was not archived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's clock, as a timestamp PostgreSQL reads back.
fn server_now(c: &mut postgres::Client) -> String {
    c.query_one(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn restore_to_a_time_between_two_batches_gives_exactly_the_first() {
    let dir = test_dir();
    let archive = archive_dir(dir.path());
    let archive_s = archive.display().to_string();
    let env = [("PGWARDEN_WAL_ARCHIVE", archive_s.as_str())];
    let port = free_port();
    let server = common::start(dir.path(), port, &env);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE batches (batch int, n int)")
        .unwrap();
    let backup = dir.path().join("base.tar.zst");
    let out = pgw(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");

    c.batch_execute("INSERT INTO batches SELECT 1, g FROM generate_series(1, 100) g")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let between = server_now(&mut c);
    std::thread::sleep(Duration::from_millis(1100));
    c.batch_execute("INSERT INTO batches SELECT 2, g FROM generate_series(1, 100) g")
        .unwrap();
    archive_now(&mut c);
    drop(c);

    let restored = dir.path().join("restored");
    let port2 = free_port();
    let mut args: Vec<String> = vec![
        "restore".into(),
        backup.display().to_string(),
        "--to".into(),
        between.clone(),
        "--data-dir".into(),
        restored.display().to_string(),
        "--port".into(),
        port2.to_string(),
    ];
    args.extend(binary_flags());
    let _background = Background {
        data_dir: restored.clone(),
    };
    let out = pgw_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert!(out.status.success(), "restore --to {between}: {out:?}");
    let mut c2 = connect(port2, "trader", "trader", "trader").unwrap();
    let rows: Vec<(i32, i64)> = c2
        .query(
            "SELECT batch, count(*) FROM batches GROUP BY batch ORDER BY batch",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, 100)], "restored to {between}");
    // Promoted: it takes writes.
    c2.batch_execute("INSERT INTO batches VALUES (3, 1)")
        .unwrap();
    drop(server);
}

/// The pid of a running `pgwarden archive-wal --to` process, if any.
fn archiver_copy() -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let text = String::from_utf8_lossy(&cmdline);
        (text.contains("archive-wal\0--to") && text.contains("pgwarden-test-")).then_some(pid)
    })
}

#[test]
fn the_wal_archive_survives_kill_9_mid_archive() {
    let dir = test_dir();
    let archive = archive_dir(dir.path());
    let archive_s = archive.display().to_string();
    let env = [("PGWARDEN_WAL_ARCHIVE", archive_s.as_str())];
    let port = free_port();
    let server = common::start(dir.path(), port, &env);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE ids (id bigint PRIMARY KEY)")
        .unwrap();
    let backup = dir.path().join("base.tar.zst");
    let out = pgw(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    drop(c);

    // Writes and segment switches; the postmaster (and the copy, when caught) killed mid-archive.
    let mut acked = Vec::new();
    let mut id = 0i64;
    let mut caught = 0;
    for _ in 0..3 {
        let mut c = loop {
            match connect(port, "trader", "trader", "trader") {
                Ok(c) => break c,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        for _ in 0..4 {
            for _ in 0..50 {
                id += 1;
                c.execute("INSERT INTO ids VALUES ($1)", &[&id]).unwrap();
                acked.push(id);
            }
            c.batch_execute("SELECT pg_switch_wal()").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut copy = None;
        while copy.is_none() && Instant::now() < deadline {
            copy = archiver_copy();
        }
        let postmaster = common::postmaster_pid(&data);
        let kill = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        kill(postmaster);
        if let Some(pid) = copy {
            kill(pid);
            caught += 1;
        }
        drop(c);
        // The supervisor starts a new postmaster.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .is_none_or(|p| p == postmaster)
        {
            assert!(
                Instant::now() < deadline,
                "no new postmaster after the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("[test] caught {caught} archive copies mid-way");
    let mut c = loop {
        match connect(port, "trader", "trader", "trader") {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let target = server_now(&mut c);
    std::thread::sleep(Duration::from_millis(50));
    c.execute("INSERT INTO ids VALUES (-1)", &[]).unwrap();
    archive_now(&mut c);
    drop(c);

    // No partial segment under a segment's name.
    for entry in std::fs::read_dir(&archive).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 24 {
            assert_eq!(
                entry.metadata().unwrap().len(),
                16 << 20,
                "{name} is partial"
            );
        }
    }
    // The archive replays: every acknowledged id, nothing after the target.
    let restored = dir.path().join("restored");
    let port2 = free_port();
    let mut args: Vec<String> = vec![
        "restore".into(),
        backup.display().to_string(),
        "--to".into(),
        target.clone(),
        "--data-dir".into(),
        restored.display().to_string(),
        "--port".into(),
        port2.to_string(),
    ];
    args.extend(binary_flags());
    let _background = Background {
        data_dir: restored.clone(),
    };
    let out = pgw_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert!(out.status.success(), "{out:?}");
    let mut c2 = connect(port2, "trader", "trader", "trader").unwrap();
    let present: Vec<i64> = c2
        .query("SELECT id FROM ids ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(present, acked, "restored to {target}");
    drop(server);
}

#[test]
fn retention_keeps_the_newest_backups_and_the_wal_they_need() {
    let dir = test_dir();
    let archive = archive_dir(dir.path());
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    // Not complete backups of ours: never touched.
    std::fs::write(kept.join("notes.txt"), "mine").unwrap();
    std::fs::write(
        kept.join("backup-19990101T000000.000Z.tar.zst"),
        "no manifest",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "wal_archive = {:?}\nbackup_dir = {:?}\nbackup_keep = 2\n",
            archive.display().to_string(),
            kept.display().to_string()
        ),
    )
    .unwrap();
    let config_s = config.display().to_string();
    let port = free_port();
    let server = common::start_with(dir.path(), port, &["--config", &config_s], &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (n int)").unwrap();

    let mut made = Vec::new();
    for round in 0..3 {
        c.execute("INSERT INTO t VALUES ($1)", &[&round]).unwrap();
        archive_now(&mut c);
        let out = pgw(&["backup", "--config", &config_s, "--data-dir", data_s]);
        assert!(out.status.success(), "{out:?}");
        let line = text(&out.stdout);
        let path = line
            .strip_prefix("backup: ")
            .and_then(|r| r.split(" (").next())
            .unwrap()
            .to_string();
        made.push(PathBuf::from(path));
        if round == 2 {
            assert!(
                text(&out.stderr).contains("removed 1 old backup(s)"),
                "{out:?}"
            );
        }
    }
    archive_now(&mut c);
    let mut names: Vec<String> = std::fs::read_dir(&kept)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = made[1..]
        .iter()
        .flat_map(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            [n.clone(), format!("{n}.manifest.json")]
        })
        .chain([
            "backup-19990101T000000.000Z.tar.zst".into(),
            "notes.txt".into(),
        ])
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    // The WAL before the oldest kept backup is gone; from it on, all there.
    let oldest = manifest_of(&made[1]);
    let first = oldest["wal_first"].as_str().unwrap().to_string();
    let segments: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(
        segments.iter().all(|s| *s >= first),
        "{first}: {segments:?}"
    );
    assert!(segments.contains(&first), "{first}: {segments:?}");

    // `status` shows the last backup.
    let out = pgw(&["status", "--data-dir", data_s, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["last_backup"]["last_result"], "ok", "{status}");
    assert_eq!(
        status["last_backup"]["last_success"]["archive"],
        made[2].display().to_string()
    );
    let out = pgw(&["status", "--data-dir", data_s]);
    assert!(
        text(&out.stdout).contains("last backup     ok, "),
        "{out:?}"
    );
    drop(server);
}

#[test]
fn service_install_ships_the_backup_timer_when_a_schedule_is_set() {
    let dir = test_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "backup_schedule = \"daily 03:30\"\nbackup_keep = 3\n",
    )
    .unwrap();
    let units = dir.path().join("units");
    let out = pgw(&[
        "service",
        "install",
        "--user",
        "--config",
        config.to_str().unwrap(),
        "--unit-dir",
        units.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let timer = std::fs::read_to_string(units.join("pgwarden-backup.timer")).unwrap();
    assert!(
        timer.contains("\nOnCalendar=*-*-* 03:30:00 UTC\n"),
        "{timer}"
    );
    let service = std::fs::read_to_string(units.join("pgwarden-backup.service")).unwrap();
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    assert!(
        exec.ends_with(&format!(
            " backup --scheduled --config {}",
            config.display()
        )),
        "{exec}"
    );
    assert!(text(&out.stdout).contains("enable --now pgwarden-backup.timer"));

    // Without a schedule: no timer.
    std::fs::write(&config, "backup_keep = 3\n").unwrap();
    let other = dir.path().join("units2");
    let out = pgw(&[
        "service",
        "install",
        "--user",
        "--config",
        config.to_str().unwrap(),
        "--unit-dir",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!other.join("pgwarden-backup.timer").exists());
}

/// A copy of `archive` at `to` whose manifest gives its last member a wrong checksum (the
/// archive's own checksum still matches): found only at the end of the unpacking.
fn damaged_late(archive: &Path, to: &Path) -> PathBuf {
    std::fs::copy(archive, to).unwrap();
    let mut manifest = manifest_of(archive);
    let files = manifest["files"].as_array_mut().unwrap();
    let last = files.len() - 1;
    files[last]["sha256"] = serde_json::Value::String("00".repeat(32));
    std::fs::write(
        format!("{}.manifest.json", to.display()),
        manifest.to_string(),
    )
    .unwrap();
    to.to_path_buf()
}

#[test]
fn a_restore_that_fails_late_puts_the_old_cluster_back_and_starts_it() {
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('in the backup')")
        .unwrap();
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&["backup", archive.to_str().unwrap(), "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    c.batch_execute("INSERT INTO t VALUES ('old cluster')")
        .unwrap();
    drop(c);
    let damaged = damaged_late(&archive, &dir.path().join("late.tar.zst"));

    let _background = Background {
        data_dir: data.clone(),
    };
    let out = pgw(&[
        "restore",
        damaged.to_str().unwrap(),
        "--data-dir",
        data_s,
        "--force",
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is damaged") && stderr.contains("is back there"),
        "{stderr}"
    );
    let mut server = server;
    assert!(
        server.wait_exit(common::STOP).success(),
        "stopped for the restore"
    );
    // Back in place, under its own name, and started again as it was.
    assert_eq!(rows_of_t(port), ["in the backup", "old cluster"]);
    assert!(asides_of(&data).is_empty(), "{:?}", asides_of(&data));
    let names = names_in(&data);
    assert!(names.contains(&"pgwarden.json".into()), "{names:?}");
    assert!(!names.contains(&"pgwarden.creating".into()), "{names:?}");
}

/// True while `dir` is the root of a filesystem of its own.
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata(dir).unwrap().dev();
    own != std::fs::metadata(dir.parent().unwrap()).unwrap().dev()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The directories beside `dir` named `<dir>.before-restore-…`.
fn asides_of(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        "{}.before-restore-",
        dir.file_name().unwrap().to_string_lossy()
    );
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Not the state directory of a kept cluster that was started.
            name.starts_with(&prefix) && !name.ends_with(".pgwarden")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn rows_of_t(port: u16) -> Vec<String> {
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.query("SELECT v FROM t ORDER BY v", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn restore_into_a_mount_point_works_in_place_survives_kill_9_and_keeps_the_old_cluster() {
    let dir = test_dir();
    let volume = dir.path().join("volume");
    // Unmounted on drop, after the servers' guards below (dropped in reverse order).
    let Some(_tmpfs) = common::Tmpfs::mount(&volume, "1g", 0o755) else {
        return;
    };
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    // Big enough that a restore takes a moment, to be killed in the middle of it.
    c.batch_execute(
        "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS payload \
           FROM generate_series(1, 150000) g;
         CREATE TABLE t (v text); INSERT INTO t VALUES ('in the backup');",
    )
    .unwrap();
    drop(c);
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&[
        "backup",
        archive.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    drop(server);

    // 1. Into the empty mount point: in place (no rename over it), a cluster on the volume.
    let port2 = free_port();
    let mut args: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        volume.display().to_string(),
        "--port".into(),
        port2.to_string(),
    ];
    args.extend(binary_flags());
    let _restored = Background {
        data_dir: volume.clone(),
    };
    let out = pgw(&common::as_strs(&args));
    assert!(out.status.success(), "restore into a mount point: {out:?}");
    assert!(is_mount_point(&volume), "restored on the mount itself");
    let names = names_in(&volume);
    for want in ["PG_VERSION", "pgwarden.json", "base"] {
        assert!(names.contains(&want.to_string()), "{want}: {names:?}");
    }
    for gone in ["pgwarden.creating", "pgwarden.json.restoring"] {
        assert!(!names.contains(&gone.to_string()), "{gone} left: {names:?}");
    }
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&volume).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let pgwarden_uid = nix::unistd::User::from_name("pgwarden")
            .unwrap()
            .expect("user pgwarden")
            .uid
            .as_raw();
        assert_eq!(meta.uid(), pgwarden_uid, "the mount root is postgres's own");
    }
    assert_eq!(rows_of_t(port2), ["in the backup"]);
    let mut c = connect(port2, "trader", "trader", "trader").unwrap();
    c.batch_execute("INSERT INTO t VALUES ('old cluster')")
        .unwrap();
    drop(c);

    // 2. `restore --force` over that running cluster, killed (-9) while it unpacks.
    let mut force = args.clone();
    force.push("--force".into());
    let mut restoring = Pgwarden::start(&common::as_strs(&force), &[]);
    let deadline = Instant::now() + LONG;
    loop {
        // Unpacking: marked unfinished, base/ being written, global/ not yet.
        if volume.join("pgwarden.creating").exists()
            && volume.join("base").exists()
            && !volume.join("global").exists()
        {
            break;
        }
        assert!(
            !restoring.has_exited(),
            "the restore ended before it could be killed: {}",
            restoring.stderr_text()
        );
        assert!(
            Instant::now() < deadline,
            "the restore never began to unpack"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    restoring.signal(nix::sys::signal::Signal::SIGKILL);
    restoring.wait_exit(common::STOP);
    drop(restoring);
    assert!(is_mount_point(&volume));
    let left = names_in(&volume);
    assert!(left.contains(&"pgwarden.creating".into()), "{left:?}");
    assert!(
        !left.contains(&"pgwarden.json".into()),
        "not complete: {left:?}"
    );
    let note = std::fs::read_to_string(volume.join("pgwarden.creating")).unwrap();
    assert!(note.contains("being restored"), "{note}");
    // The old cluster: whole, beside the mount point (it could not be renamed off it).
    let asides = asides_of(&volume);
    assert_eq!(asides.len(), 1, "{asides:?}");
    let old = asides[0].clone();
    assert!(note.contains(&old.display().to_string()), "{note}");
    for want in ["PG_VERSION", "pgwarden.json", "global"] {
        assert!(old.join(want).exists(), "{want} in {}", old.display());
    }
    let partials: Vec<String> = names_in(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
    // `run` would never start it as a cluster: doctor says what run does with it.
    let out = pgw(&["doctor", "--data-dir", volume.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("did not finish")
            || text(&out.stderr).contains("did not finish"),
        "{out:?}"
    );

    // 3. The next restore clears the unfinished one (no --force needed) and restores.
    let out = pgw(&common::as_strs(&args));
    assert!(out.status.success(), "restore after a kill: {out:?}");
    assert!(is_mount_point(&volume));
    assert_eq!(rows_of_t(port2), ["in the backup"]);

    // The kept cluster starts, with what was written after the backup.
    let port3 = free_port();
    let mut old_args: Vec<String> = vec![
        "start".into(),
        "--data-dir".into(),
        old.display().to_string(),
        "--port".into(),
        port3.to_string(),
    ];
    old_args.extend(binary_flags());
    let _old = Background {
        data_dir: old.clone(),
    };
    let out = pgw(&common::as_strs(&old_args));
    assert!(out.status.success(), "the kept cluster starts: {out:?}");
    assert_eq!(rows_of_t(port3), ["in the backup", "old cluster"]);

    // 4. `--force` with a backup whose last member is found damaged only while unpacking: the
    // old cluster is copied back onto the mount and started again; its copy beside is gone.
    let damaged = damaged_late(&archive, &dir.path().join("late.tar.zst"));
    let mut late = force.clone();
    late[1] = damaged.display().to_string();
    let out = pgw(&common::as_strs(&late));
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is damaged") && stderr.contains("is back there"),
        "{stderr}"
    );
    assert!(is_mount_point(&volume));
    assert_eq!(
        rows_of_t(port2),
        ["in the backup"],
        "the old cluster runs again"
    );
    assert_eq!(asides_of(&volume).len(), 1, "{:?}", asides_of(&volume));
    let names = names_in(&volume);
    assert!(names.contains(&"pgwarden.json".into()), "{names:?}");
    assert!(!names.contains(&"pgwarden.creating".into()), "{names:?}");

    // 5. `--force` to the end: the output says where the old cluster went, and why there.
    let out = pgw(&common::as_strs(&force));
    assert!(out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the old cluster is kept in"), "{stderr}");
    assert!(stderr.contains("mount point"), "{stderr}");
    let asides = asides_of(&volume);
    assert_eq!(asides.len(), 2, "{asides:?}");
    assert!(
        stderr.contains(&asides[1].display().to_string())
            || stderr.contains(&asides[0].display().to_string())
    );
    assert!(is_mount_point(&volume));
    assert_eq!(rows_of_t(port2), ["in the backup"]);

    // A snapshot restore cannot swap a mount point: refused before anything changes.
    let out = pgw(&[
        "snapshot",
        "restore",
        "any",
        "--data-dir",
        volume.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("is a mount point"), "{out:?}");
    assert_eq!(rows_of_t(port2), ["in the backup"], "still running");
}

/// Every entry under `dir`: (relative path, size, mtime in ns, mode, uid), to see that nothing
/// changed there.
fn tree_state(dir: &Path) -> Vec<(String, u64, i128, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((
                entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string(),
                meta.len(),
                meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                meta.mode(),
                meta.uid(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn a_tablespace_is_backed_up_during_writes_and_restored_to_a_mapped_location() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !common::require_root("a tablespace directory owned by the server's user") {
        return;
    }
    let pgwarden_user = nix::unistd::User::from_name("pgwarden")
        .unwrap()
        .expect("user pgwarden (.ci/run creates it)");
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let ts1 = dir.path().join("ts1");
    std::fs::create_dir(&ts1).unwrap();
    nix::unistd::chown(&ts1, Some(pgwarden_user.uid), Some(pgwarden_user.gid)).unwrap();
    std::fs::set_permissions(&ts1, std::fs::Permissions::from_mode(0o700)).unwrap();

    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        ts1.display()
    ))
    .unwrap();
    c.batch_execute(
        "CREATE TABLE spaced (id bigint PRIMARY KEY, payload text) TABLESPACE ts;
         INSERT INTO spaced SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    drop(c);

    // A writer into the tablespace while the backup runs.
    let writer = Writer::start(
        port,
        20_000,
        "INSERT INTO spaced VALUES ($1, 'written during')",
    );
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&[
        "backup",
        archive.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "backup with a tablespace: {out:?}");
    std::thread::sleep(Duration::from_millis(100));
    let acked = writer.finish();
    common::stop(server, nix::sys::signal::Signal::SIGTERM);

    let manifest = manifest_of(&archive);
    let spaces = manifest["tablespaces"]
        .as_array()
        .expect("tablespaces listed");
    assert_eq!(spaces.len(), 1, "{manifest}");
    assert_eq!(spaces[0]["location"], ts1.display().to_string());
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"]
                .as_str()
                .unwrap()
                .starts_with("pgwarden.tablespaces/")),
        "the tablespace's files are in the manifest"
    );
    let stop_ms = manifest["stop_ms"].as_u64().unwrap();
    let must_have: Vec<i64> = acked
        .iter()
        .filter(|(_, at)| *at < stop_ms)
        .map(|(id, _)| *id)
        .collect();
    let original = tree_state(&ts1);
    assert!(!original.is_empty());

    // Its location is not empty (the original cluster's): refused, nothing written.
    let refused = dir.path().join("refused");
    let mut args: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        refused.display().to_string(),
        "--port".into(),
        free_port().to_string(),
    ];
    args.extend(binary_flags());
    let out = pgw(&common::as_strs(&args));
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("--tablespace"),
        "{stderr}"
    );
    assert!(
        !refused.exists(),
        "a refused restore wrote {}",
        refused.display()
    );
    assert_eq!(
        tree_state(&ts1),
        original,
        "the original location untouched"
    );

    // Mapped to a new location.
    let ts2 = dir.path().join("new/ts2");
    let restored = dir.path().join("restored");
    let port2 = free_port();
    let mut args: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        restored.display().to_string(),
        "--port".into(),
        port2.to_string(),
        "--tablespace".into(),
        format!("{}={}", ts1.display(), ts2.display()),
    ];
    args.extend(binary_flags());
    let _background = Background {
        data_dir: restored.clone(),
    };
    let out = pgw(&common::as_strs(&args));
    assert!(out.status.success(), "restore with --tablespace: {out:?}");
    let mut c2 = connect(port2, "trader", "trader", "trader").unwrap();
    let present: std::collections::HashSet<i64> = c2
        .query("SELECT id FROM spaced", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!((1..=20_000).all(|id| present.contains(&id)));
    let missing: Vec<&i64> = must_have
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged ids missing",
        missing.len()
    );
    let location: String = c2
        .query_one(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(location, ts2.display().to_string());
    c2.execute("INSERT INTO spaced VALUES (-1, 'after the restore')", &[])
        .unwrap();
    c2.batch_execute("CHECKPOINT").unwrap();
    drop(c2);
    // Its files are in the new location, the server user's, 0700; the original untouched.
    let meta = std::fs::metadata(&ts2).unwrap();
    assert_eq!(meta.uid(), pgwarden_user.uid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let version_dirs: Vec<String> = names_in(&ts2)
        .into_iter()
        .filter(|n| n.starts_with("PG_16_"))
        .collect();
    assert_eq!(version_dirs.len(), 1, "{:?}", names_in(&ts2));
    assert!(tree_state(&ts2).len() > 3, "{:?}", tree_state(&ts2));
    let oid = spaces[0]["oid"].as_str().unwrap();
    assert_eq!(
        std::fs::read_link(restored.join("pg_tblspc").join(oid)).unwrap(),
        ts2
    );
    assert_eq!(
        tree_state(&ts1),
        original,
        "the original location untouched"
    );

    // A restore killed (-9) while it writes the tablespace: the data directory is unfinished
    // and the tablespace's directory half-written; the next restore removes what it left
    // (from its journal) and completes.
    let ts3 = dir.path().join("ts3");
    let again = dir.path().join("again");
    let port3 = free_port();
    let mut args3: Vec<String> = vec![
        "restore".into(),
        archive.display().to_string(),
        "--data-dir".into(),
        again.display().to_string(),
        "--port".into(),
        port3.to_string(),
        "--tablespace".into(),
        format!("{}={}", ts1.display(), ts3.display()),
    ];
    args3.extend(binary_flags());
    let _background3 = Background {
        data_dir: again.clone(),
    };
    let mut restoring = Pgwarden::start(&common::as_strs(&args3), &[]);
    let deadline = Instant::now() + LONG;
    while !ts3.is_dir() || names_in(&ts3).is_empty() {
        assert!(
            !restoring.has_exited(),
            "the restore ended before it could be killed: {}",
            restoring.stderr_text()
        );
        assert!(
            Instant::now() < deadline,
            "the restore never reached the tablespace"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    restoring.signal(nix::sys::signal::Signal::SIGKILL);
    restoring.wait_exit(common::STOP);
    drop(restoring);
    assert!(again.join("pgwarden.creating").exists());
    assert!(!again.join("pgwarden.json").exists());
    assert!(
        !names_in(&ts3).is_empty(),
        "the half-written tablespace is there"
    );
    let out = pgw(&common::as_strs(&args3));
    assert!(out.status.success(), "restore after a kill: {out:?}");
    let n: i64 = connect(port3, "trader", "trader", "trader")
        .unwrap()
        .query_one(
            "SELECT count(*) FROM spaced WHERE id BETWEEN 1 AND 20000",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 20_000);
    assert_eq!(
        tree_state(&ts1),
        original,
        "the original location untouched"
    );

    // A snapshot of a cluster with tablespaces is refused, before the server is stopped.
    let out = pgw(&[
        "snapshot",
        "save",
        "s",
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("tablespaces"), "{out:?}");
    let mut c2 = connect(port2, "trader", "trader", "trader").unwrap();
    c2.batch_execute("SELECT 1").unwrap();
}

#[test]
fn restore_force_on_a_mount_point_without_room_beside_it_is_refused_with_nothing_changed() {
    let dir = test_dir();
    // A small filesystem holding the mount point of a large one: no room for the old cluster's
    // copy beside the mount point.
    let parent = dir.path().join("small");
    let Some(_outer) = common::Tmpfs::mount(&parent, "24m", 0o755) else {
        return;
    };
    let volume = parent.join("volume");
    let Some(_volume) = common::Tmpfs::mount(&volume, "512m", 0o755) else {
        return;
    };
    let port = free_port();
    let args = common::run_args_for(
        &common::npm_archive(),
        &common::shared_install_dir(),
        &volume,
        port,
    );
    let server = Pgwarden::start(&common::as_strs(&args), &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .unwrap();
    drop(c);
    let archive = dir.path().join("b.tar.zst");
    let out = pgw(&[
        "backup",
        archive.to_str().unwrap(),
        "--data-dir",
        volume.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let before = names_in(&volume);

    let out = pgw(&[
        "restore",
        archive.to_str().unwrap(),
        "--data-dir",
        volume.to_str().unwrap(),
        "--force",
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is a mount point") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(stderr.contains("help:"), "{stderr}");
    // Refused before the server was stopped: it still serves, on the same cluster.
    assert!(!server.has_exited(), "the server was not stopped");
    assert_eq!(rows_of_t(port), ["kept"]);
    assert_eq!(names_in(&volume), before);
    assert!(asides_of(&volume).is_empty());
    assert!(
        !names_in(&parent).iter().any(|n| n.ends_with(".partial")),
        "{:?}",
        names_in(&parent)
    );
    drop(server);
}

/// The rows of `batches`, by batch.
fn batches_of(port: u16) -> Vec<(i32, i64)> {
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.query(
        "SELECT batch, count(*) FROM batches GROUP BY batch ORDER BY batch",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn a_to_time_recovery_cannot_use_is_refused_before_the_running_server_is_touched() {
    let dir = test_dir();
    let archive = archive_dir(dir.path());
    let archive_s = archive.display().to_string();
    let env = [("PGWARDEN_WAL_ARCHIVE", archive_s.as_str())];
    let port = free_port();
    let server = common::start(dir.path(), port, &env);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(
        "CREATE TABLE batches (batch int, n int); \
         INSERT INTO batches SELECT 1, g FROM generate_series(1, 10) g",
    )
    .unwrap();
    let backup = dir.path().join("base.tar.zst");
    let out = pgw(&["backup", backup.to_str().unwrap(), "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    // An hour before the backup ended, as PostgreSQL writes it.
    let stop_ms = manifest_of(&backup)["stop_ms"].as_u64().unwrap();
    let hour_before: String = c
        .query_one(
            "SELECT to_char(to_timestamp($1::float8 / 1000 - 3600) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD HH24:MI:SS') || '+00'",
            &[&(stop_ms as f64)],
        )
        .unwrap()
        .get(0);
    c.batch_execute("INSERT INTO batches SELECT 2, g FROM generate_series(1, 10) g")
        .unwrap();
    archive_now(&mut c);
    drop(c);
    let before = batches_of(port);
    assert_eq!(before, [(1, 10), (2, 10)]);
    let postmaster = common::postmaster_pid(&data);

    for (value, rule) in [
        ("garbage", "four-digit year"),
        ("2026-13-45 99:99:99", "month 13 is out of range"),
        ("2026-02-30 10:00:00", "day 30 is out of range"),
        ("2026-12-01 24:30:00", "hour 24"),
        ("now", "special time values"),
        ("infinity", "special time values"),
        ("today", "special time values"),
        ("epoch", "special time values"),
        ("2026-12-01 10:00:00 Mars/Olympus", "not an abbreviation"),
        (hour_before.as_str(), "is before the end of this backup"),
        ("2999-01-01 00:00:00+00", "is after what the archive holds"),
    ] {
        let out = pgw_env(
            &[
                "restore",
                backup.to_str().unwrap(),
                "--data-dir",
                data_s,
                "--force",
                "--to",
                value,
            ],
            &env,
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--to {value:?}: {out:?}");
        assert!(
            stderr.contains(&format!("--to {value:?}")) && stderr.contains(rule),
            "--to {value:?} names the value and {rule:?}: {stderr}"
        );
        // Untouched: the same supervisor and postmaster, the same rows, nothing set aside.
        assert!(!server.has_exited(), "--to {value:?} stopped the server");
        assert_eq!(common::postmaster_pid(&data), postmaster, "--to {value:?}");
        assert_eq!(batches_of(port), before, "--to {value:?}");
        assert!(asides_of(&data).is_empty(), "--to {value:?}");
    }
    common::stop(server, nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn a_restore_whose_server_cannot_reach_its_target_puts_the_old_cluster_back_and_starts_it() {
    let dir = test_dir();
    let archive = archive_dir(dir.path());
    let archive_s = archive.display().to_string();
    let env = [("PGWARDEN_WAL_ARCHIVE", archive_s.as_str())];
    let port = free_port();
    let mut server = common::start(dir.path(), port, &env);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE batches (batch int, n int)")
        .unwrap();
    let backup = dir.path().join("base.tar.zst");
    let out = pgw(&["backup", backup.to_str().unwrap(), "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    c.batch_execute("INSERT INTO batches SELECT 1, g FROM generate_series(1, 10) g")
        .unwrap();
    // A target after the last commit the archive will hold, but before its newest segment is
    // archived: it passes every check made up front, and recovery ends before reaching it.
    std::thread::sleep(Duration::from_millis(1100));
    let after_last_commit = server_now(&mut c);
    std::thread::sleep(Duration::from_millis(1100));
    archive_now(&mut c);
    drop(c);
    let before = batches_of(port);

    let _background = Background {
        data_dir: data.clone(),
    };
    let out = pgw_env(
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            data_s,
            "--force",
            "--to",
            &after_last_commit,
        ],
        &env,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("did not start")
            && stderr.contains("the restore was undone")
            && stderr.contains("is back there and runs again"),
        "{stderr}"
    );
    assert!(
        server.wait_exit(common::STOP).success(),
        "stopped for the restore"
    );
    // The old cluster, under its own name, running again with its rows; nothing left aside.
    assert_eq!(batches_of(port), before);
    assert!(asides_of(&data).is_empty(), "{:?}", asides_of(&data));
    let names = names_in(&data);
    assert!(names.contains(&"pgwarden.json".into()), "{names:?}");
    assert!(!names.contains(&"pgwarden.creating".into()), "{names:?}");
    assert!(!names.contains(&"recovery.signal".into()), "{names:?}");
}

/// The staging directories of snapshot restores beside `data` (`.data.snapshot…`).
fn snapshot_staging_of(data: &Path) -> Vec<String> {
    names_in(data.parent().unwrap())
        .into_iter()
        .filter(|n| n.starts_with(".data.snapshot"))
        .collect()
}

#[test]
fn killed_snapshot_restores_leave_no_copy_once_a_later_snapshot_command_ran() {
    let dir = test_dir();
    let port = free_port();
    // No spare copy of the snapshot: every restore here copies, which is what is killed.
    let mut server = common::start(dir.path(), port, &[("PGWARDEN_SPARE", "0")]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('snapshotted')")
        .unwrap();
    drop(c);
    let _background = Background {
        data_dir: data.clone(),
    };
    let out = pgw(&["snapshot", "save", "s1", "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        server.wait_exit(common::STOP).success(),
        "stopped for the save"
    );
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("INSERT INTO t VALUES ('after the snapshot')")
        .unwrap();
    drop(c);

    for round in 1..=3 {
        let mut restore = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
            .args(["snapshot", "restore", "s1", "--data-dir", data_s])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed once its copy is under way (the server still runs meanwhile).
        let deadline = Instant::now() + LONG;
        while snapshot_staging_of(&data).is_empty() {
            assert!(
                restore.try_wait().unwrap().is_none(),
                "round {round}: the restore ended before its copy could be seen"
            );
            assert!(Instant::now() < deadline, "round {round}: no copy began");
            std::thread::sleep(Duration::from_millis(1));
        }
        restore.kill().unwrap();
        restore.wait().unwrap();
        assert!(
            !snapshot_staging_of(&data).is_empty(),
            "round {round}: the kill left the copy, as a kill does"
        );
        assert_eq!(
            rows_of_t(port),
            ["after the snapshot", "snapshotted"],
            "round {round}: the running server is untouched"
        );
    }
    // The next snapshot command clears what the killed ones left, then does its own work.
    let out = pgw(&["snapshot", "restore", "s1", "--data-dir", data_s]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(snapshot_staging_of(&data), Vec::<String>::new());
    assert_eq!(rows_of_t(port), ["snapshotted"]);
}

#[test]
fn settings_and_backup_records_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = test_dir();
    let port = free_port();
    let server = start_server(dir.path(), port);
    let data = dir.path().join("data");
    let out = pgw(&["backup", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let state = dir.path().join("data.pgwarden");
    for name in ["settings.json", "backup.json"] {
        let mode = std::fs::metadata(state.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }
    drop(server);
}
