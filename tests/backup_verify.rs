//! Backups proven by restoring them (`pgwarden backup verify`, the drill after a scheduled
//! backup), against real servers: a good backup verifies and names what it checked while the
//! running server's rows and uptime stay as they were; a backup whose index was corrupted on
//! disk (the manifest matching the bad bytes) fails naming that index; a backup missing a WAL
//! segment fails at replay naming it; status, `status --json` and /metrics after a passed and
//! a failed drill, /readyz staying ready; kill -9 of a verify leaves no server, and the next
//! verify sweeps its directory.

mod common;

use common::{Pgwarden, connect, free_port, test_dir};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(300);

/// Runs a pgwarden command to completion.
fn pgw(args: &[&str]) -> Output {
    pgw_pid(args).0
}

/// [`pgw`], and the pid the command ran as.
fn pgw_pid(args: &[&str]) -> (Output, u32) {
    pgw_env(args, &[])
}

/// [`pgw_pid`] with more environment.
fn pgw_env(args: &[&str], envs: &[(&str, &str)]) -> (Output, u32) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("POSTGRES_USER")
        .env_remove("POSTGRES_DB")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = common::output_within(child, LONG)
        .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {LONG:?}"));
    eprintln!("[test] pgwarden {} -> {:?}", args.join(" "), out);
    (out, pid)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The value of an unlabelled series in a /metrics body.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.trim().parse().unwrap())
}

/// A server with a table `t` (10 000 rows) and its index `t_v`, and the HTTP endpoint.
fn start_server(dir: &Path, port: u16, http: u16) -> Pgwarden {
    let address = format!("127.0.0.1:{http}");
    let server = common::start_with(dir, port, &["--http-address", &address], &[]);
    server.wait_ready(common::FIRST_LAUNCH);
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 10000) g;
         CREATE INDEX t_v ON t (v);
         CHECKPOINT;",
    )
    .unwrap();
    server
}

/// A running server with the test's rows and one backup of it: the server, its port, and the
/// `--data-dir` flag and value.
fn server_with_a_backup(dir: &Path) -> (Pgwarden, u16, [String; 2]) {
    let (port, http) = (free_port(), free_port());
    let server = start_server(dir, port, http);
    let flags = data_flags(dir);
    let out = pgw(&["backup", &flags[0], &flags[1]]);
    assert!(out.status.success(), "{out:?}");
    (server, port, flags)
}

fn data_flags(dir: &Path) -> [String; 2] {
    ["--data-dir".into(), dir.join("data").display().to_string()]
}

fn status_json(dir: &Path) -> serde_json::Value {
    let [flag, data] = data_flags(dir);
    let out = pgw(&["status", "--json", &flag, &data]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&text(&out.stdout)).unwrap()
}

/// The newest archive in `dir`.
fn newest_archive(dir: &Path) -> PathBuf {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    archives.sort();
    archives.pop().expect("an archive")
}

/// The verification directories pgwarden pid `pid` made (in /dev/shm or the temp directory)
/// that exist now.
fn verify_dirs_of(pid: u32) -> Vec<PathBuf> {
    let name = format!("pgwarden-verify-{}-{pid}", nix::unistd::geteuid().as_raw());
    [PathBuf::from("/dev/shm"), std::env::temp_dir()]
        .iter()
        .map(|base| base.join(&name))
        .filter(|p| p.exists())
        .collect()
}

/// Pids of the processes working in `dir` or below (a postgres works in its data directory).
fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            (cwd.starts_with(dir) && common::process_alive(pid)).then_some(pid)
        })
        .collect()
}

/// Field `n` (1-based, as proc(5) numbers them) of /proc/<pid>/stat, as a number.
fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(n - 3)?.parse().ok()
}

