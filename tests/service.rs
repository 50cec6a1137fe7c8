//! `pgwarden service install`: the unit it writes runs this binary, and systemd accepts it.

mod common;

use common::{run_to_exit, test_dir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `systemd-analyze verify` prints nothing for a good unit; None when it is not installed.
fn verify(unit: &Path, user: bool) -> Option<String> {
    let runtime = test_dir();
    let mut command = Command::new("systemd-analyze");
    if user {
        command.arg("--user");
    }
    let output = command
        .arg("verify")
        .arg(unit)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn install(args: &[&str]) -> String {
    let output = run_to_exit(args, &[], Duration::from_secs(60));
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn user_and_system_units_run_this_binary_and_verify() {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_pgwarden")).unwrap();
    for (flag, user) in [("--user", true), ("--system", false)] {
        let dir = test_dir();
        let unit_dir = dir.path().display().to_string();
        let stdout = install(&["service", "install", flag, "--unit-dir", &unit_dir]);
        let unit_path = dir.path().join("pgwarden.service");
        let unit = std::fs::read_to_string(&unit_path).unwrap();
        let exec_start = unit
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap()
            .to_string();
        if user {
            assert_eq!(exec_start, format!("ExecStart={} run", exe.display()));
            assert!(
                stdout.contains("systemctl --user enable --now pgwarden"),
                "{stdout}"
            );
        } else {
            assert_eq!(
                exec_start,
                format!(
                    "ExecStart={} run --config /etc/pgwarden/config.toml",
                    exe.display()
                )
            );
            assert!(unit.contains("User=pgwarden"));
            assert!(
                stdout.contains("systemctl enable --now pgwarden"),
                "{stdout}"
            );
        }
        assert!(unit.contains("Type=notify"));
        // /run/pgwarden is root's registry: a runtime directory the service user owns there
        // would make root's pgwarden refuse it.
        assert!(
            !unit.lines().any(|l| l.starts_with("RuntimeDirectory=")),
            "{unit}"
        );
        match verify(&unit_path, user) {
            Some(complaints) => assert_eq!(complaints, "", "systemd-analyze verify {flag}"),
            None => {
                common::prerequisite(false, "systemd-analyze (.ci/run installs systemd)");
            }
        }
    }
}

#[test]
fn config_path_goes_into_the_user_unit() {
    let dir = test_dir();
    let unit_dir = dir.path().display().to_string();
    install(&[
        "service",
        "install",
        "--user",
        "--config",
        "/srv/my pg/config.toml",
        "--unit-dir",
        &unit_dir,
    ]);
    let unit = std::fs::read_to_string(dir.path().join("pgwarden.service")).unwrap();
    assert!(
        unit.contains("run --config \"/srv/my pg/config.toml\"\n"),
        "{unit}"
    );
}

#[test]
fn a_system_unit_for_a_binary_the_service_user_cannot_run_is_refused() {
    // A copy of this binary in a 0700 directory (as under /root): `pgwarden` cannot enter it.
    let dir = test_dir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let exe = private.join("pgwarden");
    std::fs::copy(env!("CARGO_BIN_EXE_pgwarden"), &exe).unwrap();
    common::set_mode(&exe, 0o755);
    common::set_mode(&private, 0o700);
    let unit_dir = dir.path().join("units");
    let mut command = std::process::Command::new(&exe);
    command
        .args(["service", "install", "--system", "--unit-dir"])
        .arg(&unit_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = common::output_within(spawn_fresh_copy(&mut command), Duration::from_secs(60))
        .expect("service install exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("cannot execute"), "{stderr}");
    assert!(stderr.contains(&private.display().to_string()), "{stderr}");
    assert!(stderr.contains("help: "), "{stderr}");
    assert!(
        !unit_dir.join("pgwarden.service").exists(),
        "a unit was written"
    );
}

/// Spawns a binary this test process has just written. Another test thread that forks while the
/// copy's write descriptor is open holds it open in its child until that child execs, and exec of
/// a file open for writing fails with ETXTBSY ("Text file busy"): retried for a moment.
fn spawn_fresh_copy(command: &mut std::process::Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("spawn the copied pgwarden"),
        }
    }
}
