//! The CI runner's job (issue 7): a throwaway server started in the background on a free port,
//! fifty per-test databases cloned from a prepared template, then nothing left behind.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

/// Stops the named background instance (and kills what is left of it) when dropped, so that a
/// failing test leaves nothing running.
struct Background {
    name: String,
    root: PathBuf,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
            .args([
                "stop",
                "--name",
                &self.name,
                "--mode",
                "immediate",
                "--timeout",
                "20s",
            ])
            .output();
        kill_processes_under(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn kill_processes_under(root: &std::path::Path) {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn pgwarden(args: &[&str]) -> Output {
    run_to_exit(args, &[], START)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn ephemeral_root(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "pgwarden-{}-{name}",
        nix::unistd::geteuid().as_raw()
    ))
}

#[test]
fn a_ci_job_with_fifty_databases_from_a_template_leaves_nothing_behind() {
    let name = format!("ci-{}", std::process::id());
    let root = ephemeral_root(&name);
    let _guard = Background {
        name: name.clone(),
        root: root.clone(),
    };
    let archive = npm_archive().display().to_string();
    let install = shared_install_dir().display().to_string();
    let started = Instant::now();
    let output = pgwarden(&[
        "start",
        "--ephemeral",
        "--port",
        "0",
        "--name",
        &name,
        "--with-password",
        "--archive",
        &archive,
        "--install-dir",
        &install,
    ]);
    assert!(output.status.success(), "{output:?}");
    eprintln!("start → ready in {:?}", started.elapsed());
    let url = stdout(&output);
    let url = url
        .strip_prefix("DATABASE_URL=")
        .unwrap_or_else(|| panic!("{output:?}"));
    assert!(
        url.starts_with("postgres://trader:trader@127.0.0.1:"),
        "{url}"
    );
    assert!(
        root.join("data/PG_VERSION").is_file(),
        "the cluster lives in {}",
        root.display()
    );

    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let fsync: String = client.query_one("SHOW fsync", &[]).unwrap().get(0);
    assert_eq!(fsync, "off", "an ephemeral cluster runs without fsync");
    drop(client);

    // A template, "migrated" once.
    let created = pgwarden(&[
        "db",
        "create",
        "app_template",
        "--name",
        &name,
        "--with-password",
    ]);
    assert!(created.status.success(), "{created:?}");
    let mut template = postgres::Client::connect(&stdout(&created), postgres::NoTls).unwrap();
    template
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text);
             INSERT INTO accounts SELECT g, 'owner ' || g FROM generate_series(1, 100) g;",
        )
        .unwrap();

    // Cloning a template that has a connection open is a clear error.
    let busy = pgwarden(&[
        "db",
        "create",
        "t_busy",
        "--template",
        "app_template",
        "--name",
        &name,
    ]);
    assert!(!busy.status.success());
    let text = String::from_utf8_lossy(&busy.stderr);
    assert!(
        text.contains("template database \"app_template\" is in use"),
        "{text}"
    );
    drop(template);

    let clones = Instant::now();
    let mut urls = Vec::new();
    for i in 0..50 {
        let db = format!("test_{i}");
        let out = pgwarden(&[
            "db",
            "create",
            &db,
            "--template",
            "app_template",
            "--name",
            &name,
            "--with-password",
        ]);
        assert!(out.status.success(), "{out:?}");
        urls.push(stdout(&out));
    }
    eprintln!("50 clones in {:?}", clones.elapsed());
    for (i, url) in urls.iter().enumerate() {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.execute(
            "UPDATE accounts SET owner = $1 WHERE id = 1",
            &[&format!("test {i}")],
        )
        .unwrap();
        let count: i64 = c
            .query_one("SELECT count(*) FROM accounts", &[])
            .unwrap()
            .get(0);
        assert_eq!(count, 100);
        let owner: String = c
            .query_one("SELECT owner FROM accounts WHERE id = 1", &[])
            .unwrap()
            .get(0);
        assert_eq!(owner, format!("test {i}"), "each test has its own copy");
    }

    // A name that is taken is a clear error; dropping works.
    let taken = pgwarden(&["db", "create", "test_0", "--name", &name]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("\"test_0\" already exists"));
    let dropped = pgwarden(&["db", "drop", "test_0", "--name", &name]);
    assert!(dropped.status.success(), "{dropped:?}");
    let gone = pgwarden(&["db", "drop", "test_0", "--name", &name]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("does not exist"),
        "{gone:?}"
    );

    let stop = pgwarden(&["stop", "--name", &name]);
    assert!(stop.status.success(), "{stop:?}");
    assert!(
        !root.exists(),
        "the throwaway cluster was not removed: {}",
        root.display()
    );
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root))
        })
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    let status = pgwarden(&["status", "--name", &name]);
    assert!(
        !status.status.success(),
        "nothing should be running: {status:?}"
    );
}

