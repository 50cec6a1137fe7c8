//! The data directory: a first launch into a mount point (initialised in place, atomic by
//! marker), and `doctor` giving the verdict `run` gives, on the same directories.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A password no template cluster is cached for (the cache is keyed by it, and only throwaway
/// launches fill it), so that a first launch runs initdb whatever other tests cached.
const UNCACHED: &[(&str, &str)] = &[("POSTGRES_PASSWORD", "not-from-a-template")];

/// True while `dir` is the root of a filesystem of its own (a mount point).
fn is_mount_point(dir: &Path) -> bool {
    let own = std::fs::metadata(dir).unwrap().dev();
    let parent = std::fs::metadata(dir.parent().unwrap()).unwrap().dev();
    own != parent
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

#[test]
fn a_tmpfs_mounted_at_the_data_dir_is_initialised_in_place_recovered_after_a_kill_and_restarted() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    // Unmounted on drop, after the guards below killed everything (dropped in reverse order).
    let Some(_tmpfs) = Tmpfs::mount(&data_dir, "256m", 0o755) else {
        return;
    };
    let port = free_port();
    let args = run_args_for(&npm_archive(), &shared_install_dir(), &data_dir, port);
    let args = as_strs(&args);

    // 1. A first launch killed while initdb runs: marked as being created, not complete.
    let mut pgwarden = Pgwarden::start(&args, UNCACHED);
    pgwarden.wait_for_stderr("running initdb", FIRST_LAUNCH);
    pgwarden.signal(Signal::SIGKILL);
    pgwarden.wait_exit(STOP);
    drop(pgwarden);
    assert!(is_mount_point(&data_dir), "the mount is still there");
    let left = names_in(&data_dir);
    assert!(left.contains(&"pgwarden.creating".into()), "{left:?}");
    assert!(!left.contains(&"pgwarden.json".into()), "{left:?}");
    assert!(
        !data_dir.join("PG_VERSION").exists(),
        "no cluster at the data path yet: {left:?}"
    );

    // 2. The next launch recognises the half-made cluster, clears it and initialises in place.
    let pgwarden = Pgwarden::start(&args, UNCACHED);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let stderr = pgwarden.stderr_text();
    assert!(stderr.contains("clearing it and starting over"), "{stderr}");
    assert!(
        !stderr.contains("cannot move"),
        "no rename over the mount point: {stderr}"
    );
    let mut client = connect(port, "trader", UNCACHED[0].1, "trader").expect("connect");
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42);")
        .unwrap();
    drop(client);
    stop(pgwarden, Signal::SIGTERM);
    assert!(is_mount_point(&data_dir), "initialised on the mount itself");
    let names = names_in(&data_dir);
    assert!(names.contains(&"PG_VERSION".into()), "{names:?}");
    assert!(names.contains(&"pgwarden.json".into()), "{names:?}");
    for gone in ["pgwarden.creating", "pgwarden.initdb"] {
        assert!(!names.contains(&gone.into()), "{gone} left: {names:?}");
    }
    let meta = std::fs::metadata(&data_dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let postgres_uid = nix::unistd::User::from_name("pgwarden")
        .unwrap()
        .expect("user pgwarden (.ci/run creates it)")
        .uid
        .as_raw();
    assert_eq!(meta.uid(), postgres_uid, "the mount root is postgres's own");

    // 3. A restart uses the cluster as it is.
    let pgwarden = Pgwarden::start(&args, UNCACHED);
    pgwarden.wait_ready(START);
    let stderr = pgwarden.stderr_text();
    assert!(!stderr.contains("initialising a new cluster"), "{stderr}");
    let mut client = connect(port, "trader", UNCACHED[0].1, "trader").expect("connect");
    let n: i32 = client.query_one("SELECT n FROM kept", &[]).unwrap().get(0);
    assert_eq!(n, 42);
    drop(client);
    stop(pgwarden, Signal::SIGTERM);
}