fn uptime(port: u16) -> (String, i64) {
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    let row = c
        .query_one(
            "SELECT pg_postmaster_start_time()::text, (SELECT count(*) FROM t)",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn a_good_backup_verifies_without_disturbing_the_server_and_a_missing_wal_segment_is_named() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    let server = start_server(dir.path(), port, http);
    let [flag, data] = data_flags(dir.path());
    let before = uptime(port);

    // The drill after a scheduled backup: passed, recorded for status and /metrics.
    let out = pgw(&["backup", "--scheduled", &flag, &data]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    for named in [
        "verified: ",
        "databases (postgres, template0, template1, trader)",
        "tables with verify_heapam",
        "B-tree indexes with bt_index_check",
    ] {
        assert!(stdout.contains(named), "{named:?} in {stdout}");
    }
    let status = status_json(dir.path());
    let last = &status["last_verify"];
    assert_eq!(last["ok"], true, "{status}");
    assert!(
        last["checked"]["indexes"].as_u64().unwrap() >= 2,
        "{status}"
    );
    let (code, body) = get(http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "pgwarden_backup_verify_success"), Some(1.0));
    assert!(metric(&body, "pgwarden_backup_verify_timestamp_seconds").unwrap() > 1.7e9);
    assert!(metric(&body, "pgwarden_backup_verify_duration_seconds").unwrap() > 0.0);
    let status_text = text(&pgw(&["status", &flag, &data]).stdout);
    assert!(status_text.contains("last verify     ok "), "{status_text}");

    // The verb, on the newest backup: the same, and the running server as it was.
    let (out, pid) = pgw_pid(&["backup", "verify", &flag, &data]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("verified: "), "{out:?}");
    assert_eq!(uptime(port), before, "the running server was disturbed");
    assert!(verify_dirs_of(pid).is_empty(), "{:?}", verify_dirs_of(pid));

    // A copy of the backup without its first WAL segment, the manifest made to match.
    let archive = newest_archive(&dir.path().join("data.backups"));
    let broken = dir.path().join("no-wal.tar.zst");
    let segment = without_first_wal_segment(&archive, &broken);
    let out = pgw(&["backup", "verify", broken.to_str().unwrap(), &flag, &data]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("at the replay step")
            && stderr.contains(&format!("WAL segment {segment} is missing")),
        "{stderr}"
    );
    assert!(stderr.contains("help: "), "{stderr}");
    assert_eq!(
        status_json(dir.path())["last_verify"]["failed_step"],
        "replay"
    );
    assert_eq!(uptime(port), before);
    drop(server);
}

/// Writes `to`: `archive` without its first `pg_wal/` segment, and a manifest that matches it.
/// Returns the segment's name.
fn without_first_wal_segment(archive: &Path, to: &Path) -> String {
    let manifest_text =
        std::fs::read_to_string(format!("{}.manifest.json", archive.display())).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    let segment = manifest["wal_first"].as_str().unwrap().to_string();
    let dropped = format!("pg_wal/{segment}");
    let mut input =
        tar::Archive::new(zstd::Decoder::new(std::fs::File::open(archive).unwrap()).unwrap());
    let mut output = tar::Builder::new(
        zstd::Encoder::new(std::fs::File::create(to).unwrap(), 1)
            .unwrap()
            .auto_finish(),
    );
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path == dropped {
            continue;
        }
        let mut header = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        output.append_data(&mut header, &path, &bytes[..]).unwrap();
    }
    drop(output.into_inner().unwrap());
    let bytes = std::fs::read(to).unwrap();
    let files = manifest["files"].as_array_mut().unwrap();
    let before = files.len();
    files.retain(|f| f["path"] != dropped.as_str());
    assert_eq!(files.len() + 1, before, "{dropped} was in the manifest");
    manifest["archive"]["size"] = bytes.len().into();
    manifest["archive"]["sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
    std::fs::write(
        format!("{}.manifest.json", to.display()),
        manifest.to_string(),
    )
    .unwrap();
    segment
}

#[test]
fn an_index_corrupted_on_disk_fails_the_drill_naming_it_and_readyz_stays_ready() {
    let dir = test_dir();
    let (port, http) = (free_port(), free_port());
    let server = start_server(dir.path(), port, http);
    let data = dir.path().join("data");
    let index_file: String = connect(port, "trader", "trader", "trader")
        .unwrap()
        .query_one("SELECT pg_relation_filepath('t_v')", &[])
        .unwrap()
        .get(0);
    common::stop(server, nix::sys::signal::Signal::SIGTERM);

    // The index's first leaf page (block 1): its line pointers overwritten, server stopped.
    let path = data.join(index_file);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[8192 + 24..8192 + 24 + 64] {
        *b = 0x7f;
    }
    std::fs::write(&path, &bytes).unwrap();

    let address = format!("127.0.0.1:{http}");
    let server = common::start_with(dir.path(), port, &["--http-address", &address], &[]);
    server.wait_ready(common::START);
    let before = uptime(port);
    let [flag, data_flag] = data_flags(dir.path());
    let out = pgw(&["backup", "--scheduled", &flag, &data_flag]);
    // The backup is taken and kept; its drill failed: a WARN line, exit 1.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains("index public.t_v in database trader"),
        "{stderr}"
    );
    let status = status_json(dir.path());
    assert_eq!(status["last_backup"]["last_result"], "ok", "{status}");
    let last = &status["last_verify"];
    assert_eq!(last["ok"], false, "{status}");
    assert_eq!(last["failed_step"], "check", "{status}");
    let failures = last["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f
            .as_str()
            .unwrap()
            .starts_with("index public.t_v in database trader")),
        "{status}"
    );
    // Only the damaged relation is named: the table and the primary key are sound.
    assert_eq!(failures.len(), 1, "{status}");
    let (code, body) = get(http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "pgwarden_backup_verify_success"), Some(0.0));
    assert_eq!(get(http, "/readyz").0, 200);
    let status_text = text(&pgw(&["status", &flag, &data_flag]).stdout);
    assert!(
        status_text.contains("last verify     FAILED") && status_text.contains("index public.t_v"),
        "{status_text}"
    );

    // The verb says the same, and exits 1.
    let (out, pid) = pgw_pid(&["backup", "verify", &flag, &data_flag]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("at the check step")
            && stderr.contains("index public.t_v in database trader"),
        "{stderr}"
    );
    assert_eq!(uptime(port), before);
    assert!(verify_dirs_of(pid).is_empty(), "{:?}", verify_dirs_of(pid));
    drop(server);
}