#[test]
fn start_reports_the_servers_error_when_it_never_gets_ready() {
    let dir = test_dir();
    let config = dir.path().join("pgwarden.toml");
    std::fs::write(&config, "[server]\nshared_buffers = \"lots\"\n").unwrap();
    let name = format!("bad-{}", std::process::id());
    let _guard = Background {
        name: name.clone(),
        root: ephemeral_root(&name),
    };
    let archive = npm_archive().display().to_string();
    let install = shared_install_dir().display().to_string();
    let output = run_to_exit(
        &[
            "start",
            "--ephemeral",
            "--port",
            "0",
            "--name",
            &name,
            "--config",
            config.to_str().unwrap(),
            "--archive",
            &archive,
            "--install-dir",
            &install,
        ],
        &[],
        Duration::from_secs(120),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The background pgwarden's error, once, with real line breaks (not inside a log tail).
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    assert!(!stderr.contains("\\n"), "escaped line breaks: {stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
    assert!(stderr.contains("shared_buffers"), "{stderr}");
    assert!(!ephemeral_root(&name).join("data").exists());
}

#[test]
fn create_user_makes_a_locked_system_user_when_root_has_none() {
    if !require_root("creating a system user") {
        return;
    }
    let user = format!("pgw{}", std::process::id() % 100_000);
    let dir = test_dir();
    let port = free_port().to_string();
    let archive = npm_archive().display().to_string();
    let install = shared_install_dir().display().to_string();
    let data = dir.path().join("data").display().to_string();
    let base = [
        "run",
        "--archive",
        &archive,
        "--install-dir",
        &install,
        "--data-dir",
        &data,
        "--port",
        &port,
        "--run-as",
        &user,
    ];
    let refused = run_to_exit(&base, &[], START);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--create-user"),
        "{refused:?}"
    );

    let mut args = base.to_vec();
    args.push("--create-user");
    let pgwarden = Pgwarden::start(&args, &[]);
    pgwarden.wait_ready(FIRST_LAUNCH);
    assert!(
        pgwarden
            .stderr_text()
            .contains("created a locked system user")
    );
    let created = nix::unistd::User::from_name(&user).unwrap();
    let postmaster_uid = uid_of_process(postmaster_pid(&dir.path().join("data")));
    stop(pgwarden, nix::sys::signal::Signal::SIGTERM);
    let _ = std::process::Command::new("userdel").arg(&user).status();
    let created = created.expect("the user exists");
    assert!(created.uid.as_raw() < 1000, "a system user");
    assert_eq!(postmaster_uid, created.uid.as_raw());
}

/// The template cluster cache: an ephemeral first launch keeps its new cluster as a template
/// (flushed, then published); a persistent first launch keeps none, but copies one when it
/// finds one for its settings, and the copy is a working cluster with those settings.
#[test]
fn ephemeral_first_launches_fill_the_template_cache_and_persistent_ones_use_it() {
    // The shared binaries, used in place (`--binaries`), with an install dir of its own, so that
    // its template cache starts empty and goes away with the test.
    let password = "tpl-secret";
    let env = [("POSTGRES_PASSWORD", password)];
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let launch = |extra: &[&str]| {
        let port = free_port();
        let port_text = port.to_string();
        let mut args = vec![
            "run",
            "--binaries",
            &binaries,
            "--install-dir",
            &install,
            "--port",
            &port_text,
        ];
        args.extend(extra);
        let mut pgwarden = Pgwarden::start(&args, &env);
        pgwarden.wait_ready(FIRST_LAUNCH);
        let initialised = pgwarden.wait_for_stderr("cluster initialised", START);
        connect(port, "trader", password, "trader").expect("the configured role and database");
        pgwarden.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(pgwarden.wait_exit(STOP).success());
        initialised
    };
    let first_launch = |data: &str| {
        let data_dir = dir.path().join(data).display().to_string();
        launch(&["--data-dir", &data_dir])
    };

    let line = first_launch("persistent-1");
    assert!(line.contains("from_template=false"), "{line}");
    let line = first_launch("persistent-2");
    assert!(
        line.contains("from_template=false"),
        "stopped right after ready, a persistent first launch's background fill is cancelled: \
         no template: {line}"
    );

    // An ephemeral one (run in the foreground, so its log is ours) keeps one...
    let name = format!("tpl-{}", std::process::id());
    let _cleanup = Background {
        name: name.clone(),
        root: ephemeral_root(&name),
    };
    let line = launch(&["--ephemeral", "--name", &name]);
    assert!(line.contains("from_template=false"), "{line}");

    // (Beside it: the fills' lock files, dot files.)
    let templates: Vec<_> = std::fs::read_dir(dir.path().join("install/templates"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(templates.len(), 1, "one template: {templates:?}");

    // ... which the next first launch with these settings copies instead of running initdb.
    let line = first_launch("persistent-3");
    assert!(line.contains("from_template=true"), "{line}");
}

/// Held by the tests that look at the user's pool: one of them puts the pool aside for a while.
static POOL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The user's pool of throwaway clusters (beside the throwaway roots).
fn pool_dir() -> PathBuf {
    ephemeral_root("_").with_file_name(format!("pgwarden-{}.pool", nix::unistd::geteuid().as_raw()))
}

/// The pool keys of the templates under `install` (a key is a hash of its template's path).
fn pool_keys(install: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    std::fs::read_dir(PathBuf::from(install).join("templates"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir())
        .map(|e| hex::encode(Sha256::digest(e.path().as_os_str().as_bytes()))[..32].to_string())
        .collect()
}

/// The pool's ready entries (`<key>.<maker pid>-<start>`) of the templates under `install`.
fn pool_entries(install: &str) -> Vec<PathBuf> {
    let keys = pool_keys(install);
    let mut out: Vec<PathBuf> = std::fs::read_dir(pool_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.split_once('.').is_some_and(|(key, tag)| {
                keys.iter().any(|k| k == key)
                    && tag.split_once('-').is_some_and(|(pid, start)| {
                        !pid.is_empty()
                            && !start.is_empty()
                            && pid.bytes().chain(start.bytes()).all(|b| b.is_ascii_digit())
                    })
            })
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Waits (bounded) for a ready pool entry of `install`'s templates other than `known`.
fn wait_for_pool_entry(install: &str, known: &[PathBuf]) -> PathBuf {
    let deadline = Instant::now() + FIRST_LAUNCH;
    loop {
        if let Some(entry) = pool_entries(install)
            .into_iter()
            .find(|e| !known.contains(e))
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no pool entry appeared in {:?} (known: {known:?})",
            pool_dir()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of the maker that made `entry` (`<key>.<pid>-<start>`).
fn maker_of(entry: &std::path::Path) -> i32 {
    let name = entry.file_name().unwrap().to_string_lossy().to_string();
    let (_, tag) = name.split_once('.').unwrap();
    tag.split_once('-').unwrap().0.parse().unwrap()
}

/// The pool makers (`pgwarden pool-fill`) running for `install`.
fn makers_running(install: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                let words: Vec<String> = line
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8_lossy(w).to_string())
                    .collect();
                words.iter().any(|w| w == "pool-fill") && words.iter().any(|w| w.contains(install))
            })
        })
        .collect()
}

/// The working directories of pool makers of `install`'s templates (`….work-<pid>`).
fn pool_work_dirs(install: &str) -> Vec<PathBuf> {
    let keys = pool_keys(install);
    std::fs::read_dir(pool_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.contains(".work-") && keys.iter().any(|k| name.starts_with(k.as_str()))
        })
        .map(|e| e.path())
        .collect()
}

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .ino()
}

/// The shared binaries used in place, with an install dir of its own under `dir` (its own
/// template, so its own pool key): `(binaries, install dir)`.
fn own_binaries(dir: &std::path::Path) -> (String, String) {
    let shared = shared_install_dir().display().to_string();
    let archive = npm_archive().display().to_string();
    let installed = run_to_exit(
        &["install", "--archive", &archive, "--install-dir", &shared],
        &[],
        FIRST_LAUNCH,
    );
    assert!(installed.status.success(), "{installed:?}");
    let binaries = stdout(&installed)
        .rsplit_once(" in ")
        .map(|(_, path)| path.to_string())
        .expect("install names its directory");
    (binaries, dir.join("install").display().to_string())
}

/// `run --ephemeral --name NAME` of `binaries` with its own install dir on a free port, ready;
/// the port.
fn run_ephemeral(
    name: &str,
    binaries: &str,
    install: &str,
    envs: &[(&str, &str)],
) -> (Pgwarden, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let args = [
        "run",
        "--ephemeral",
        "--name",
        name,
        "--binaries",
        binaries,
        "--install-dir",
        install,
        "--port",
        &port_text,
    ];
    let pgwarden = Pgwarden::start(&args, envs);
    pgwarden.wait_ready(FIRST_LAUNCH);
    (pgwarden, port)
}

/// The pool of throwaway clusters (issue 29): a ready `--ephemeral` server leaves one entry,
/// which the next `--ephemeral` start of the same settings takes by rename; other settings and
/// `ephemeral_pool = 0` do not take it; a maker killed -9 leaves nothing used, and the next
/// maker sweeps it.
#[test]
fn the_next_ephemeral_start_takes_the_pool_entry_the_last_one_made() {
    let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let mut cleanups = Vec::new();
    let mut launch = |tag: &str, envs: &[(&str, &str)]| -> (Pgwarden, PathBuf, u16) {
        let name = format!("pool-{tag}-{}", std::process::id());
        let root = ephemeral_root(&name);
        cleanups.push(Background {
            name: name.clone(),
            root: root.clone(),
        });
        let (pgwarden, port) = run_ephemeral(&name, &binaries, &install, envs);
        (pgwarden, root, port)
    };
    let stop = |mut pgwarden: Pgwarden| {
        pgwarden.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(pgwarden.wait_exit(STOP).success());
    };
    let settings = [("POSTGRES_PASSWORD", "pool-secret")];

    // The first launch runs initdb, keeps the template, then makes one pool entry.
    let (first, _, _) = launch("first", &settings);
    let entry = wait_for_pool_entry(&install, &[]);
    assert!(entry.starts_with(pool_dir()), "{entry:?}");
    let entry_file = inode(&entry.join("cluster/PG_VERSION"));
    stop(first);
    assert!(entry.is_dir(), "the entry outlives its maker");

    // The next start of the same settings renames it into its data directory.
    let (second, root, port) = launch("second", &settings);
    let stderr = second.stderr_text();
    assert!(
        stderr.contains("the cluster from the pool of throwaway clusters"),
        "{stderr}"
    );
    assert_eq!(
        inode(&root.join("data/PG_VERSION")),
        entry_file,
        "the data directory is not the pool entry renamed"
    );
    assert!(!entry.exists(), "the taken entry is still in the pool");
    connect(port, "trader", "pool-secret", "trader").expect("the settings' role and database");
    // ... and makes the next one (bounded: one per settings), which `status` shows.
    let entry = wait_for_pool_entry(&install, &[]);
    let status = pgwarden(&[
        "status",
        "--name",
        &format!("pool-second-{}", std::process::id()),
    ]);
    let line = stdout(&status)
        .lines()
        .find(|l| l.trim_start().starts_with("ephemeral pool"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("status shows no pool: {status:?}"));
    assert!(
        line.contains(" ready, ") && line.contains(&pool_dir().display().to_string()),
        "{line}"
    );
    stop(second);

    // Other settings (another password: another template) do not take it.
    let (other, root, port) = launch("other", &[("POSTGRES_PASSWORD", "other-secret")]);
    let stderr = other.stderr_text();
    assert!(!stderr.contains("from the pool"), "{stderr}");
    assert_ne!(
        inode(&root.join("data/PG_VERSION")),
        inode(&entry.join("cluster/PG_VERSION"))
    );
    connect(port, "trader", "other-secret", "trader").expect("the other settings");
    let other_entry = wait_for_pool_entry(&install, std::slice::from_ref(&entry));
    stop(other);
    assert!(
        entry.is_dir(),
        "an entry of other settings was taken or removed"
    );

    // ephemeral_pool = 0 turns it off: neither taken nor made.
    let mut off_settings = settings.to_vec();
    off_settings.push(("PGWARDEN_EPHEMERAL_POOL", "0"));
    let (off, _, _) = launch("off", &off_settings);
    off.wait_for_stderr("cluster initialised", START);
    let stderr = off.stderr_text();
    stop(off);
    assert!(!stderr.contains("from the pool"), "{stderr}");
    assert!(entry.is_dir(), "ephemeral_pool = 0 took the entry");

    // A maker killed -9 while it copies: its working directory is never used, and the next
    // maker sweeps it (a few tries: the copy may finish between a look and the kill).
    let mut killed_work = None;
    for _ in 0..5 {
        for path in pool_entries(&install) {
            if path != other_entry {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        let (server, _, _) = launch("killed", &settings);
        let deadline = Instant::now() + FIRST_LAUNCH;
        let mut found = pool_work_dirs(&install);
        while found.is_empty() && pool_entries(&install).len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
            found = pool_work_dirs(&install);
        }
        for work in &found {
            let name = work.file_name().unwrap().to_string_lossy().to_string();
            let pid: i32 = name.rsplit(".work-").next().unwrap().parse().unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            assert!(gone_within(pid, STOP), "the maker {pid} survived a kill -9");
        }
        stop(server);
        if let Some(work) = pool_work_dirs(&install).into_iter().next() {
            killed_work = Some(work);
            break;
        }
    }
    let killed_work = killed_work.expect("no kill landed while the pool entry was being made");
    let (after, _, _) = launch("after", &settings);
    let stderr = after.stderr_text();
    assert!(
        !stderr.contains("from the pool"),
        "a torn entry was used: {stderr}"
    );
    wait_for_pool_entry(&install, std::slice::from_ref(&other_entry));
    assert!(!killed_work.exists(), "the sweep left {killed_work:?}");
    stop(after);
}

/// A pool directory another user made (where /dev/shm is shared, they could make it first,
/// with a cluster of their choosing in it): pgwarden running as root neither takes its entry
/// nor deletes anything, and starts from a copy of its template.
#[test]
fn a_pool_another_user_made_is_neither_used_nor_deleted() {
    if !require_root("a second user plants the pool directory") {
        return;
    }
    let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let launch = |tag: &str| -> (Pgwarden, Background, PathBuf) {
        let name = format!("planted-{tag}-{}", std::process::id());
        let root = ephemeral_root(&name);
        let guard = Background {
            name: name.clone(),
            root: root.clone(),
        };
        let port = free_port().to_string();
        let pgwarden = Pgwarden::start(
            &[
                "run",
                "--ephemeral",
                "--name",
                &name,
                "--binaries",
                &binaries,
                "--install-dir",
                &install,
                "--port",
                &port,
            ],
            &[("POSTGRES_PASSWORD", "planted-secret")],
        );
        pgwarden.wait_ready(FIRST_LAUNCH);
        (pgwarden, guard, root)
    };
    // A real entry of these settings, made by a first launch.
    let (mut first, _first_guard, _) = launch("first");
    let entry = wait_for_pool_entry(&install, &[]);
    first.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(first.wait_exit(STOP).success());

    // The user's pool put aside (given back at the end) and replaced by the other user's
    // directory, holding a copy of that entry under its name, all theirs.
    let pool = pool_dir();
    let aside = pool.with_extension(format!("aside-{}", std::process::id()));
    std::fs::rename(&pool, &aside).unwrap();
    struct GiveBack(PathBuf, PathBuf);
    impl Drop for GiveBack {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.1);
            let _ = std::fs::rename(&self.0, &self.1);
        }
    }
    let _give_back = GiveBack(aside.clone(), pool.clone());
    std::fs::create_dir(&pool).unwrap();
    let planted = pool.join(entry.file_name().unwrap());
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(aside.join(entry.file_name().unwrap()))
        .arg(&planted)
        .status()
        .unwrap();
    assert!(copied.success());
    let intruder = intruder();
    give_to_intruder(&pool);
    let planted_file = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(planted.join("cluster/PG_VERSION"))
            .unwrap()
            .ino()
    };

    let (mut second, _second_guard, root) = launch("second");
    let stderr = second.stderr_text();
    assert!(
        !stderr.contains("from the pool"),
        "the planted entry was used: {stderr}"
    );
    assert!(stderr.contains("not pgwarden's own"), "{stderr}");
    assert_ne!(inode(&root.join("data/PG_VERSION")), planted_file);
    second.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(second.wait_exit(STOP).success());
    assert_eq!(
        inode(&planted.join("cluster/PG_VERSION")),
        planted_file,
        "the other user's pool was deleted or changed"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&pool).unwrap().uid(),
        intruder.uid.as_raw()
    );
}

