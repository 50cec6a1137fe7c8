//! Everything read from outside is hostile: initdb arguments, user/password/database values,
//! archives, directories another local user made, and what the server logs.

mod common;

use common::{INTRUDER, as_intruder, as_strs, free_port, run_args, run_to_exit, test_dir};
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

// ---------------------------------------------------------------------------
// Archives: each attack built by the test, installed with `pgwarden install --archive`
// ---------------------------------------------------------------------------

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

const INSTALL: Duration = Duration::from_secs(120);

/// One tar entry.
enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn build_tgz(path: &Path, entries: &[Entry]) {
    let gz = flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), Default::default());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        match entry {
            Entry::File(name, data, mode) => {
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, name, *data).unwrap();
            }
            Entry::Dir(name, mode) => {
                header.set_size(0);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, name, &[][..]).unwrap();
            }
            Entry::Symlink(name, target) | Entry::Hardlink(name, target) => {
                header.set_size(0);
                header.set_mode(0o777);
                header.set_entry_type(if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                builder.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// A stand-in `postgres` that reports 16.14 and records who ran it in `marker`.
fn fake_postgres(marker: &Path) -> Vec<u8> {
    format!(
        "#!/bin/sh\nid -u > '{}'\necho 'postgres (PostgreSQL) 16.14'\n",
        marker.display()
    )
    .into_bytes()
}

/// Everything under `dir`, without following symlinks: path → (kind, mode, content digest or
/// link target).
fn tree_hash(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let meta = fs::symlink_metadata(&at).unwrap();
        let rel = at.strip_prefix(dir).unwrap().to_path_buf();
        let mode = meta.mode() & 0o7777;
        let what = if meta.file_type().is_symlink() {
            format!("link {mode:o} {}", fs::read_link(&at).unwrap().display())
        } else if meta.is_dir() {
            for e in fs::read_dir(&at).unwrap() {
                stack.push(e.unwrap().path());
            }
            format!("dir {mode:o}")
        } else {
            let digest = hex::encode(Sha256::digest(fs::read(&at).unwrap()));
            format!("file {mode:o} nlink {} {digest}", meta.nlink())
        };
        out.insert(rel, what);
    }
    out
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn install_archive(archive: &Path, install_dir: &Path, envs: &[(&str, &str)]) -> Output {
    run_to_exit(
        &[
            "install",
            "--archive",
            archive.to_str().unwrap(),
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        envs,
        INSTALL,
    )
}

/// A scene: a test dir with `outside/` (a victim file, mode 0600) and an install dir.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = test_dir();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim.txt"), b"precious").unwrap();
        fs::set_permissions(
            outside.join("victim.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::create_dir(outside.join("data")).unwrap();
        fs::write(outside.join("data/keep"), b"keep").unwrap();
        Scene { dir }
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn install_dir(&self) -> PathBuf {
        self.dir.path().join("install")
    }
    fn archive(&self) -> PathBuf {
        self.dir.path().join("attack.tgz")
    }

    /// Installs the archive, expecting a refusal that names `entry`; nothing outside changed,
    /// no staging dir left, nothing installed.
    fn refused(&self, entry: &str, envs: &[(&str, &str)]) -> String {
        let before = tree_hash(&self.outside());
        let out = install_archive(&self.archive(), &self.install_dir(), envs);
        let text = text(&out);
        assert!(!out.status.success(), "the install succeeded: {text}");
        assert!(
            text.contains(entry),
            "the error does not name {entry}: {text}"
        );
        assert_eq!(
            before,
            tree_hash(&self.outside()),
            "outside changed: {text}"
        );
        let left: Vec<String> = fs::read_dir(self.install_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".lock")
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "left in the install dir: {left:?}");
        text
    }
}

/// The issue's first archive: a symlink out, a hard link to that symlink, a file through it.
#[test]
fn archive_symlink_then_hardlink_then_file_through_it_is_refused() {
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    let postgres = fake_postgres(&scene.dir.path().join("marker"));
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::File("top/bin/initdb", b"#!/bin/sh\n", 0o755),
            Entry::Symlink("top/lib/ln", &outside),
            Entry::Hardlink("top/lib/alias", "top/lib/ln"),
            Entry::File("top/lib/alias/victim.txt", b"owned", 0o777),
        ],
    );
    let text = scene.refused("top/lib/ln", &[]);
    assert!(text.contains("outside the installation"), "{text}");

    // The same with a symlink that stays inside: the hard link to it is refused itself.
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::Symlink("top/lib/ln", "../bin"),
            Entry::Hardlink("top/lib/alias", "top/lib/ln"),
            Entry::File("top/lib/alias/victim.txt", b"owned", 0o777),
        ],
    );
    let text = scene.refused("top/lib/alias", &[]);
    assert!(text.contains("symlink"), "{text}");
}

