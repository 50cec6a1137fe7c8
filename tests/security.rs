//! Everything read from outside is hostile: initdb arguments, user/password/database values,
//! archives, directories another local user made, and what the server logs.

mod common;

use common::{as_strs, free_port, run_args, run_to_exit, test_dir};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A value PostgreSQL or initdb cannot take, or an initdb option pgwarden owns in any of its
/// spellings: exit 2 with the reason, and nothing created (no install, no data dir).
#[test]
fn hostile_values_are_refused_before_anything_is_created() {
    let dir = test_dir();
    let args = run_args(dir.path(), free_port());
    // A fresh install dir: nothing may be unpacked for a refused configuration.
    let install = dir.path().join("install");
    let mut args = as_strs(&args);
    let at = args.iter().position(|a| *a == "--install-dir").unwrap();
    let install_text = install.display().to_string();
    args[at + 1] = &install_text;
    for (env, value, expected) in [
        (
            "POSTGRES_PASSWORD",
            "first\nsecond",
            "password contains a newline",
        ),
        ("POSTGRES_USER", "o\"neil", "cannot quote"),
        ("POSTGRES_INITDB_ARGS", "-kAtrust", "initdb's --auth:"),
        (
            "POSTGRES_INITDB_ARGS",
            "--auth-h=trust",
            "initdb's --auth-host:",
        ),
        ("POSTGRES_INITDB_ARGS", "-kUevil", "initdb's --username:"),
        (
            "POSTGRES_INITDB_ARGS",
            "--user=evil",
            "initdb's --username:",
        ),
        ("POSTGRES_INITDB_ARGS", "--pgd=/tmp/x", "initdb's --pgdata:"),
        (
            "POSTGRES_INITDB_ARGS",
            "--pwf=/tmp/pw",
            "initdb's --pwfile:",
        ),
    ] {
        let out = run_to_exit(&args, &[(env, value)], TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{env}={value:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{env}={value:?}: {out:?}");
        assert!(
            !dir.path().join("data").exists(),
            "{env}={value:?}: data dir made"
        );
        assert!(!install.exists(), "{env}={value:?}: install dir made");
    }
}