/// `exec --ephemeral -- CMD` with the binaries of the test cache, CMD given to `sh -c`; CMD's
/// environment has `ROOTS`, the throwaway root of an `exec-<pid>` instance without the pid (CMD's
/// `$PPID` is exec's pid: `${ROOTS}$PPID` is the root of its server).
fn exec_ephemeral(script: &str) -> Pgwarden {
    let archive = npm_archive().display().to_string();
    let install = shared_install_dir().display().to_string();
    let roots = ephemeral_root("exec-").display().to_string();
    Pgwarden::start(
        &[
            "exec",
            "--ephemeral",
            "--archive",
            &archive,
            "--install-dir",
            &install,
            "--",
            "sh",
            "-c",
            script,
        ],
        &[("ROOTS", &roots)],
    )
}

/// The throwaway root of the server of `exec`, an `exec --ephemeral` without `--name`.
fn exec_root(exec: &Pgwarden) -> PathBuf {
    ephemeral_root(&format!("exec-{}", exec.pid()))
}

/// The postmaster pid CMD printed on a line `postmaster <pid>`.
fn printed_postmaster(exec: &Pgwarden) -> i32 {
    let line = exec.wait_for_stdout("postmaster ", FIRST_LAUNCH);
    line.trim_start_matches("postmaster ")
        .trim()
        .parse()
        .unwrap()
}