/// A hard link whose source goes through a symlinked directory.
#[test]
fn archive_hardlink_through_a_symlinked_directory_is_refused() {
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    let postgres = fake_postgres(&scene.dir.path().join("marker"));
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::Symlink("top/share/out", &outside),
            Entry::Hardlink("top/share/kept", "top/share/out/victim.txt"),
        ],
    );
    scene.refused("top/share/out", &[]);

    // Through a symlink that stays inside: still refused, naming the hard link and the symlink.
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::File("top/lib/libx.so", b"x", 0o644),
            Entry::Symlink("top/share/d", "../lib"),
            Entry::Hardlink("top/share/kept", "top/share/d/libx.so"),
        ],
    );
    let text = scene.refused("top/share/kept", &[]);
    assert!(text.contains("share/d is a symlink"), "{text}");

    // And a hard link to a name above the root.
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::Hardlink("top/lib/h", "../outside/victim.txt"),
        ],
    );
    scene.refused("top/lib/h", &[]);
}

/// The npm package's pg-symlinks.json naming a target under a symlinked directory.
#[test]
fn archive_pg_symlinks_json_through_a_symlink_is_refused() {
    let scene = Scene::new();
    let postgres = fake_postgres(&scene.dir.path().join("marker"));
    let links = br#"[{"source":"native/lib/libx.so.1","target":"native/lib/d/victim.txt"}]"#;
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("package/package.json", b"{}", 0o644),
            Entry::File("package/native/bin/postgres", &postgres, 0o755),
            Entry::File("package/native/bin/initdb", b"#!/bin/sh\n", 0o755),
            Entry::File("package/native/lib/libx.so.1", b"x", 0o644),
            // Inside, so that the entry itself passes: the json line is what is refused.
            Entry::Symlink("package/native/lib/d", "../share"),
            Entry::File("package/native/pg-symlinks.json", links, 0o644),
        ],
    );
    let text = scene.refused("native/lib/d/victim.txt", &[]);
    assert!(text.contains("lib/d is a symlink"), "{text}");

    // A source reached through a symlink is refused too.
    let links = br#"[{"source":"native/lib/d/x","target":"native/lib/libx.so"}]"#;
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("package/native/bin/postgres", &postgres, 0o755),
            Entry::File("package/native/share/x", b"x", 0o644),
            Entry::Symlink("package/native/lib/d", "../share"),
            Entry::File("package/native/pg-symlinks.json", links, 0o644),
        ],
    );
    scene.refused("native/lib/d/x", &[]);
}

/// A gzip that unpacks to more than the bound stops there, with the key that raises it.
#[test]
fn archive_unpacked_size_is_bounded() {
    let scene = Scene::new();
    let postgres = fake_postgres(&scene.dir.path().join("marker"));
    let big = vec![0u8; 3 << 20];
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::File("top/share/bomb", &big, 0o644),
        ],
    );
    assert!(fs::metadata(scene.archive()).unwrap().len() < 100_000);
    let text = scene.refused("max_unpacked_mb", &[("PGWARDEN_MAX_UNPACKED_MB", "2")]);
    assert!(text.contains("more than 2 MB"), "{text}");
}