#[test]
fn kill_9_of_a_verify_leaves_no_server_and_the_next_verify_sweeps_its_directory() {
    let dir = test_dir();
    let (server, _, [flag, data]) = server_with_a_backup(dir.path());

    let mut verify = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["backup", "verify", &flag, &data])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its throwaway server runs.
    let deadline = Instant::now() + LONG;
    let servers = loop {
        let servers: Vec<i32> = verify_dirs_of(verify.id())
            .iter()
            .flat_map(|d| processes_in(d))
            .collect();
        if !servers.is_empty() {
            break servers;
        }
        assert!(
            verify.try_wait().unwrap().is_none(),
            "the verify ended before its server ran"
        );
        assert!(Instant::now() < deadline, "no throwaway server appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    // The throwaway server runs beside the test's server without taking its cores: in a
    // session of its own (not the verify command's, which is the caller's), SCHED_IDLE.
    let own_session = stat_field(std::process::id() as i32, 6);
    for pid in &servers {
        let (session, policy) = (stat_field(*pid, 6), stat_field(*pid, 41));
        if policy.is_none() {
            continue; // exited meanwhile (a backend)
        }
        assert_ne!(session, own_session, "server {pid} in the caller's session");
        assert_eq!(policy, Some(5), "server {pid} not SCHED_IDLE");
    }
    // Its directory, as it is while its server runs (another test's verify running beside this
    // one may sweep it as soon as the verify is dead: that is the sweep too).
    let left = verify_dirs_of(verify.id());
    assert_eq!(left.len(), 1, "{left:?}");
    verify.kill().unwrap();
    verify.wait().unwrap();
    // Its server's System V shared memory segment (key and id in postmaster.pid), which a
    // SIGKILLed postmaster leaves.
    let segment: Option<(i64, i32)> = std::fs::read_to_string(left[0].join("data/postmaster.pid"))
        .ok()
        .and_then(|t| {
            let line = t.lines().nth(6)?.to_string();
            let mut f = line.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        });
    // The server dies with the verify (parent-death signal), by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.iter().any(|p| common::process_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the throwaway server outlived its verify: {servers:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The next verify sweeps the directory, and leaves none of its own.
    let (out, pid) = pgw_pid(&["backup", "verify", &flag, &data]);
    assert!(out.status.success(), "{out:?}");
    assert!(!left[0].exists(), "{} was not swept", left[0].display());
    if let Some((key, id)) = segment {
        assert!(!shared_memory_exists(key, id), "segment {key} {id} left");
    }
    assert!(verify_dirs_of(pid).is_empty(), "{:?}", verify_dirs_of(pid));
    drop(server);
}

/// While the running server works (a CPU-bound query), the verification's processes are
/// stopped (SIGSTOP, state T) — on a 2-core machine even SCHED_IDLE work beside a server slowed
/// it — and the verify still ends, sound, once the server is idle again.
#[test]
fn a_verify_pauses_while_the_running_server_is_busy_and_ends_once_it_is_idle() {
    let dir = test_dir();
    let (server, port, [flag, data]) = server_with_a_backup(dir.path());

    // The server busy on one core for up to a minute (cancelled at the end).
    let busy = std::thread::spawn(move || {
        let mut c = connect(port, "trader", "trader", "trader").unwrap();
        let _ = c.batch_execute(
            "SET statement_timeout = '60s';
             SELECT count(*) FROM generate_series(1, 2000000000);",
        );
    });
    std::thread::sleep(Duration::from_millis(300));
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["backup", "verify", &flag, &data])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = verify.id();
    // Its worker (the same command again, in an idle session: a child of `verify`) is seen
    // stopped while the query runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let workers: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| stat_field(*p, 4) == Some(pid as i64))
            .collect();
        if let Some(w) = workers.iter().find(|w| stat_state(**w) == Some('T')) {
            break Some(*w);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The query cancelled: the server is idle, the verify runs on to its end.
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
         WHERE query LIKE '%generate_series(1, 2000000000)%' AND pid <> pg_backend_pid()",
    )
    .unwrap();
    busy.join().unwrap();
    let out = common::output_within(verify, LONG).expect("the verify ended");
    assert!(
        stopped.is_some(),
        "the verification never paused beside the busy server"
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("verified:"), "{out:?}");
    drop(server);
}