/// Waits (bounded) until process `pid` is gone; whether it is.
fn gone_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Prints the postmaster's pid of exec's server (`postmaster <pid>`).
const PRINT_POSTMASTER: &str =
    r#"echo "postmaster $(head -n1 "${ROOTS}$PPID/data/postmaster.pid")""#;

/// `exec --ephemeral`: CMD gets a working server that `ls` lists while CMD runs, exec exits
/// with CMD's code, and afterwards neither the server nor its root in /dev/shm is left.
#[test]
fn exec_ephemeral_gives_cmd_a_listed_server_exits_with_its_code_and_leaves_nothing() {
    let bin = env!("CARGO_BIN_EXE_pgwarden");
    let script = format!("{PRINT_POSTMASTER}; psql -XAtc 'select 40 + 2' && {bin} ls && exit 7");
    let mut exec = exec_ephemeral(&script);
    let root = exec_root(&exec);
    let status = exec.wait_exit(FIRST_LAUNCH);
    let out = exec.stdout_text();
    assert_eq!(
        status.code(),
        Some(7),
        "CMD's exit code: {out}\n{}",
        exec.stderr_text()
    );
    assert!(
        out.lines().any(|l| l == "42"),
        "CMD reached the server: {out}"
    );
    let name = format!("exec-{}", exec.pid());
    assert!(
        out.lines()
            .any(|l| l.starts_with(&name) && l.contains("ready")),
        "`pgwarden ls` lists {name} while CMD runs: {out}"
    );
    let postmaster = printed_postmaster(&exec);
    assert_server_removed(postmaster, &root);
    // Moved out of its name on the way out, its files are removed by a detached sweeper.
    let deadline = Instant::now() + STOP;
    while !discarded_copies(&root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        discarded_copies(&root),
        Vec::<PathBuf>::new(),
        "the sweeper removed the stopped server's files"
    );
}