/// Unmounts a tmpfs when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// ENOSPC while unpacking is "disk full" with the free space, not "corrupt".
#[test]
fn archive_disk_full_is_named() {
    assert!(
        common::is_root(),
        "this test mounts a small tmpfs: run it as root"
    );
    let scene = Scene::new();
    let postgres = fake_postgres(&scene.dir.path().join("marker"));
    let big: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    build_tgz(
        &scene.archive(),
        &[
            Entry::File("top/bin/postgres", &postgres, 0o755),
            Entry::File("top/share/large", &big, 0o644),
        ],
    );
    fs::create_dir(scene.install_dir()).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs"])
        .arg(scene.install_dir())
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs: {status}");
    let _mount = Mount(scene.install_dir());
    let text = scene.refused("disk full", &[]);
    assert!(text.contains("MB free"), "{text}");
    assert!(!text.contains("corrupt"), "{text}");
}

/// What a good archive installs: modes normalised, links kept inside, `postgres --version` run
/// as the unprivileged user when pgwarden is root.
#[test]
fn archive_modes_are_normalised_and_validation_runs_unprivileged() {
    let scene = Scene::new();
    let markers = scene.dir.path().join("markers");
    fs::create_dir(&markers).unwrap();
    fs::set_permissions(&markers, fs::Permissions::from_mode(0o777)).unwrap();
    let marker = markers.join("uid");
    let postgres = fake_postgres(&marker);
    build_tgz(
        &scene.archive(),
        &[
            Entry::Dir("top/", 0o777),
            Entry::Dir("top/bin/", 0o777),
            Entry::File("top/bin/postgres", &postgres, 0o4777),
            Entry::File("top/bin/initdb", b"#!/bin/sh\n", 0o2775),
            Entry::File("top/lib/libx.so.1", b"x", 0o666),
            Entry::Symlink("top/lib/libx.so", "libx.so.1"),
            Entry::Hardlink("top/lib/libx-again.so", "top/lib/libx.so.1"),
            Entry::File("top/share/readme", b"r", 0o400),
        ],
    );
    let out = install_archive(&scene.archive(), &scene.install_dir(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let installed = scene.install_dir().join("16.14.0");
    let mode = |p: &str| fs::symlink_metadata(installed.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin"), 0o755);
    assert_eq!(mode("bin/postgres"), 0o755);
    assert_eq!(mode("bin/initdb"), 0o755);
    assert_eq!(mode("lib/libx.so.1"), 0o644);
    assert_eq!(mode("lib/libx-again.so"), 0o644);
    assert_eq!(mode("share/readme"), 0o644);
    assert_eq!(
        fs::read_link(installed.join("lib/libx.so")).unwrap(),
        PathBuf::from("libx.so.1")
    );
    let uid: u32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    if common::is_root() {
        let pgwarden = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
        assert_eq!(uid, pgwarden.uid.as_raw(), "validation ran as uid {uid}");
    } else {
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
    }
}

// ---------------------------------------------------------------------------
// Directories another local user could have made; modes of what pgwarden creates
// ---------------------------------------------------------------------------

/// The second local user (root only: these tests need it).
fn intruder() -> nix::unistd::User {
    assert!(
        common::is_root(),
        "these tests need root: they create a second user and run pgwarden as root"
    );
    common::intruder()
}

fn ephemeral_root(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "pgwarden-{}-{name}",
        nix::unistd::geteuid().as_raw()
    ))
}

/// Removes what a test planted in /dev/shm (a symlink itself, not its target).
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&self.0);
            }
            Ok(_) => {
                let _ = fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

fn start_ephemeral(name: &str) -> Output {
    let archive = common::npm_archive().display().to_string();
    let install = common::shared_install_dir().display().to_string();
    run_to_exit(
        &[
            "start",
            "--ephemeral",
            "--name",
            name,
            "--port",
            "0",
            "--with-password",
            "--archive",
            &archive,
            "--install-dir",
            &install,
        ],
        &[],
        common::START,
    )
}

/// Root files another user wants overwritten: f1 and f2, mode 0600, in a root-only dir.
fn victims() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = test_dir();
    let (f1, f2) = (dir.path().join("f1"), dir.path().join("f2"));
    fs::write(&f1, b"root's first file\n").unwrap();
    fs::write(&f2, b"root's second file\n").unwrap();
    for f in [&f1, &f2] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o600)).unwrap();
    }
    (dir, f1, f2)
}