/// The state letter of /proc/<pid>/stat (R, S, T, Z…).
fn stat_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[test]
fn names_another_user_planted_where_verifications_go_neither_stop_the_server_nor_lose_files() {
    if !common::require_root("a second local user plants the directories") {
        return;
    }
    let dir = test_dir();
    let (server, port, [flag, data]) = server_with_a_backup(dir.path());
    let before = uptime(port);
    let postmaster = common::postmaster_pid(&dir.path().join("data"));

    // Named as a killed verification's directory (a pid that cannot run) would be: a symlink to
    // the directory that holds the running cluster (`…/data`), and a directory of the other
    // user whose `data` is such a symlink.
    let uid = nix::unistd::geteuid().as_raw();
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let link = base.join(format!("pgwarden-verify-{uid}-999999998"));
    let planted = base.join(format!("pgwarden-verify-{uid}-999999999"));
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&planted);
    common::intruder();
    // The test directory must be reachable by the other user for its symlinks to resolve.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    common::as_intruder(&format!(
        "ln -s '{}' '{}' && mkdir '{}' && touch '{}/.pgwarden-throwaway' && ln -s '{}' '{}/data'",
        dir.path().display(),
        link.display(),
        planted.display(),
        planted.display(),
        dir.path().join("data").display(),
        planted.display()
    ));

    let out = pgw(&["backup", "verify", &flag, &data]);
    let kept = (
        link.symlink_metadata().is_ok(),
        planted.join("data").symlink_metadata().is_ok(),
    );
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&planted);
    assert!(out.status.success(), "{out:?}");
    assert!(
        common::process_alive(postmaster),
        "the running server was killed"
    );
    assert_eq!(uptime(port), before, "the running server was disturbed");
    assert_eq!(kept, (true, true), "another user's entries were removed");
    assert!(dir.path().join("data/PG_VERSION").is_file());
    drop(server);
}