/// After exec: its server `postmaster` is stopped and its throwaway root `root` is gone.
fn assert_server_removed(postmaster: i32, root: &std::path::Path) {
    assert!(
        !process_alive(postmaster),
        "the server {postmaster} is stopped"
    );
    assert!(!root.exists(), "{} is removed", root.display());
}

/// The directories a stopped throwaway server's root `root` was moved to for its removal.
fn discarded_copies(root: &std::path::Path) -> Vec<PathBuf> {
    let name = format!("{}.removed-", root.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(root.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| e.path())
        .collect()
}

/// A Ctrl-C (SIGINT to exec's process group, as a terminal sends it) ends CMD; exec then
/// removes the server and exits with CMD's code (130).
#[test]
fn ctrl_c_ends_cmd_and_exec_still_removes_the_server() {
    let script = format!("{PRINT_POSTMASTER}; exec sleep 600");
    let mut exec = exec_ephemeral(&script);
    let root = exec_root(&exec);
    let postmaster = printed_postmaster(&exec);
    assert!(process_alive(postmaster));
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(exec.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = exec.wait_exit(STOP);
    assert_eq!(status.code(), Some(130), "{}", exec.stderr_text());
    assert_server_removed(postmaster, &root);
}

/// A SIGTERM to exec alone (as `timeout` or a service manager sends it) is passed on to CMD:
/// exec waits for CMD, removes the server and exits with CMD's code; so is a SIGHUP. Before,
/// the SIGTERM ended exec at once and CMD ran on without its server (here for 30 s at most).
#[test]
fn a_sigterm_or_sighup_to_exec_is_passed_on_to_cmd_and_the_server_still_removed() {
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 7),
        (nix::sys::signal::Signal::SIGHUP, 8),
    ] {
        let script = format!(
            "{PRINT_POSTMASTER}; trap 'echo cmd-got-term; exit 7' TERM; trap 'echo cmd-got-hup; exit 8' HUP; \
             echo waiting; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done"
        );
        let mut exec = exec_ephemeral(&script);
        let root = exec_root(&exec);
        let postmaster = printed_postmaster(&exec);
        exec.wait_for_stdout("waiting", FIRST_LAUNCH);
        exec.signal(signal);
        let status = exec.wait_exit(STOP);
        let out = exec.stdout_text();
        assert_eq!(
            status.code(),
            Some(code),
            "{signal}: CMD's exit code: {out}\n{}",
            exec.stderr_text()
        );
        assert!(
            out.contains(if code == 7 {
                "cmd-got-term"
            } else {
                "cmd-got-hup"
            }),
            "CMD got the {signal}: {out}"
        );
        assert_server_removed(postmaster, &root);
    }
}

