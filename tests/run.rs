//! `pgwarden run` end to end (issue 2): real binary, real PostgreSQL 16, real signals.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn first_launch_serves_the_seed_database_and_stops_cleanly() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    let ready = pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    assert_eq!(
        ready,
        format!(
            "ready: postgres://trader@127.0.0.1:{port}/trader (PostgreSQL 16.14, data {})",
            data_dir.display()
        )
    );
    assert!(
        !ready.contains(":trader@"),
        "the password must not be shown"
    );

    let mut client = connect(port, "trader", "trader", "trader").expect("right password connects");
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, current_setting('server_version_num')::int, \
             current_setting('listen_addresses'), pg_encoding_to_char(encoding)::text \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "trader");
    assert_eq!(row.get::<_, String>(1), "trader");
    assert!(row.get::<_, i32>(2) / 10000 == 16);
    assert_eq!(row.get::<_, String>(3), "127.0.0.1");
    assert_eq!(row.get::<_, String>(4), "UTF8");
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'trader'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(superuser);
    // No trust anywhere: every pg_hba line (socket included) asks for scram-sha-256, but for
    // pgwarden's own administration role, which only root and the server's OS user reach, by
    // peer authentication on the private socket.
    let rules: Vec<(String, String, Vec<String>)> = client
        .query(
            "SELECT type, auth_method, user_name FROM pg_hba_file_rules",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (kind, method, users) in &rules {
        if method == "peer" {
            assert_eq!(kind, "local", "{rules:?}");
            assert_eq!(users, &["pgwarden_admin".to_string()], "{rules:?}");
        } else {
            assert_eq!(method, "scram-sha-256", "{rules:?}");
        }
    }
    drop(client);

    let Err(err) = connect(port, "trader", "wrong", "trader") else {
        panic!("a wrong password was accepted");
    };
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.is_some_and(|m| m.contains("password authentication failed")),
        "{err:?}"
    );

    // 127.0.0.1 only: another loopback address of this machine gets no answer.
    assert!(std::net::TcpStream::connect(("127.0.0.2", port)).is_err());

    // Data dir 0700, a completion marker, no staging debris, no password file left.
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(data_dir.join("pgwarden.json").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("data.pgwarden")).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("initdb") || n.contains("pwfile"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let postmaster = postmaster_pid(&data_dir);
    stop(pgwarden, Signal::SIGTERM);
    assert!(
        !process_alive(postmaster),
        "postgres still runs after pgwarden exited"
    );
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "not a clean shutdown"
    );
}

#[test]
fn data_survives_a_stop_and_a_start_and_sigint_stops_too() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2), (3);")
        .unwrap();
    drop(client);
    stop(pgwarden, Signal::SIGINT);

    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(START);
    assert!(
        !pgwarden.stderr_text().contains("initialising"),
        "an existing cluster must not be initialised again"
    );
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM kept", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    drop(client);
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_killed_postmaster_is_restarted_with_its_data() {
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data_dir = dir.path().join("data");
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client.batch_execute("CREATE TABLE acked (id int)").unwrap();
    for id in 0..100 {
        client
            .execute("INSERT INTO acked VALUES ($1)", &[&id])
            .unwrap();
    }
    drop(client);

    let old = postmaster_pid(&data_dir);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    pgwarden.wait_for_stderr("postgres exited unexpectedly", START);
    pgwarden.wait_for_stderr("ready again", START);

    let new = postmaster_pid(&data_dir);
    assert_ne!(old, new);
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM acked", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 100, "an acknowledged row was lost");
    drop(client);
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_port_in_use_is_a_clear_error_before_anything_is_made() {
    let dir = test_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let args = run_args(dir.path(), port);
    let args = as_strs(&args);
    let output = run_to_exit(&args, &[], START);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is already in use")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "the data dir must not be created"
    );
}

#[test]
fn a_first_launch_killed_during_initdb_leaves_nothing_and_the_next_one_succeeds() {
    let dir = test_dir();
    let port = free_port();
    // A password no template is cached for: this first launch runs initdb.
    let env = [("POSTGRES_PASSWORD", "not-from-a-template")];
    let mut pgwarden = start(dir.path(), port, &env);
    pgwarden.wait_for_stderr("running initdb", FIRST_LAUNCH);
    pgwarden.signal(Signal::SIGKILL);
    pgwarden.wait_exit(STOP);
    drop(pgwarden);
    let data_dir = dir.path().join("data");
    assert!(
        !data_dir.join("PG_VERSION").exists(),
        "a half cluster was left at the data path"
    );
    assert!(
        data_dir.join("pgwarden.creating").is_file() && !data_dir.join("pgwarden.json").exists(),
        "marked as being created, not as complete"
    );

    let pgwarden = start(dir.path(), port, &env);
    pgwarden.wait_ready(FIRST_LAUNCH);
    connect(port, "trader", env[0].1, "trader").expect("the relaunched cluster works");
    assert!(data_dir.join("pgwarden.json").is_file());
    for debris in ["pgwarden.creating", "pgwarden.initdb"] {
        assert!(!data_dir.join(debris).exists(), "{debris} was left");
    }
    stop(pgwarden, Signal::SIGTERM);
}

