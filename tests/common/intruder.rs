//! A second local user for hostile-file tests: it plants files and directories that root then
//! finds. Made with `useradd` once per test binary (root only; concurrent binaries may race to
//! make it, and whichever loses finds it made).

use std::process::Command;

/// The second user's name.
pub const INTRUDER: &str = "pgwintruder";

/// The second local user, made if it does not exist yet. Root only: call after checking root
/// (`require_root`, or an assertion).
pub fn intruder() -> nix::unistd::User {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(|| {
        if nix::unistd::User::from_name(INTRUDER).unwrap().is_none() {
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(INTRUDER)
                .status();
        }
    });
    nix::unistd::User::from_name(INTRUDER)
        .unwrap()
        .expect("useradd made the second user")
}

/// Gives `path` and everything under it to the second user (`chown -R`), as if they had made
/// it; panics when that fails.
pub fn give_to_intruder(path: &std::path::Path) {
    let intruder = intruder();
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", intruder.uid, intruder.gid))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown -R {}: {status}", path.display());
}

/// Runs a shell script as the second user; panics when it fails.
pub fn as_intruder(script: &str) {
    intruder();
    let status = Command::new("runuser")
        .args(["-u", INTRUDER, "--", "sh", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "as {INTRUDER}: {script}: {status}");
}