/// The issue's attack: another user pre-creates the throwaway root with `lock` and
/// `pgwarden.log` symlinked to root's files; root's `start --ephemeral` must refuse it, naming
/// the directory and its owner, and leave the files alone.
#[test]
fn a_throwaway_root_made_by_another_user_is_refused() {
    let name = format!("sec-pre-{}", std::process::id());
    let root = ephemeral_root(&name);
    let _planted = Planted(root.clone());
    let (victims_dir, f1, f2) = victims();
    as_intruder(&format!(
        "mkdir -p '{root}/data.pgwarden' && ln -s '{f1}' '{root}/data.pgwarden/lock' && \
         ln -s '{f2}' '{root}/data.pgwarden/pgwarden.log' && \
         ln -s '{f2}' '{root}/data.pgwarden/pgwarden.out'",
        root = root.display(),
        f1 = f1.display(),
        f2 = f2.display()
    ));
    let before = tree_hash(victims_dir.path());
    let out = start_ephemeral(&name);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&root.display().to_string()), "{text}");
    assert!(text.contains(INTRUDER), "the error names the owner: {text}");
    assert_eq!(before, tree_hash(victims_dir.path()), "{text}");
    // The intruder's directory is not pgwarden's to remove either.
    assert!(fs::symlink_metadata(root.join("data.pgwarden/lock")).is_ok());
}

/// The throwaway root a symlink to another directory: refused, and that directory's `data`
/// is not swept.
#[test]
fn a_throwaway_root_that_is_a_symlink_is_refused_and_not_swept() {
    let name = format!("sec-link-{}", std::process::id());
    let root = ephemeral_root(&name);
    let _planted = Planted(root.clone());
    let elsewhere = test_dir();
    fs::create_dir(elsewhere.path().join("data")).unwrap();
    fs::write(elsewhere.path().join("data/PG_VERSION"), b"16\n").unwrap();
    fs::write(elsewhere.path().join("data/precious"), b"keep me").unwrap();
    as_intruder(&format!(
        "ln -s '{}' '{}'",
        elsewhere.path().display(),
        root.display()
    ));
    let before = tree_hash(elsewhere.path());
    let out = start_ephemeral(&name);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is a symlink"), "{text}");
    assert!(text.contains(INTRUDER), "the error names the owner: {text}");
    assert_eq!(before, tree_hash(elsewhere.path()), "{text}");
}

/// A state dir beside a data dir in a shared directory, pre-created by another user.
#[test]
fn a_state_dir_made_by_another_user_is_refused() {
    intruder();
    let shared = test_dir();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let (victims_dir, f1, f2) = victims();
    let state = shared.path().join("data.pgwarden");
    as_intruder(&format!(
        "mkdir -m 0777 '{state}' && ln -s '{f1}' '{state}/lock' && ln -s '{f2}' '{state}/pgwarden.log'",
        state = state.display(),
        f1 = f1.display(),
        f2 = f2.display()
    ));
    let before = tree_hash(victims_dir.path());
    let args = run_args(shared.path(), free_port());
    let out = run_to_exit(&as_strs(&args), &[], common::START);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&state.display().to_string()), "{text}");
    assert!(text.contains(INTRUDER), "{text}");
    assert_eq!(before, tree_hash(victims_dir.path()), "{text}");
    assert!(!shared.path().join("data").exists());
}