/// How a data directory is made for the comparison.
fn make(kind: &str, at: &Path, postgres: (u32, u32)) {
    let own = |p: &Path| nix::unistd::chown(p, Some(postgres.0.into()), Some(postgres.1.into()));
    match kind {
        "missing" | "new, with a non-empty initdb_waldir" => {}
        "empty" => std::fs::create_dir(at).unwrap(),
        "not a cluster" => {
            std::fs::create_dir(at).unwrap();
            std::fs::write(at.join("notes.txt"), "someone's files").unwrap();
        }
        "PostgreSQL 15" | "wrong owner" => {
            std::fs::create_dir(at).unwrap();
            std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o700)).unwrap();
            let major = if kind == "wrong owner" { "16" } else { "15" };
            std::fs::write(at.join("PG_VERSION"), format!("{major}\n")).unwrap();
            std::fs::create_dir(at.join("base")).unwrap();
            if kind == "PostgreSQL 15" {
                own(at).unwrap();
            }
            // "wrong owner": left to root; postgres runs as the pgwarden user.
        }
        "half-made" => {
            std::fs::create_dir(at).unwrap();
            std::fs::write(at.join("pgwarden.creating"), "being created by pgwarden\n").unwrap();
            let staging = at.join("pgwarden.initdb");
            std::fs::create_dir_all(staging.join("base/1")).unwrap();
            std::fs::write(staging.join("PG_VERSION"), "16\n").unwrap();
            std::fs::write(at.join("PG_VERSION"), "16\n").unwrap();
            own(at).unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn doctor_and_run_give_the_same_verdict_on_the_same_data_dirs() {
    if !require_root("data dirs owned by another user, and postgres run as pgwarden") {
        return;
    }
    let user = nix::unistd::User::from_name("pgwarden")
        .unwrap()
        .expect("user pgwarden (.ci/run creates it)");
    let postgres = (user.uid.as_raw(), user.gid.as_raw());
    let dir = test_dir();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(
        &config,
        format!(
            "archive = {:?}\ninstall_dir = {:?}\n",
            npm_archive().display().to_string(),
            shared_install_dir().display().to_string()
        ),
    )
    .unwrap();
    let config = config.display().to_string();

    // (kind, whether run uses it)
    let cases = [
        ("missing", true),
        ("empty", true),
        ("not a cluster", false),
        ("PostgreSQL 15", false),
        ("wrong owner", false),
        ("half-made", true),
        // Not a data dir, but a refusal of run's before anything changes, checked with them.
        ("new, with a non-empty initdb_waldir", false),
    ];
    let waldir = dir.path().join("waldir");
    std::fs::create_dir(&waldir).unwrap();
    std::fs::write(
        waldir.join("000000010000000000000001"),
        "a killed launch's WAL",
    )
    .unwrap();
    let waldir = waldir.display().to_string();
    for (i, (kind, usable)) in cases.into_iter().enumerate() {
        let data_dir: PathBuf = dir.path().join(format!("case{i}")).join("data");
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            data_dir.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        make(kind, &data_dir, postgres);
        let port = free_port().to_string();
        let data = data_dir.display().to_string();
        let common = ["--config", &config, "--data-dir", &data, "--port", &port];

        let mut doctor_args = vec!["doctor"];
        doctor_args.extend(common);
        let env: &[(&str, &str)] = if kind.contains("initdb_waldir") {
            &[("POSTGRES_INITDB_WALDIR", &waldir)]
        } else {
            &[]
        };
        let doctor = run_to_exit(&doctor_args, env, START);
        let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
        let data_lines: Vec<&str> = report
            .lines()
            .filter(|l| l.contains(" data dir: "))
            .collect();
        assert_eq!(data_lines.len(), 1, "{kind}: {report}");
        let doctor_refuses = data_lines[0].starts_with("FAIL");

        let mut run_args = vec!["run"];
        run_args.extend(common);
        let pgwarden = Pgwarden::start(&run_args, env);
        let deadline = std::time::Instant::now() + FIRST_LAUNCH;
        let run_refused = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: run neither got ready nor exited\n{}",
                pgwarden.stderr_text()
            );
            if pgwarden.has_exited() {
                break true;
            }
            if pgwarden.stdout_text().contains("ready: ") {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if run_refused {
            // Its last lines, collected.
            let mut pgwarden = pgwarden;
            pgwarden.wait_exit(STOP);
            assert!(
                !usable,
                "{kind}: run refused it\n{}",
                pgwarden.stderr_text()
            );
            if kind.starts_with("new") {
                assert!(
                    !data_dir.exists(),
                    "{kind}: refused before anything changed"
                );
            }
            check_refusal(
                kind,
                &doctor,
                &report,
                data_lines[0],
                &pgwarden.stderr_text(),
            );
            continue;
        }

        assert!(
            usable,
            "{kind}: run did not refuse it\n{}",
            pgwarden.stderr_text()
        );
        assert!(
            !doctor_refuses,
            "{kind}: doctor says FAIL where run uses the directory\n{report}"
        );
        stop(pgwarden, Signal::SIGTERM);
    }
}

fn check_refusal(
    kind: &str,
    doctor: &std::process::Output,
    report: &str,
    line: &str,
    run_stderr: &str,
) {
    assert!(
        line.starts_with("FAIL"),
        "{kind}: run refuses it, doctor does not say FAIL\n--- doctor ---\n{report}\n--- run ---\n{run_stderr}"
    );
    assert_eq!(doctor.status.code(), Some(1), "{kind}: {report}");
    // The very same check: run's error is doctor's FAIL line.
    let error = run_stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("{kind}: no error line\n{run_stderr}"));
    assert!(
        line.contains(error),
        "{kind}: doctor says {line:?}, run says {error:?}"
    );
    assert!(
        report.contains("help: "),
        "{kind}: a fix is named: {report}"
    );
}

