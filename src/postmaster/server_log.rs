//! The last lines a postgres server wrote, and what they say about why it ended.
//!
//! One log carries every process of the server: the postmaster, its startup process, and each
//! client's backend. A crash report must quote the server's own reason (`invalid value for
//! parameter …`, `could not locate a valid checkpoint record`), never a client's (`password
//! authentication failed for user "app"`, `the database system is starting up`), and never a
//! harmless last line (`database system is ready to accept connections`) as if it explained a
//! kill. So pgwarden runs postgres with [`LINE_PREFIX`] (unless `[server]` sets its own
//! `log_line_prefix`): `%p` names the process and `%b` its type, and [`LogTail::explain`] reads
//! only the postmaster's and the startup process's lines. A line without a prefix was written
//! to stderr before logging was set up, which only the postmaster does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many of the server's last lines are kept.
const KEEP: usize = 40;

/// PostgreSQL's default `%m [%p] ` plus the backend type (`postmaster`, `startup`, `client
/// backend`, …).
pub const LINE_PREFIX: &str = "%m [%p] %b ";

/// Message levels as they follow the prefix.
const LEVELS: [&str; 12] = [
    "LOG:",
    "FATAL:",
    "PANIC:",
    "ERROR:",
    "WARNING:",
    "DETAIL:",
    "HINT:",
    "CONTEXT:",
    "STATEMENT:",
    "NOTICE:",
    "INFO:",
    "DEBUG",
];

/// The last lines a server wrote; cheap to clone (one shared buffer).
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    pub fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("log tail lock");
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("log tail lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Why the server with postmaster `pid` failed, in its own words: its last FATAL or PANIC
    /// line with the lines just before that say why (`invalid value for parameter …` before
    /// `configuration file … contains errors`) and the DETAIL/HINT after it; else its last
    /// line written before logging started. `None` when it said nothing of the kind.
    pub fn explain(&self, pid: i32) -> Option<String> {
        explain(&self.lines(), pid)
    }
}

/// A log line taken apart: the process that wrote it, its type, and its level.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    pid: i32,
    backend_type: &'a str,
    level: &'a str,
}

/// Reads `… [pid] backend type LEVEL: …`; `None` for a line without a prefix.
fn parse(line: &str) -> Option<Parsed<'_>> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let pid = line[open + 1..close].parse().ok()?;
    let rest = line[close + 1..].trim_start();
    let (at, level) = LEVELS
        .iter()
        .filter_map(|level| rest.find(level).map(|at| (at, *level)))
        .min_by_key(|(at, _)| *at)?;
    Some(Parsed {
        pid,
        backend_type: rest[..at].trim(),
        level,
    })
}

/// The server's own lines: the postmaster's (by pid or type), its startup process's, and
/// lines without a prefix.
fn is_own(line: &str, pid: i32) -> bool {
    match parse(line) {
        None => true,
        Some(p) => p.pid == pid || matches!(p.backend_type, "postmaster" | "startup"),
    }
}

fn explain(lines: &[String], pid: i32) -> Option<String> {
    let own: Vec<&String> = lines.iter().filter(|l| is_own(l, pid)).collect();
    let fatal = |l: &&String| parse(l).is_some_and(|p| matches!(p.level, "FATAL:" | "PANIC:"));
    let Some(at) = own.iter().rposition(fatal) else {
        return own
            .iter()
            .rev()
            .find(|l| parse(l).is_none())
            .map(|l| l.to_string());
    };
    // The lines just before it that say why ("could not bind …: Permission denied").
    let telling = |l: &&&String| {
        !fatal(l)
            && [
                "invalid",
                "could not",
                "unrecognized",
                "No space",
                "out of memory",
            ]
            .iter()
            .any(|w| l.contains(w))
    };
    let mut picked: Vec<String> = own[at.saturating_sub(3)..at]
        .iter()
        .filter(telling)
        .map(|l| l.to_string())
        .collect();
    picked.push(own[at].clone());
    picked.extend(
        own[at + 1..]
            .iter()
            .take_while(|l| parse(l).is_some_and(|p| matches!(p.level, "DETAIL:" | "HINT:")))
            .map(|l| l.to_string()),
    );
    Some(picked.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn parses_the_prefix() {
        assert_eq!(
            parse(
                "2026-12-01 13:00:00.123 UTC [4711] client backend FATAL:  password authentication failed"
            ),
            Some(Parsed {
                pid: 4711,
                backend_type: "client backend",
                level: "FATAL:"
            })
        );
        assert_eq!(
            parse("2026-12-01 13:00:00.123 UTC [12] LOG:  starting PostgreSQL 16"),
            Some(Parsed {
                pid: 12,
                backend_type: "",
                level: "LOG:"
            })
        );
        assert_eq!(parse("postgres: could not access directory"), None);
    }

    #[test]
    fn quotes_the_postmasters_fatal_not_a_clients() {
        let log = lines(&[
            "t [100] postmaster LOG:  invalid value for parameter \"shared_buffers\": \"lots\"",
            "t [100] postmaster FATAL:  configuration file \"/d/pgwarden.conf\" contains errors",
            "t [200] client backend FATAL:  password authentication failed for user \"app\"",
            "t [200] client backend DETAIL:  Connection matched file \"pg_hba.conf\" line 1",
        ]);
        assert_eq!(
            explain(&log, 100).unwrap(),
            "t [100] postmaster LOG:  invalid value for parameter \"shared_buffers\": \"lots\"\n\
             t [100] postmaster FATAL:  configuration file \"/d/pgwarden.conf\" contains errors"
        );
    }

    #[test]
    fn quotes_the_startup_process_and_unprefixed_stderr() {
        let log = lines(&[
            "t [300] client backend FATAL:  the database system is starting up",
            "t [101] startup PANIC:  could not locate a valid checkpoint record",
            "t [101] startup HINT:  restore from a backup",
        ]);
        assert_eq!(
            explain(&log, 100).unwrap(),
            "t [101] startup PANIC:  could not locate a valid checkpoint record\n\
             t [101] startup HINT:  restore from a backup"
        );
        let early = lines(&["postgres: could not find the database system"]);
        assert_eq!(explain(&early, 1).unwrap(), early[0]);
    }

    #[test]
    fn a_ready_line_or_a_clients_error_explains_nothing() {
        let log = lines(&[
            "t [100] postmaster LOG:  database system is ready to accept connections",
            "t [200] client backend FATAL:  password authentication failed for user \"app\"",
        ]);
        assert_eq!(explain(&log, 100), None);
    }
}