/// The role and the database are made by a single-user backend (no init scripts): a database
/// it cannot create (`template1` exists already) fails the first launch with PostgreSQL's own
/// error, nothing published at the data path, and no server left running.
#[test]
fn a_database_the_bootstrap_cannot_create_fails_the_first_launch_with_the_reason() {
    let dir = test_dir();
    let port = free_port();
    let args = run_args(dir.path(), port);
    let args = as_strs(&args);
    let output = run_to_exit(&args, &[("POSTGRES_DB", "template1")], FIRST_LAUNCH);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("postgres --single") && stderr.contains("already exists"),
        "{stderr}"
    );
    let data_dir = dir.path().join("data");
    assert!(
        !data_dir.join("PG_VERSION").exists() && !data_dir.join("pgwarden.json").exists(),
        "a cluster was published at the data path"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a server listens on {port}"
    );
}

#[test]
fn env_sets_user_password_and_database_like_the_image() {
    let dir = test_dir();
    let port = free_port();
    let envs = [("POSTGRES_USER", "alice"), ("POSTGRES_PASSWORD", "s3cret")];
    let pgwarden = start(dir.path(), port, &envs);
    let ready = pgwarden.wait_ready(FIRST_LAUNCH);
    assert!(
        ready.contains(&format!("postgres://alice@127.0.0.1:{port}/alice ")),
        "{ready}"
    );
    assert!(
        !pgwarden.stderr_text().contains("s3cret"),
        "the password was logged"
    );
    connect(port, "alice", "s3cret", "alice").expect("database defaults to the user");
    assert!(connect(port, "alice", "trader", "alice").is_err());
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn as_root_postgres_runs_as_the_unprivileged_user() {
    if !require_root("postgres must be switched to the unprivileged user") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    let user = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
    let data_dir = dir.path().join("data");
    assert_eq!(uid_of_process(postmaster_pid(&data_dir)), user.uid.as_raw());
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().uid(),
        user.uid.as_raw()
    );
    assert_eq!(uid_of_process(pgwarden.pid() as i32), 0);
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn as_root_an_existing_cluster_runs_as_its_owner_unless_run_as_names_another() {
    if !require_root("postgres must be switched to the cluster's owner") {
        return;
    }
    // A cluster made while another unprivileged user was the one to run it (an older
    // default, or PGWARDEN_RUN_AS, which is not remembered as a flag).
    let owner = intruder();
    let dir = test_dir();
    let data_dir = dir.path().join("data");
    let port = free_port();
    let pgwarden = start(dir.path(), port, &[("PGWARDEN_RUN_AS", INTRUDER)]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().uid(),
        owner.uid.as_raw()
    );
    stop(pgwarden, Signal::SIGTERM);

    // Without run_as, with a `pgwarden` user present: it runs as the cluster's owner, as
    // Debian's pg_ctlcluster does, instead of refusing the data directory.
    assert!(nix::unistd::User::from_name("pgwarden").unwrap().is_some());
    let pgwarden = start(dir.path(), port, &[]);
    pgwarden.wait_ready(START);
    assert_eq!(
        uid_of_process(postmaster_pid(&data_dir)),
        owner.uid.as_raw()
    );
    connect(port, "trader", "trader", "trader").unwrap();
    stop(pgwarden, Signal::SIGTERM);

    // run_as names another user: that one, and the cluster it does not own is refused,
    // naming the owner and the fix, and left as it was.
    let mut args = run_args(dir.path(), port);
    args.extend(["--run-as".to_string(), "pgwarden".to_string()]);
    let output = run_to_exit(&as_strs(&args), &[], START);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("is owned by uid {}", owner.uid))
            && stderr.contains("but postgres runs as pgwarden")
            && stderr.contains("help:"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().uid(),
        owner.uid.as_raw()
    );
}