/// A snapshots directory beside a data directory in a shared (sticky) parent, made first by
/// another user with a snapshot of theirs in it: root's supervisor makes no spare copy there
/// (a copy whose working directory that user could swap for a symlink mid-copy), says why, and
/// leaves the directory as it was.
#[test]
fn a_snapshots_dir_made_by_another_user_gets_no_spare_copies() {
    intruder();
    let shared = test_dir();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let snapshots = shared.path().join("data.snapshots");
    as_intruder(&format!(
        "mkdir -m 0777 '{s}' && mkdir -p '{s}/theirs/data' && echo 16 > '{s}/theirs/data/PG_VERSION' && \
         printf '%s' '{{\"name\":\"theirs\",\"created_ms\":1,\"postgresql_major\":\"16\",\"bytes\":3,\"files\":1}}' \
         > '{s}/theirs/snapshot.json'",
        s = snapshots.display()
    ));
    let before = tree_hash(&snapshots);
    let port = free_port();
    let pgwarden = common::start(shared.path(), port, &[]);
    pgwarden.wait_ready(common::FIRST_LAUNCH);
    let line = pgwarden.wait_for_stderr("no spare copies of snapshots", common::START);
    assert!(line.contains(&snapshots.display().to_string()), "{line}");
    assert!(
        line.contains(INTRUDER),
        "the warning names the owner: {line}"
    );
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
    let spares: Vec<_> = fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".spare"))
        .collect();
    assert!(
        spares.is_empty(),
        "root made {spares:?} in another user's directory"
    );
    assert_eq!(before, tree_hash(&snapshots));
    assert_eq!(
        fs::metadata(&snapshots).unwrap().uid(),
        intruder().uid.as_raw()
    );
}

/// Stops a background instance by name when dropped.
struct Background(String);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
            .args(["stop", "--name", &self.0, "--mode", "immediate"])
            .args(["--timeout", "20s"])
            .output();
    }
}

/// A real throwaway server: the modes of everything pgwarden creates for it, a failed
/// `ALTER ROLE … PASSWORD '…'` that the server logs with its statement, redacted in
/// pgwarden's log; and the root removed on stop.
#[test]
fn state_files_are_private_and_password_literals_are_redacted() {
    let name = format!("sec-modes-{}", std::process::id());
    let root = ephemeral_root(&name);
    let _planted = Planted(root.clone());
    let _background = Background(name.clone());
    let out = start_ephemeral(&name);
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("DATABASE_URL=")
        .unwrap()
        .to_string();

    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    let state = root.join("data.pgwarden");
    let dir_mode = if common::is_root() { 0o711 } else { 0o700 };
    assert_eq!(mode(&root), dir_mode, "{}", root.display());
    assert_eq!(mode(&state), dir_mode, "{}", state.display());
    assert_eq!(mode(&root.join("data")), 0o700);
    for file in ["lock", "status.json", "pgwarden.log", "pgwarden.out"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&root.join(".pgwarden-throwaway")), 0o600);
    // Nothing in the state dir is writable by others (and the dir itself not listable).
    for entry in fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let m = mode(&entry.path());
        assert_eq!(m & 0o022, 0, "{} is mode {m:o}", entry.path().display());
    }

    let secret = "sekrit-Zq9-not-for-logs";
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let failed = client.batch_execute(&format!(
        "ALTER ROLE trader PASSWORD '{secret}' VALID UNTIL 'not a date'"
    ));
    assert!(failed.is_err(), "the statement should fail");
    drop(client);
    let log = state.join("pgwarden.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("STATEMENT:") && text.contains("PASSWORD '***'") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text.contains("PASSWORD '***'"), "not redacted: {text}");
    assert!(
        !text.contains(secret),
        "the password reached {}",
        log.display()
    );
    let out_file = fs::read_to_string(state.join("pgwarden.out")).unwrap();
    assert!(!out_file.contains(secret));

    let stop = run_to_exit(&["stop", "--name", &name], &[], common::STOP);
    assert!(stop.status.success(), "{}", self::text(&stop));
    assert!(!root.exists(), "the throwaway root is removed on stop");
}