/// A throwaway server killed together with everything it started (an OOM kill, a kill of its
/// cgroup) leaves no shared memory behind once its root is swept: its dynamic segments are files
/// in its cluster (`dynamic_shared_memory_type=mmap`), and the sweep removes the System V
/// segment its `postmaster.pid` names. PostgreSQL itself frees that segment only at the next
/// start on the same data directory, which a throwaway cluster never gets.
#[test]
fn a_killed_throwaway_server_leaves_no_shared_memory_once_swept() {
    let script = format!(
        "{PRINT_POSTMASTER}; echo \"dsm $(psql -XAtc 'show dynamic_shared_memory_type')\"; exec sleep 600"
    );
    let exec = exec_ephemeral(&script);
    let root = exec_root(&exec);
    let postmaster = printed_postmaster(&exec);
    let dsm = exec.wait_for_stdout("dsm ", FIRST_LAUNCH);
    assert_eq!(dsm.trim(), "dsm mmap");
    let (_, shmid) = pgwarden::postmaster::pid_file::PidFile::read(&root.join("data"))
        .and_then(|file| file.shmem)
        .expect("postmaster.pid names its segment");
    let segment_exists = || {
        // SAFETY: IPC_STAT into a zeroed shmid_ds of our own.
        let mut s: nix::libc::shmid_ds = unsafe { std::mem::zeroed() };
        unsafe { nix::libc::shmctl(shmid, nix::libc::IPC_STAT, &mut s) == 0 }
    };
    assert!(segment_exists(), "the server's segment {shmid}");
    // All at once: the postmaster is frozen first, so that neither its parent-death signal nor
    // exec's restart of a crashed server cleans up before the kill.
    let group = nix::unistd::Pid::from_raw(postmaster);
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // exec with its CMD (its process group, as a job's cancellation kills it), then the server.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(exec.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        gone_within(postmaster, STOP),
        "the killed server {postmaster}"
    );
    assert!(
        segment_exists(),
        "a killed server leaves its segment {shmid}"
    );
    // The next ephemeral launch's sweep (here the sweeper's own verb) removes root and segment.
    let deadline = Instant::now() + STOP;
    while root.exists() && Instant::now() < deadline {
        let swept = run_to_exit(&["sweep-throwaways"], &[], STOP);
        assert!(swept.status.success(), "{swept:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!root.exists(), "{} is removed", root.display());
    assert!(
        !segment_exists(),
        "the killed server's segment {shmid} is freed"
    );
}

/// A kill -9 of exec leaves no server running (its parent-death signal stops it), and the
/// next ephemeral launch removes the root it left in /dev/shm.
#[test]
fn a_killed_exec_leaves_no_server_and_the_next_ephemeral_launch_sweeps_its_root() {
    let script = format!("{PRINT_POSTMASTER}; exec sleep 600");
    let exec = exec_ephemeral(&script);
    let root = exec_root(&exec);
    let postmaster = printed_postmaster(&exec);
    assert!(process_alive(postmaster));
    exec.signal(nix::sys::signal::Signal::SIGKILL);
    // CMD (`sleep`), orphaned in exec's process group, is not what this is about.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(exec.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        gone_within(postmaster, STOP),
        "the server {postmaster} of a killed exec still runs"
    );
    assert!(root.exists(), "the killed exec left {}", root.display());

    let mut next = exec_ephemeral("true");
    assert!(
        next.wait_exit(FIRST_LAUNCH).success(),
        "{}",
        next.stderr_text()
    );
    assert!(
        !root.exists(),
        "the next ephemeral launch swept {}",
        root.display()
    );
}

/// The sweep of killed execs' roots removes only throwaway roots of pgwarden's own: a directory
/// named like one but without pgwarden's marker, and a symlink named like one (pointing at a
/// marked directory elsewhere), are left as they are, and what the symlink points at too.
#[test]
fn the_sweep_of_exec_roots_leaves_unmarked_directories_and_symlinks_alone() {
    let dir = test_dir();
    // Pids far above any pid_max: no exec of this test can have them.
    let unmarked = ephemeral_root("exec-4199999991");
    let link = ephemeral_root("exec-4199999992");
    let target = dir.path().join("elsewhere");
    std::fs::create_dir_all(unmarked.join("data")).unwrap();
    std::fs::write(unmarked.join("data/keep"), "mine").unwrap();
    std::fs::create_dir_all(target.join("data")).unwrap();
    std::fs::write(target.join(".pgwarden-throwaway"), "1\n").unwrap();
    std::fs::write(target.join("data/keep"), "mine").unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let mut exec = exec_ephemeral("true");
    let status = exec.wait_exit(FIRST_LAUNCH);
    let kept = (
        unmarked.join("data/keep").is_file(),
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
        target.join("data/keep").is_file(),
    );
    let _ = std::fs::remove_dir_all(&unmarked);
    let _ = std::fs::remove_file(&link);
    assert!(status.success(), "{}", exec.stderr_text());
    assert_eq!(
        kept,
        (true, true, true),
        "(unmarked directory, symlink, its target) kept"
    );
}

/// Stopped servers' roots, moved out of their names for removal (`<root>.removed-…`), are
/// removed by the next ephemeral launch when no sweeper did (one killed, say) — but only
/// pgwarden's own: another user's directory so named, holding the marker, and a symlink so
/// named (to a marked directory of ours elsewhere) are left as they are, with what the
/// symlink points at.
#[test]
fn discarded_roots_of_ours_are_swept_and_planted_ones_left_alone() {
    let dir = test_dir();
    let marked = |path: &std::path::Path| {
        std::fs::create_dir_all(path.join("data")).unwrap();
        std::fs::write(path.join(".pgwarden-throwaway"), "1\n").unwrap();
        std::fs::write(path.join("data/keep"), "mine").unwrap();
    };
    let discarded = |n: u32| {
        let root = ephemeral_root(&format!("exec-41999999{n}"));
        PathBuf::from(format!("{}.removed-1-{n}", root.display()))
    };
    let (ours, theirs, link) = (discarded(1), discarded(2), discarded(3));
    let target = dir.path().join("elsewhere");
    marked(&ours);
    marked(&theirs);
    marked(&target);
    give_to_intruder(&theirs);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let mut exec = exec_ephemeral("true");
    let status = exec.wait_exit(FIRST_LAUNCH);
    let after = (
        ours.exists(),
        theirs.join("data/keep").is_file(),
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
        target.join("data/keep").is_file(),
    );
    let _ = std::fs::remove_dir_all(&ours);
    let _ = std::fs::remove_dir_all(&theirs);
    let _ = std::fs::remove_file(&link);
    assert!(status.success(), "{}", exec.stderr_text());
    assert_eq!(
        after,
        (false, true, true, true),
        "(ours, another user's, a symlink, its target) exist after the sweep"
    );
}

