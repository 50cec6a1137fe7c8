//! `pgwarden check` side by side with Debian's real `pg_isready`, in every state a server can
//! be in: the same arguments go to both, and their stdout line and exit code must be equal.
//!
//! The states are produced deterministically, without racing the server's startup:
//! - accepting: a server started by `pgwarden run`;
//! - rejecting while shutting down: `pgwarden stop --mode smart` while a client stays connected
//!   (the server refuses new connections with 57P03 until that client leaves);
//! - rejecting while in recovery: the same cluster started with `standby.signal` and
//!   `hot_standby = off`, so it stays in recovery, refusing connections, for as long as we like;
//! - no response: a port nothing listens on, an HTTP-speaking listener, and a SIGSTOPped
//!   postmaster (the kernel accepts the connection, nobody answers: the timeout decides);
//! - no attempt: parameters libpq refuses (bad sslmode, unknown keyword, …).

mod common;

use common::{Pgwarden, free_port, run_to_exit, test_dir};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// One row of the table: what both tools printed and returned.
struct Row {
    state: &'static str,
    args: Vec<String>,
    theirs: (String, i32),
    ours: (String, i32),
}

fn pg_isready(args: &[String]) -> (String, i32, String) {
    let out = Command::new("pg_isready")
        .args(args)
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGHOSTADDR")
        .output()
        .expect("run Debian's pg_isready (apt install postgresql-client)");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn check(args: &[String]) -> (String, i32, String) {
    let mut full = vec!["check"];
    full.extend(args.iter().map(String::as_str));
    let out = run_to_exit(&full, &[], LONG);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Runs both with `args`, checks they agree and that the code is `expected`.
fn compare(table: &mut Vec<Row>, state: &'static str, args: &[&str], expected: i32) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (their_line, their_code, their_err) = pg_isready(&args);
    let (our_line, our_code, our_err) = check(&args);
    assert_eq!(
        (their_line.as_str(), their_code),
        (our_line.as_str(), our_code),
        "{state}: `pg_isready {}` vs `pgwarden check`\n\
         pg_isready stderr: {their_err}\npgwarden stderr: {our_err}",
        args.join(" ")
    );
    assert_eq!(
        our_code, expected,
        "{state}: {args:?}: {our_line} {our_err}"
    );
    if our_line.is_empty() && !args.iter().any(|a| a == "-q") {
        // No line means an error message instead, for both.
        assert!(
            !their_err.is_empty() && !our_err.is_empty(),
            "{state}: {args:?}"
        );
    }
    table.push(Row {
        state,
        args,
        theirs: (their_line, their_code),
        ours: (our_line, our_code),
    });
}

fn start(data_dir: &Path, port: u16, config: Option<&Path>) -> Pgwarden {
    let archive = common::npm_archive();
    let install = common::shared_install_dir();
    let port = port.to_string();
    let mut args = vec![
        "run",
        "--archive",
        archive.to_str().unwrap(),
        "--install-dir",
        install.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--port",
        &port,
    ];
    if let Some(config) = config {
        args.extend(["--config", config.to_str().unwrap()]);
    }
    Pgwarden::start(&args, &[])
}

fn postmaster_pid(data_dir: &Path) -> i32 {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Polls pg_isready until it returns `code` (the state is reached), or panics.
fn until_pg_isready(args: &[&str], code: i32) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let deadline = Instant::now() + LONG;
    loop {
        let (line, got, _) = pg_isready(&args);
        if got == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pg_isready never returned {code}; last: {line}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP listener that answers everything like an HTTP server, then closes.
fn http_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

#[test]
fn check_matches_pg_isready_in_every_state() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let port = free_port();
    let p = port.to_string();
    let socket_dir = dir.path().join("data.pgwarden/socket");
    let socket = socket_dir.to_str().unwrap();
    let uri = format!("postgres://trader@127.0.0.1:{port}/trader");
    let kv = format!("host=127.0.0.1 port={port} user=trader");
    let ssl = format!("postgresql://127.0.0.1:{port}/trader?sslmode=require");
    let mut table = Vec::new();

    // --- accepting ---
    let mut server = start(&data, port, None);
    server.wait_ready(LONG);
    let t = &mut table;
    compare(t, "accepting", &["-h", "127.0.0.1", "-p", &p], 0);
    compare(
        t,
        "accepting",
        &["-h", "127.0.0.1", "-p", &p, "-U", "trader"],
        0,
    );
    compare(
        t,
        "accepting (unknown role and db)",
        &["-h", "localhost", "-p", &p, "-U", "nobody", "-d", "nodb"],
        0,
    );
    compare(t, "accepting (URI)", &["-d", &uri], 0);
    compare(t, "accepting (conninfo)", &["-d", &kv], 0);
    compare(
        t,
        "accepting (conninfo overrides -p)",
        &["-p", "1", "-d", &kv],
        0,
    );
    compare(t, "accepting (Unix socket)", &["-h", socket, "-p", &p], 0);
    compare(
        t,
        "accepting (quiet)",
        &["-q", "-h", "127.0.0.1", "-p", &p],
        0,
    );
    compare(t, "sslmode=require, server without SSL", &["-d", &ssl], 2);

    // --- rejecting: smart shutdown waiting for a connected client ---
    let client = common::connect(port, "trader", "trader", "trader").unwrap();
    let mut stop = Pgwarden::start(
        &[
            "stop",
            "--mode",
            "smart",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    until_pg_isready(&["-h", "127.0.0.1", "-p", &p], 1);
    compare(
        t,
        "shutting down (smart, client connected)",
        &["-h", "127.0.0.1", "-p", &p],
        1,
    );
    compare(t, "shutting down (URI)", &["-d", &uri], 1);
    compare(
        t,
        "shutting down (Unix socket)",
        &["-h", socket, "-p", &p],
        1,
    );
    drop(client);
    assert!(stop.wait_exit(LONG).success(), "{}", stop.stderr_text());
    assert!(server.wait_exit(LONG).success());

    // --- no response: nothing listening any more ---
    compare(t, "nothing listening", &["-h", "127.0.0.1", "-p", &p], 2);
    compare(
        t,
        "nothing listening (localhost)",
        &["-h", "localhost", "-p", &p],
        2,
    );
    compare(t, "nothing listening (URI)", &["-d", &uri], 2);
    compare(
        t,
        "nothing listening (socket)",
        &["-h", socket, "-p", &p],
        2,
    );

    // --- rejecting: in recovery (a standby that does not accept read-only connections) ---
    std::fs::write(data.join("standby.signal"), "").unwrap();
    let config = dir.path().join("standby.toml");
    std::fs::write(&config, "[server]\nhot_standby = \"off\"\n").unwrap();
    let standby = start(&data, port, Some(&config));
    until_pg_isready(&["-h", "127.0.0.1", "-p", &p], 1);
    compare(
        t,
        "in recovery (standby, hot_standby=off)",
        &["-h", "127.0.0.1", "-p", &p],
        1,
    );
    compare(t, "in recovery (conninfo)", &["-d", &kv], 1);

    // --- no response: a postmaster that does not answer (SIGSTOP), timeout 1 s (= 2 s) ---
    let postmaster = Pid::from_raw(postmaster_pid(&data));
    kill(postmaster, Signal::SIGSTOP).unwrap();
    compare(
        t,
        "hung server (SIGSTOP), -t 1",
        &["-t", "1", "-h", "127.0.0.1", "-p", &p],
        2,
    );
    kill(postmaster, Signal::SIGCONT).unwrap();
    drop(standby);

    // --- no response: something else listens ---
    let http = http_listener().to_string();
    compare(
        t,
        "HTTP server on the port",
        &["-h", "127.0.0.1", "-p", &http],
        2,
    );

    // --- unusable parameters ---
    let free = free_port().to_string();
    compare(
        t,
        "bad sslmode",
        &["-h", "127.0.0.1", "-p", &free, "-d", "sslmode=bogus"],
        3,
    );
    compare(
        t,
        "bad target_session_attrs",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &free,
            "-d",
            "target_session_attrs=x",
        ],
        3,
    );
    compare(
        t,
        "ports do not match hosts",
        &["-h", "a,b", "-p", "1,2,3"],
        3,
    );
    compare(t, "unknown keyword", &["-d", "bogus=1"], 3);
    compare(
        t,
        "unknown URI parameter",
        &["-d", "postgres://x:1/d?bad=1"],
        3,
    );
    compare(t, "unterminated quote", &["-d", "host='127.0.0.1"], 3);
    compare(t, "extra argument", &["-h", "127.0.0.1", "extra"], 3);
    compare(t, "port not a number", &["-h", "127.0.0.1", "-p", "abc"], 2);
    compare(t, "port 0", &["-h", "127.0.0.1", "-p", "0"], 2);
    compare(
        t,
        "timeout not a number",
        &["-h", "127.0.0.1", "-p", &free, "-t", "abc"],
        2,
    );

    eprintln!("\n| state | arguments | pg_isready | pgwarden check |\n|---|---|---|---|");
    for row in &table {
        eprintln!(
            "| {} | `{}` | `{}` → {} | `{}` → {} |",
            row.state,
            row.args.join(" "),
            row.theirs.0,
            row.theirs.1,
            row.ours.0,
            row.ours.1
        );
    }
}