#[test]
fn a_first_launch_killed_while_its_temporary_server_runs_is_recovered_by_the_next() {
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let port = free_port();
    // An init script makes the first launch run initdb and a temporary server (no template).
    let init = dir.path().join("initdb.d");
    std::fs::create_dir(&init).unwrap();
    std::fs::write(init.join("01-slow.sh"), "sleep 20\n").unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = run_args_for(&npm_archive(), &shared_install_dir(), &data_dir, port);
    args.extend(["--init-dir".to_string(), init.display().to_string()]);
    let args = as_strs(&args);

    // SIGKILL while the temporary server runs the script: that server outlives pgwarden.
    let mut pgwarden = Pgwarden::start(&args, &[]);
    pgwarden.wait_for_stderr("running init script", FIRST_LAUNCH);
    pgwarden.signal(Signal::SIGKILL);
    pgwarden.wait_exit(STOP);
    let staging = data_dir.join("pgwarden.initdb");
    // Where the temporary server dies with pgwarden, there is no orphan, only the recovery.
    let orphan = std::fs::read_to_string(staging.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        .filter(|pid| process_alive(*pid));
    let _orphan_guard = orphan.map(KillPostgres);
    std::fs::write(init.join("01-slow.sh"), "true\n").unwrap();

    let pgwarden = Pgwarden::start(&args, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    connect(port, "trader", "trader", "trader").expect("the relaunched cluster works");
    if let Some(pid) = orphan {
        assert!(
            !process_alive(pid),
            "the interrupted launch's temporary server (pid {pid}) still runs"
        );
        let stderr = pgwarden.stderr_text();
        assert!(
            stderr.contains("still runs on this data directory"),
            "{stderr}"
        );
    }
    assert!(!staging.exists());
    assert!(data_dir.join("pgwarden.json").is_file());
    stop(pgwarden, Signal::SIGTERM);
}

/// SIGKILLs a postgres left running (by a failing test), on drop.
struct KillPostgres(i32);

impl Drop for KillPostgres {
    fn drop(&mut self) {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.0)).unwrap_or_default();
        if process_alive(self.0) && comm.trim() == "postgres" {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}
