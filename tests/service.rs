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