/// The backup `backup verify` finds by itself (the newest in the backup directory) in a backup
/// directory of another user — made first beside a data directory in `/tmp` — is not restored
/// nor started as the server's user: refused (exit 2), naming it and its owner, with the way
/// out; named explicitly, the same file is verified.
#[test]
fn a_found_backup_in_another_users_directory_is_refused_unless_named() {
    if !common::require_root("a second local user owns the backup directory") {
        return;
    }
    let dir = test_dir();
    let (server, _, [flag, data]) = server_with_a_backup(dir.path());
    let backups = dir.path().join("data.backups");
    let archive = newest_archive(&backups);
    let intruder = common::intruder().uid.as_raw();
    for path in std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain([backups.clone()])
    {
        std::os::unix::fs::chown(&path, Some(intruder), None).unwrap();
    }

    let out = pgw(&["backup", "verify", &flag, &data]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(all.contains(&archive.display().to_string()), "{all}");
    assert!(all.contains(common::INTRUDER), "the owner is named: {all}");
    assert!(
        all.contains("help:") && all.contains("backup verify FILE"),
        "{all}"
    );
    assert!(
        status_json(dir.path())["last_verify"].is_null(),
        "a refused verification is not recorded as one"
    );

    let named = archive.display().to_string();
    let out = pgw(&["backup", "verify", &named, &flag, &data]);
    assert!(out.status.success(), "{out:?}");
    drop(server);
}

/// Switches to a new WAL segment and waits until the one holding everything so far is archived.
fn archive_now(c: &mut postgres::Client) -> String {
    let name: String = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .unwrap()
        .get(0);
    c.batch_execute("SELECT pg_switch_wal()").unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let last: Option<String> = c
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        if last.as_ref().is_some_and(|l| *l >= name) {
            return name;
        }
        assert!(Instant::now() < deadline, "{name} was not archived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn verify_to_a_time_replays_through_the_wal_archive_and_fails_when_a_segment_is_gone() {
    let dir = test_dir();
    let archive = dir.path().join("wal-archive");
    std::fs::create_dir(&archive).unwrap();
    if common::is_root() {
        let user = nix::unistd::User::from_name("pgwarden")
            .unwrap()
            .expect("user pgwarden");
        nix::unistd::chown(&archive, Some(user.uid), Some(user.gid)).unwrap();
    }
    let archive_s = archive.display().to_string();
    let env = [("PGWARDEN_WAL_ARCHIVE", archive_s.as_str())];
    let port = free_port();
    let server = common::start(dir.path(), port, &env);
    server.wait_ready(common::FIRST_LAUNCH);
    let [flag, data] = data_flags(dir.path());
    let backup = dir.path().join("base.tar.zst");
    let backup_s = backup.display().to_string();
    let (out, _) = pgw_env(&["backup", &backup_s, &flag, &data], &env);
    assert!(out.status.success(), "{out:?}");
    let mut c = connect(port, "trader", "trader", "trader").unwrap();
    c.batch_execute("CREATE TABLE later AS SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let to: String = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(1100));
    c.batch_execute("INSERT INTO later VALUES (0)").unwrap();
    let segment = archive_now(&mut c);
    // A later segment in the archive too: the time is within what the archive covers.
    c.batch_execute("INSERT INTO later VALUES (-1)").unwrap();
    archive_now(&mut c);

    let (out, _) = pgw_env(
        &["backup", "verify", &backup_s, "--to", &to, &flag, &data],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains(&format!("replayed through the WAL archive to {to}")),
        "{out:?}"
    );

    // The segment holding the table's creation gone from the archive: the replay cannot reach
    // the time.
    std::fs::remove_file(archive.join(&segment)).unwrap();
    let (out, _) = pgw_env(
        &["backup", "verify", &backup_s, "--to", &to, &flag, &data],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("at the replay step"), "{stderr}");
    assert!(
        stderr.contains("recovery ended before configured recovery target was reached"),
        "{stderr}"
    );
    drop(server);
}

/// Whether System V shared memory segment `id` exists with `key`.
fn shared_memory_exists(key: i64, id: i32) -> bool {
    use nix::libc;
    // SAFETY: plain data, filled by IPC_STAT or left alone.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to the struct above.
    let found = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } == 0;
    found && i64::from(ds.shm_perm.__key) == key
}