/// A binaries cache another user owns (with a "version" already in it) is not used.
#[test]
fn an_install_dir_another_user_owns_is_refused() {
    intruder();
    let scene = Scene::new();
    let marker = scene.dir.path().join("ran");
    let planted = scene.dir.path().join("planted");
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o777)).unwrap();
    as_intruder(&format!(
        "mkdir -p '{p}/cache/16.14.0/bin' && printf '#!/bin/sh\\ntouch {m}\\n' > '{p}/cache/16.14.0/bin/postgres' && \
         chmod 755 '{p}/cache/16.14.0/bin/postgres' && echo '{{}}' > '{p}/cache/16.14.0/pgwarden-install.json'",
        p = planted.display(),
        m = marker.display()
    ));
    let postgres = fake_postgres(&scene.dir.path().join("uid"));
    build_tgz(
        &scene.archive(),
        &[Entry::File("top/bin/postgres", &postgres, 0o755)],
    );
    let out = install_archive(&scene.archive(), &planted.join("cache"), &[]);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(INTRUDER), "names the owner: {text}");
    assert!(!marker.exists(), "the planted postgres ran");
}

/// With `--binaries` too: the install dir also keeps the clusters' templates, so one another
/// user owns is refused before anything is made — a template planted in it is never copied
/// into a cluster.
#[test]
fn an_install_dir_another_user_owns_is_refused_with_binaries_of_ones_own() {
    intruder();
    let scene = Scene::new();
    let install = common::shared_install_dir();
    let out = install_archive(&common::npm_archive(), &install, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let planted = scene.dir.path().join("planted");
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o777)).unwrap();
    as_intruder(&format!(
        "mkdir -p '{p}/cache/templates' && chmod 755 '{p}/cache' '{p}/cache/templates'",
        p = planted.display()
    ));
    let data = scene.dir.path().join("data");
    let out = run_to_exit(
        &[
            "run",
            "--binaries",
            install.join(common::PG_VERSION).to_str().unwrap(),
            "--install-dir",
            planted.join("cache").to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &common::free_port().to_string(),
        ],
        &[],
        common::START,
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("install_dir") && said.contains(INTRUDER) && said.contains("help:"),
        "names the directory, its owner and the fix: {said}"
    );
    assert!(!data.exists(), "a refused run made {}", data.display());
    let state = scene.dir.path().join("data.pgwarden");
    assert!(!state.exists(), "a refused run made {}", state.display());
    // `start` refuses it too, before it launches a background run that would make the state dir.
    let out = run_to_exit(
        &[
            "start",
            "--binaries",
            install.join(common::PG_VERSION).to_str().unwrap(),
            "--install-dir",
            planted.join("cache").to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &common::free_port().to_string(),
        ],
        &[],
        common::START,
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("install_dir") && said.contains(INTRUDER),
        "{said}"
    );
    assert!(
        !data.exists() && !state.exists(),
        "a refused start made its directories"
    );
}

