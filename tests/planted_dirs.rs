//! Directories root writes the cluster's copies into, made first by another local user: the
//! backup directory (`<data dir>.backups`) and the snapshot directory (`<data dir>.snapshots`)
//! beside a data directory whose parent others may write to (sticky, like `/tmp`). pgwarden
//! refuses them (exit 2, naming the directory, its owner and the way out) and writes nothing
//! there; its own are made 0700.

mod common;

use common::{free_port, test_dir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

fn pgw(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .env_remove("POSTGRES_PASSWORD")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The entries of `dir` (none when it is empty or missing).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The test directory made sticky and world-writable (a `/tmp`-like parent of the data
/// directory), and `name` beside the data directory made there first by the other user, open
/// for reading by everyone.
/// Refused as an invalid setting (exit 2), naming the directory, its owner (the second user)
/// and the fix.
fn refused_naming(out: &Output, dir: &Path) {
    let text = all_text(out);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(
        text.contains(common::INTRUDER),
        "the owner is named: {text}"
    );
    assert!(text.contains("help:"), "{text}");
}

fn plant(parent: &Path, name: &str) -> std::path::PathBuf {
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = parent.join(name);
    common::as_intruder(&format!("mkdir -m 755 '{}'", planted.display()));
    planted
}

#[test]
fn a_backup_directory_another_user_made_first_receives_no_backup() {
    if !common::require_root("a second local user makes the backup directory") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let server = common::start(dir.path(), port, &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data").display().to_string();
    let planted = plant(dir.path(), "data.backups");

    let out = pgw(&["backup", "--data-dir", &data]);
    refused_naming(&out, &planted);
    assert_eq!(
        entries(&planted),
        Vec::<String>::new(),
        "nothing written there"
    );

    // Its own backup directory, once the planted one is gone, is made private.
    std::fs::remove_dir(&planted).unwrap();
    let out = pgw(&["backup", "--data-dir", &data]);
    assert!(out.status.success(), "{out:?}");
    let meta = std::fs::symlink_metadata(&planted).unwrap();
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert!(
        entries(&planted).iter().any(|e| e.ends_with(".tar.zst")),
        "{:?}",
        entries(&planted)
    );
    drop(server);
}

#[test]
fn a_snapshot_directory_another_user_made_first_receives_no_snapshot() {
    if !common::require_root("a second local user makes the snapshot directory") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let server = common::start(dir.path(), port, &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data").display().to_string();
    let planted = plant(dir.path(), "data.snapshots");

    let out = pgw(&["snapshot", "save", "s1", "--data-dir", &data]);
    refused_naming(&out, &planted);
    assert_eq!(
        entries(&planted),
        Vec::<String>::new(),
        "nothing written there"
    );
    assert!(
        !server.has_exited(),
        "refused before the server was stopped"
    );
    drop(server);
}

/// Waits (bounded) until the supervisor's log in `dir` says what became of the reset spare.
fn wait_for_spare(dir: &Path) -> String {
    let log = dir.join("data.pgwarden/pgwarden.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("spare cluster") {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no spare cluster line in {log:?}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_spare_working_directory_another_user_made_is_not_swept() {
    if !common::require_root("a second local user makes the spare's working directory") {
        return;
    }
    let dir = test_dir();
    let planted = plant(dir.path(), ".data.spare.work-1");
    common::as_intruder(&format!("echo theirs > '{}/file'", planted.display()));
    let port = free_port();
    let server = common::start(dir.path(), port, &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let log = wait_for_spare(dir.path());
    assert!(log.contains("spare cluster ready"), "{log}");
    assert_eq!(
        std::fs::read_to_string(planted.join("file"))
            .ok()
            .as_deref(),
        Some("theirs\n"),
        "another user's directory was removed"
    );
    drop(server);
}

/// A snapshot found in a snapshot directory that another user owns (made first beside a data
/// directory in `/tmp`, the snapshot theirs) is not restored as the cluster: refused (exit 2)
/// naming the directory and its owner, the server left running.
#[test]
fn a_snapshot_in_another_users_snapshot_directory_is_not_restored() {
    if !common::require_root("a second local user owns the snapshot directory") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let mut server = common::start(dir.path(), port, &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data = dir.path().join("data").display().to_string();
    let out = pgw(&["snapshot", "save", "s1", "--data-dir", &data, "--no-start"]);
    assert!(out.status.success(), "{out:?}");
    assert!(server.wait_exit(common::STOP).success());
    let snapshots = dir.path().join("data.snapshots");
    let intruder = common::intruder().uid.as_raw();
    for path in [snapshots.join("s1"), snapshots.clone()] {
        std::os::unix::fs::lchown(&path, Some(intruder), None).unwrap();
    }

    let out = pgw(&[
        "snapshot",
        "restore",
        "s1",
        "--data-dir",
        &data,
        "--no-start",
    ]);
    refused_naming(&out, &snapshots);
}