/// `exec --ephemeral -- true` with its own binaries' install dir (its own pool key), settings
/// `envs`; its output.
fn exec_true(binaries: &str, install: &str, envs: &[(&str, &str)]) -> Pgwarden {
    Pgwarden::start(
        &[
            "exec",
            "--ephemeral",
            "-v",
            "--binaries",
            binaries,
            "--install-dir",
            install,
            "--",
            "true",
        ],
        envs,
    )
}

/// Issue 29's row 12: a loop of short `exec --ephemeral` runs. The stop comes right after CMD,
/// so the pool entry is made by a maker that outlives the instance: after an exec returns, an
/// entry appears (made as the server's user, never root's), its maker is gone once it is
/// there, and the next exec takes it instead of copying the template.
#[test]
fn after_an_ephemeral_exec_returns_its_pool_maker_leaves_an_entry_the_next_exec_takes() {
    let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let settings = [("POSTGRES_PASSWORD", "exec-pool-secret")];

    let mut first = exec_true(&binaries, &install, &settings);
    assert!(
        first.wait_exit(FIRST_LAUNCH).success(),
        "{}",
        first.stderr_text()
    );
    let entry = wait_for_pool_entry(&install, &[]);
    let maker = maker_of(&entry);
    assert_ne!(
        maker as u32,
        first.pid(),
        "the entry was made by exec itself"
    );
    assert!(
        gone_within(maker, STOP),
        "the maker {maker} outlives its work"
    );
    assert!(
        makers_running(&install).is_empty(),
        "a pool maker is left: {:?}",
        makers_running(&install)
    );
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(entry.join("cluster/PG_VERSION"))
            .unwrap()
            .uid();
        assert_ne!(owner, 0, "the pool entry's cluster belongs to root");
    }

    let mut second = exec_true(&binaries, &install, &settings);
    assert!(
        second.wait_exit(FIRST_LAUNCH).success(),
        "{}",
        second.stderr_text()
    );
    let stderr = second.stderr_text();
    assert!(
        stderr.contains("the cluster from the pool of throwaway clusters"),
        "the second exec copied the template: {stderr}"
    );
    assert!(!entry.exists(), "the taken entry is still in the pool");
    // ... and its own maker makes the next one, and ends (an idle process: on a busy machine
    // it may outlive the entry it published for a while).
    let next = maker_of(&wait_for_pool_entry(&install, &[]));
    assert!(
        gone_within(next, STOP),
        "the maker {next} outlives its work"
    );

    // PGWARDEN_EPHEMERAL_POOL=0: no maker, the entry there is left alone.
    let entries = pool_entries(&install);
    let mut off_settings = settings.to_vec();
    off_settings.push(("PGWARDEN_EPHEMERAL_POOL", "0"));
    let mut off = exec_true(&binaries, &install, &off_settings);
    assert!(
        off.wait_exit(FIRST_LAUNCH).success(),
        "{}",
        off.stderr_text()
    );
    assert!(
        makers_running(&install).is_empty(),
        "a maker with the pool off"
    );
    assert_eq!(
        pool_entries(&install),
        entries,
        "the pool changed with the pool off"
    );
    // A SIGTERM stops a maker cleanly: its working directory is removed, no entry is made (a
    // few tries: the copy may finish between a look and the signal).
    let mut stopped_while_copying = false;
    for _ in 0..10 {
        for entry in pool_entries(&install) {
            std::fs::remove_dir_all(entry).unwrap();
        }
        let mut maker = Pgwarden::start(
            &[
                "pool-fill",
                "--ephemeral",
                "--binaries",
                &binaries,
                "--install-dir",
                &install,
            ],
            &settings,
        );
        let work = format!(".work-{}", maker.pid());
        let deadline = Instant::now() + FIRST_LAUNCH;
        let working = || {
            pool_work_dirs(&install)
                .into_iter()
                .find(|w| w.to_string_lossy().ends_with(&work))
        };
        let mut seen = working();
        while seen.is_none() && pool_entries(&install).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
            seen = working();
        }
        maker.signal(nix::sys::signal::Signal::SIGTERM);
        let status = maker.wait_exit(STOP);
        if seen.is_some() && pool_entries(&install).is_empty() {
            assert!(status.success(), "{status:?}: {}", maker.stderr_text());
            assert!(
                working().is_none(),
                "a stopped maker left its working directory"
            );
            stopped_while_copying = true;
            break;
        }
    }
    assert!(
        stopped_while_copying,
        "no SIGTERM landed while a maker was copying"
    );
}