/// A throwaway root's `postmaster.pid` is written by the server's user, so the System V segment
/// it names is freed on the root's removal only when that segment belongs to the data
/// directory's owner: another user's unused segment named there is left alone (and the one of
/// the owner's own is freed).
#[test]
fn a_pid_file_naming_another_users_segment_frees_nothing() {
    intruder();
    let make_segment = |user: Option<&str>| -> i32 {
        let mut command = match user {
            Some(user) => {
                let mut runuser = std::process::Command::new("runuser");
                runuser.args(["-u", user, "--", "ipcmk", "-M", "64"]);
                runuser
            }
            None => {
                let mut ipcmk = std::process::Command::new("ipcmk");
                ipcmk.args(["-M", "64"]);
                ipcmk
            }
        };
        let out = command.output().unwrap();
        assert!(out.status.success(), "ipcmk: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .rsplit_once(':')
            .and_then(|(_, id)| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("ipcmk's id: {}", text(&out)))
    };
    // (key, owner) of segment `id`, while it exists.
    let stat = |id: i32| -> Option<(i64, u32)> {
        // SAFETY: IPC_STAT into a zeroed shmid_ds of our own.
        let mut segment: nix::libc::shmid_ds = unsafe { std::mem::zeroed() };
        (unsafe { nix::libc::shmctl(id, nix::libc::IPC_STAT, &mut segment) } == 0)
            .then_some((segment.shm_perm.__key as i64, segment.shm_perm.uid))
    };
    let dir = test_dir();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    let name = |id: i32| {
        let (key, _) = stat(id).unwrap();
        fs::write(
            data.join("postmaster.pid"),
            format!(
                "1\n{}\n1\n5432\n/s\n*\n{:9} {id:9}\nready\n",
                data.display(),
                key as u64
            ),
        )
        .unwrap();
    };
    let theirs = make_segment(Some(INTRUDER));
    name(theirs);
    let released = pgwarden::postmaster::leftover_shmem::release(&data);
    let left = stat(theirs);
    let _ = std::process::Command::new("ipcrm")
        .args(["-m", &theirs.to_string()])
        .status();
    assert!(
        !released && left.is_some(),
        "another user's segment was removed"
    );
    let ours = make_segment(None);
    name(ours);
    assert!(pgwarden::postmaster::leftover_shmem::release(&data));
    assert_eq!(stat(ours), None, "the owner's unused segment is freed");
}

/// The initdb-arguments parser against the real initdb: for each spelling, initdb (with
/// `--show`, which prints its settings and exits) and pgwarden's parser accept or refuse it
/// alike, and where both accept, the data directory, superuser and template directory initdb
/// reports are the ones the parser found.
#[test]
fn initdb_args_parse_like_the_real_initdb() {
    let install = common::shared_install_dir();
    let out = run_to_exit(
        &[
            "install",
            "--archive",
            common::npm_archive().to_str().unwrap(),
            "--install-dir",
            install.to_str().unwrap(),
        ],
        &[],
        INSTALL,
    );
    assert!(out.status.success(), "{}", text(&out));
    let initdb = install.join(common::PG_VERSION).join("bin/initdb");
    let base = ["-D", "/nonexistent/base", "-U", "base"];
    let table = [
        "-k",
        "-kAtrust",
        "-kUevil",
        "-gkUevil",
        "-Uevil",
        "-U evil",
        "--user=evil",
        "--u evil",
        "--username evil",
        "--pgd=/x",
        "--pg /x",
        "-D/x",
        "-kD/x",
        "-E -Uevil",
        "-kEUTF8",
        "--auth-h=trust",
        "--aut=trust",
        "--a=trust",
        "--no-",
        "--noc",
        "--no-l",
        "--lc-=C",
        "--lc-c=C",
        "--data-checksums=yes",
        "--bogus",
        "-q",
        "-k /some/dir",
        "-k -- /some/dir",
        "-cA=trust",
        "--set work_mem=8MB",
        "--wal-segsize=64",
        "--encoding",
        "-L",
        "-L/tmp/templates",
        "-kL /tmp/templates",
    ];
    for spelling in table {
        let words: Vec<String> = base
            .iter()
            .map(|w| w.to_string())
            .chain(spelling.split_whitespace().map(str::to_string))
            .chain(["--show".to_string()])
            .collect();
        let mut command = std::process::Command::new(&initdb);
        command.args(&words);
        if common::is_root() {
            use std::os::unix::process::CommandExt;
            let user = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let real = command.output().unwrap();
        let real_text = format!(
            "{}{}",
            String::from_utf8_lossy(&real.stdout),
            String::from_utf8_lossy(&real.stderr)
        );
        let getopt_refused = [
            "is ambiguous",
            "unrecognized option",
            "invalid option",
            "requires an argument",
            "doesn't allow an argument",
            "too many command-line arguments",
        ]
        .iter()
        .any(|m| real_text.contains(m));
        let parsed = pgwarden::pg::initdb_args::parse(&words);
        assert_eq!(
            parsed.is_err(),
            getopt_refused,
            "{spelling:?}: pgwarden {parsed:?}, initdb: {real_text}"
        );
        let Ok(options) = parsed else { continue };
        // Where an option took `--show` as its value, initdb stops on that value instead.
        if !real_text.contains("VERSION=") {
            assert!(
                options.iter().any(|o| o.value.as_deref() == Some("--show")),
                "{spelling:?}: {real_text}"
            );
            continue;
        }
        let last = |name: &str| {
            options
                .iter()
                .rev()
                .find(|o| o.name == name)
                .and_then(|o| o.value.clone())
        };
        let shown = |key: &str| {
            real_text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
        };
        assert_eq!(shown("PGDATA"), last("pgdata"), "{spelling:?}: {real_text}");
        assert_eq!(
            shown("POSTGRES_SUPERUSERNAME"),
            last("username"),
            "{spelling:?}: {real_text}"
        );
        if let Some(templates) = last("-L") {
            assert_eq!(
                shown("share_path"),
                Some(templates),
                "{spelling:?}: {real_text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The administration role's peer login: root and the server's user only
// ---------------------------------------------------------------------------

/// `db create` as root logs in as pgwarden's administration role on the private socket (peer:
/// no password read — a wrong one in its environment changes nothing) and the database is the
/// configured user's. Another local user, even with the socket directory opened to it, cannot
/// log in as that role: not by peer on the socket (pg_ident maps root and the server's user
/// only), not over TCP (the role has no password); and its own `db create` makes nothing.
#[test]
fn the_admin_role_logs_in_root_by_peer_and_no_other_local_user() {
    let intruder = intruder();
    let dir = test_dir();
    let port = free_port();
    let data = dir.path().join("data");
    let install = common::cache_dir().join("install-pypi");
    let args = common::run_args_for(&common::pypi_wheel(), &install, &data, port);
    let server = common::Pgwarden::start(&as_strs(&args), &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let data_arg = data.display().to_string();
    let port_arg = port.to_string();
    let instance = ["--data-dir", data_arg.as_str(), "--port", port_arg.as_str()];

    // Root: no password needed; the new database is the configured user's.
    let mut create = vec!["db", "create", "made_by_root"];
    create.extend(instance);
    let out = run_to_exit(
        &create,
        &[("POSTGRES_PASSWORD", "not-the-password")],
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut client = common::connect(port, "trader", "trader", "postgres").unwrap();
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'made_by_root'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "trader");

    // The intruder, with the way to the socket opened for it (the test is root).
    let socket_dir = data.with_extension("pgwarden").join("socket");
    fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let psql = install.join("16.14.0/bin/psql");
    let as_intruder_psql = |host: &str| {
        std::process::Command::new("runuser")
            .args([
                "-u",
                INTRUDER,
                "--",
                psql.to_str().unwrap(),
                "-w",
                "-h",
                host,
            ])
            .args(["-p", &port_arg, "-U", "pgwarden_admin", "-d", "postgres"])
            .args(["-Atc", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let by_peer = as_intruder_psql(socket_dir.to_str().unwrap());
    assert!(!by_peer.status.success(), "{}", text(&by_peer));
    assert!(
        String::from_utf8_lossy(&by_peer.stderr).contains("Peer authentication failed"),
        "refused by the map, not by the directory's mode: {}",
        text(&by_peer)
    );
    let by_tcp = as_intruder_psql("127.0.0.1");
    assert!(!by_tcp.status.success(), "{}", text(&by_tcp));
    assert!(
        String::from_utf8_lossy(&by_tcp.stderr).contains("password"),
        "{}",
        text(&by_tcp)
    );

    // Its own `db create` (the server's address and data dir given) makes nothing.
    let mut create = vec!["db", "create", "made_by_intruder"];
    create.extend(instance);
    let mut attempt = common::Pgwarden::start_as(&intruder.name, &create, &[]);
    let status = attempt.wait_exit(TIMEOUT);
    assert!(!status.success(), "{}", attempt.stderr_text());
    let made = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = 'made_by_intruder'",
            &[],
        )
        .unwrap();
    assert!(made.is_none(), "the intruder's database exists");
    drop(client);
    common::stop(server, nix::sys::signal::Signal::SIGTERM);
}