#[test]
fn as_a_normal_user_postgres_runs_as_that_user() {
    if !require_root("this test switches to the pgwarden user") {
        return;
    }
    let user = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
    let dir = test_dir();
    let install = dir.path().join("install");
    let data = dir.path().join("home");
    for d in [&install, &data] {
        std::fs::create_dir(d).unwrap();
        nix::unistd::chown(d, Some(user.uid), Some(user.gid)).unwrap();
    }
    let port = free_port();
    let args = run_args_for(&npm_archive(), &install, &data.join("data"), port);
    let pgwarden = Pgwarden::start_as(
        "pgwarden",
        &as_strs(&args),
        &[("HOME", data.to_str().unwrap())],
    );
    pgwarden.wait_ready(FIRST_LAUNCH);
    assert_eq!(uid_of_process(pgwarden.pid() as i32), user.uid.as_raw());
    assert_eq!(
        uid_of_process(postmaster_pid(&data.join("data"))),
        user.uid.as_raw()
    );
    connect(port, "trader", "trader", "trader").unwrap();
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn a_theseus_layout_archive_installs_and_runs() {
    let dir = test_dir();
    let port = free_port();
    let install = dir.path().join("install");
    let args = run_args_for(&theseus_archive(), &install, &dir.path().join("data"), port);
    let pgwarden = Pgwarden::start(&as_strs(&args), &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    assert!(install.join("16.14.0/bin/postgres").is_file());
    assert!(pgwarden.stderr_text().contains("layout=Theseus"));
    stop(pgwarden, Signal::SIGTERM);
}

#[test]
fn bad_config_is_an_error_naming_file_and_key() {
    let dir = test_dir();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(&config, "port = 5433\nlisten_adress = \"127.0.0.1\"\n").unwrap();
    let output = run_to_exit(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
        START,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pgwarden.toml"), "{stderr}");
    assert!(stderr.contains("listen_adress"), "{stderr}");
    assert!(!dir.path().join("data").exists());

    std::fs::write(&config, "password = \"\"\n").unwrap();
    let output = run_to_exit(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[("PGWARDEN_PORT", "high")],
        START,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PGWARDEN_PORT"), "{stderr}");
    assert!(stderr.contains("password is empty"), "{stderr}");
}

#[test]
fn another_major_version_is_refused() {
    let dir = test_dir();
    // An archive whose postgres says it is 14 (pgwarden runs 15, 16 and 17).
    let fake = dir.path().join("pg14.tar.gz");
    let script = b"#!/bin/sh\necho 'postgres (PostgreSQL) 14.8'\n";
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&fake).unwrap(),
            Default::default(),
        );
        let mut tar = tar::Builder::new(gz);
        for name in ["bin/postgres", "bin/initdb"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(script.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            tar.append_data(
                &mut header,
                format!("postgresql-14.8.0-x/{name}"),
                &script[..],
            )
            .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let install = dir.path().join("install");
    let port = free_port();
    let output = run_to_exit(
        &as_strs(&run_args_for(
            &fake,
            &install,
            &dir.path().join("data"),
            port,
        )),
        &[],
        START,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PostgreSQL 14.8.0"), "{stderr}");
    assert!(stderr.contains("PostgreSQL 15, 16 or 17"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&install)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(
        left.is_empty(),
        "the install dir must be as it was: {left:?}"
    );
    assert!(!dir.path().join("data").exists());

    // A data dir holding a 15 cluster is refused, and left alone.
    let data = dir.path().join("old");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let output = run_to_exit(
        &as_strs(&run_args_for(
            &npm_archive(),
            &shared_install_dir(),
            &data,
            port,
        )),
        &[],
        START,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PostgreSQL 15 cluster"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(data.join("PG_VERSION")).unwrap(),
        "15\n"
    );
}

#[test]
fn a_data_dir_where_pgwarden_cannot_write_is_a_clear_error() {
    if !require_root("this test switches to the pgwarden user") {
        return;
    }
    // test_dir() is root's, mode 0755: the pgwarden user can enter it but not write to it.
    let dir = test_dir();
    let args = run_args(dir.path(), free_port());
    let mut pgwarden = Pgwarden::start_as("pgwarden", &as_strs(&args), &[]);
    let status = pgwarden.wait_exit(START);
    assert!(!status.success());
    let stderr = pgwarden.stderr_text();
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains("help: "), "{stderr}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_privileged_port_is_an_invalid_setting_for_run_and_start_alike() {
    let dir = test_dir();
    let mut args = run_args(dir.path(), 1);
    let output = run_to_exit(&as_strs(&args), &[], START);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "run --port 1: {stderr}");
    assert!(stderr.contains("port 1 is privileged"), "{stderr}");
    // `start` reports the error of the `run` it puts in the background, with its exit code.
    args[0] = "start".into();
    let output = run_to_exit(&as_strs(&args), &[], START);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "start --port 1: {stderr}");
    assert!(stderr.contains("port 1 is privileged"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "the data dir must not be created"
    );
}

#[test]
fn the_registry_keeps_no_lock_file_after_a_stop() {
    let dir = test_dir();
    let runtime = dir.path().join("runtime");
    let runtime_s = runtime.display().to_string();
    let env = [("PGWARDEN_RUNTIME_DIR", runtime_s.as_str())];
    let locks = || -> Vec<String> {
        std::fs::read_dir(&runtime)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lock"))
            .collect()
    };
    for round in 1..=2 {
        let port = free_port();
        let pgwarden = start(dir.path(), port, &env);
        pgwarden.wait_ready(FIRST_LAUNCH);
        assert_eq!(
            locks().len(),
            1,
            "round {round}: the name is locked while it runs"
        );
        stop(pgwarden, Signal::SIGTERM);
        assert_eq!(
            locks(),
            Vec::<String>::new(),
            "round {round}: after the stop"
        );
        // The entry itself stays: the name still finds its data.
        assert_eq!(
            std::fs::read_dir(&runtime).unwrap().count(),
            1,
            "round {round}"
        );
    }
}