/// Many `exec --ephemeral` at once, `ephemeral_pool = 2`: the pool never holds more than two
/// entries of their settings, and once the makers are done none is left running.
#[test]
fn concurrent_ephemeral_execs_never_fill_the_pool_beyond_ephemeral_pool() {
    let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let settings = [
        ("POSTGRES_PASSWORD", "crowd-secret"),
        ("PGWARDEN_EPHEMERAL_POOL", "2"),
    ];
    // The template first, so that the crowd's makers all have one to copy.
    let mut first = exec_true(&binaries, &install, &settings);
    assert!(
        first.wait_exit(FIRST_LAUNCH).success(),
        "{}",
        first.stderr_text()
    );

    let watching = std::sync::atomic::AtomicBool::new(true);
    let most = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut most = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(pool_entries(&install).len());
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        });
        for _ in 0..3 {
            let mut crowd: Vec<Pgwarden> = (0..6)
                .map(|_| exec_true(&binaries, &install, &settings))
                .collect();
            for exec in &mut crowd {
                assert!(
                    exec.wait_exit(FIRST_LAUNCH).success(),
                    "{}",
                    exec.stderr_text()
                );
            }
        }
        let deadline = Instant::now() + FIRST_LAUNCH;
        while !makers_running(&install).is_empty() {
            assert!(
                Instant::now() < deadline,
                "pool makers still run: {:?}",
                makers_running(&install)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert!(
        most <= 2,
        "the pool held {most} entries with ephemeral_pool = 2"
    );
    // (Two when the last maker ran after the last start took its entry.)
    assert!(
        !pool_entries(&install).is_empty(),
        "the makers left the pool empty"
    );
    assert!(
        pool_work_dirs(&install).is_empty(),
        "a maker's working directory is left"
    );
}

/// A pool maker takes no CPU from anyone who wants it and is out of its server's reach: in
/// `SCHED_IDLE` at nice 19, in a session (so a process group) of its own. It is started
/// without a fork of the supervisor and lowers itself first thing, asked by a variable that
/// lowers nothing else; a running server's maker waits (up to a second) for it to exit, long
/// enough to look at it.
#[test]
fn a_pool_maker_runs_idle_in_a_session_of_its_own() {
    let _pool = POOL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let name = format!("pool-idle-{}", std::process::id());
    let _cleanup = Background {
        name: name.clone(),
        root: ephemeral_root(&name),
    };
    // A variable of the helpers' own in the server's environment: it lowers the helper it
    // starts, never the server (nor its postgres).
    let (mut server, _) = run_ephemeral(&name, &binaries, &install, &[("PGWARDEN_IDLE", "1")]);
    let postmaster = postmaster_pid(&ephemeral_root(&name).join("data"));
    let (_, own_nice, own_policy) = scheduling(std::process::id() as i32).unwrap();
    for pid in [server.pid() as i32, postmaster] {
        let (_, nice, policy) = scheduling(pid).unwrap();
        assert_eq!((nice, policy), (own_nice, own_policy), "{pid} was lowered");
    }
    // The maker, once it has its session: 5 is SCHED_IDLE.
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let found = makers_running(&install).into_iter().find_map(|pid| {
            let (session, nice, policy) = scheduling(pid)?;
            (session == pid as i64).then_some((pid, nice, policy))
        });
        if let Some(seen) = found {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "no pool maker in a session of its own within 5 s; makers: {:?}",
            makers_running(&install)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (maker, nice, policy) = seen;
    assert_eq!((nice, policy), (19, 5), "the maker {maker} is not idle");
    assert_ne!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(server.pid() as i32))).unwrap(),
        nix::unistd::Pid::from_raw(maker),
        "the maker shares its server's session"
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(STOP).success());
    assert!(
        gone_within(maker, STOP),
        "the maker {maker} outlives its work"
    );
}

/// A `pool-fill` started as a process group leader (as a shell starts a command) cannot have a
/// session of its own; it then leaves its caller's session — the whole terminal's autogroup —
/// at its nice, instead of lowering it to 19 with itself.
#[test]
fn a_pool_maker_that_cannot_leave_its_session_leaves_the_sessions_priority_alone() {
    let autogroup = || {
        std::fs::read_to_string("/proc/self/autogroup")
            .expect("this test needs autogroups (kernel.sched_autogroup_enabled)")
    };
    let before = autogroup();
    let dir = test_dir();
    let (binaries, install) = own_binaries(dir.path());
    let mut waiting = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    use std::os::unix::process::CommandExt;
    let mut maker = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args([
            "pool-fill",
            "--ephemeral",
            "--binaries",
            &binaries,
            "--install-dir",
            &install,
            &format!("--after-exit-of={}", waiting.id()),
        ])
        .env("PGWARDEN_IDLE", "1")
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It waits (up to a second) for `sleep`: look while it does, then let it end.
    std::thread::sleep(Duration::from_millis(300));
    let (_, nice, policy) = scheduling(maker.id() as i32).expect("the maker runs");
    let after = autogroup();
    let _ = waiting.kill();
    let _ = waiting.wait();
    let status = maker.wait().unwrap();
    assert!(status.success(), "{status}");
    if after != before {
        // Put the session (this whole test run's) back before failing.
        let nice = before.rsplit_once("nice ").unwrap().1.trim();
        let _ = std::fs::write("/proc/self/autogroup", nice);
    }
    assert_eq!((nice, policy), (19, 5), "the maker itself is idle");
    assert_eq!(after, before, "the caller's session was lowered");
}

/// `(session, nice, policy)` of process `pid` (`/proc/<pid>/stat` fields 6, 19 and 41).
fn scheduling(pid: i32) -> Option<(i64, i64, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |at: usize| fields.get(at - 3)?.parse::<i64>().ok();
    Some((number(6)?, number(19)?, number(41)?))
}

/// `pool-fill` is a verb anyone can type: it refuses what `run` refuses (exit 2, naming the
/// cause and the fix) before it reads anything, and makes nothing then.
#[test]
fn the_pool_maker_refuses_an_untrusted_installation_and_settings_that_are_not_throwaway() {
    let dir = test_dir();
    // An "installation" any user could have written to.
    let open = dir.path().join("open-binaries");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let install = dir.path().join("install").display().to_string();
    let refused = run_to_exit(
        &[
            "pool-fill",
            "--ephemeral",
            "--binaries",
            &open.display().to_string(),
            "--install-dir",
            &install,
        ],
        &[],
        START,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        stderr.contains("writable by") && stderr.contains("help:"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("install").exists(),
        "the refused maker made {install}"
    );

    // Not a throwaway server's settings: no pool of kept clusters.
    let archive = npm_archive().display().to_string();
    let kept = run_to_exit(
        &[
            "pool-fill",
            "--archive",
            &archive,
            "--install-dir",
            &install,
        ],
        &[],
        START,
    );
    let stderr = String::from_utf8_lossy(&kept.stderr);
    assert_eq!(kept.status.code(), Some(2), "{kept:?}");
    assert!(
        stderr.contains("--ephemeral") && stderr.contains("help:"),
        "{stderr}"
    );

    // Hidden from --help.
    let help = run_to_exit(&["--help"], &[], START);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("pool-fill"));
}
