//! `postmaster.pid`, read the way `pg_ctl -w` reads it: line 1 is the postmaster's pid, line 2
//! its data directory, line 4 its port, line 6 the first TCP address it listens on (written
//! once that socket is bound; empty when none was), line 7 the key and id of its System V
//! shared memory segment, line 8 its status (`starting`, `stopping`, `ready`, `standby`).
//!
//! The postmaster rewrites the file in place, so a short or torn read just means "not yet".
//! The one reader for the supervisor's readiness check, the temporary server's, and the search
//! for a postmaster left running by a killed pgwarden.

use nix::unistd::Pid;
use std::path::{Path, PathBuf};

pub const FILE: &str = "postmaster.pid";

/// What `postmaster.pid` says, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    pub pid: Pid,
    pub data_dir: Option<PathBuf>,
    /// Line 4: the port.
    pub port: Option<u16>,
    /// Line 6: the first TCP address the postmaster listens on, as `listen_addresses` named it.
    pub listen_address: Option<String>,
    /// Line 7: the key and id of the postmaster's System V shared memory segment.
    pub shmem: Option<(u64, i32)>,
    /// Line 8, once the postmaster has written it.
    pub status: Option<String>,
}

impl PidFile {
    pub fn read(data_dir: &Path) -> Option<PidFile> {
        let text = std::fs::read_to_string(data_dir.join(FILE)).ok()?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = Pid::from_raw(lines.first()?.trim().parse().ok()?);
        Some(PidFile {
            pid,
            data_dir: lines.get(1).map(|l| PathBuf::from(l.trim())),
            port: lines.get(3).and_then(|l| l.trim().parse().ok()),
            listen_address: lines
                .get(5)
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
            shmem: lines.get(6).and_then(|l| {
                let (key, id) = l.trim().split_once(char::is_whitespace)?;
                Some((key.parse().ok()?, id.trim().parse().ok()?))
            }),
            status: lines.get(7).map(|l| l.trim().to_string()),
        })
    }

    /// Accepting connections: `ready`, or `standby` for a server in standby mode (hot standby
    /// reports this once it accepts read-only connections).
    pub fn says_ready(&self) -> bool {
        matches!(self.status.as_deref(), Some("ready" | "standby"))
    }
}

/// Whether `data_dir`'s postmaster is `pid` and says it accepts connections.
pub fn ready(data_dir: &Path, pid: Pid) -> bool {
    PidFile::read(data_dir).is_some_and(|f| f.pid == pid && f.says_ready())
}

/// How far `data_dir`'s postmaster `pid` says it is, from one read of its pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not `pid`'s file, or not ready yet.
    NotYet,
    /// `ready` or `standby`, but not (yet) shown listening where it was asked: `standby` is
    /// also written when an archive recovery with `hot_standby` off starts (connections are
    /// refused until it ends), and a postmaster whose TCP socket could not be bound (the port
    /// taken meanwhile) still starts, on its Unix socket alone, with an empty line 6.
    SaysReady,
    /// `ready` (out of recovery) and listening on TCP at the address (as given in
    /// `listen_addresses`) and port it was asked to.
    Listening,
}

/// What `data_dir`'s pid file says of postmaster `pid` (see [`Readiness`]).
pub fn readiness(data_dir: &Path, pid: Pid, address: &str, port: u16) -> Readiness {
    match PidFile::read(data_dir) {
        Some(f) if f.pid == pid && f.says_ready() => {
            if f.status.as_deref() == Some("ready")
                && f.port == Some(port)
                && f.listen_address.as_deref() == Some(address)
            {
                Readiness::Listening
            } else {
                Readiness::SaysReady
            }
        }
        _ => Readiness::NotYet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_standby_count_torn_files_do_not() {
        let full = |status: &str| format!("42\n/d\n1\n5432\n/s\n*\n  1 2\n{status}\n");
        for (status, ready) in [
            ("ready   ", true),
            ("standby ", true),
            ("starting", false),
            ("stopping", false),
        ] {
            let f = PidFile::parse(&full(status)).unwrap();
            assert_eq!(f.says_ready(), ready, "{status}");
            assert_eq!(f.pid, Pid::from_raw(42));
        }
        assert!(!PidFile::parse("42\n/d\n").unwrap().says_ready());
        assert_eq!(PidFile::parse(""), None);
        assert_eq!(
            PidFile::parse("4"),
            Some(PidFile {
                pid: Pid::from_raw(4),
                data_dir: None,
                port: None,
                listen_address: None,
                shmem: None,
                status: None
            })
        );
        // Line 7 as PostgreSQL writes it ("%9lu %9lu").
        assert_eq!(PidFile::parse(&full("ready")).unwrap().shmem, Some((1, 2)));
        let line = "42\n/d\n1\n5432\n/s\n*\n  5432001     65538\nready\n";
        assert_eq!(PidFile::parse(line).unwrap().shmem, Some((5432001, 65538)));
        assert_eq!(
            PidFile::parse("42\n/d\n1\n5432\n/s\n*\n\n").unwrap().shmem,
            None
        );
    }

    #[test]
    fn the_tcp_listener_is_line_6_and_the_port_line_4() {
        let file = |listen: &str| format!("42\n/d\n1\n5433\n/s\n{listen}\n  1 2\nready   \n");
        let f = PidFile::parse(&file("127.0.0.1")).unwrap();
        assert_eq!(f.port, Some(5433));
        assert_eq!(f.listen_address.as_deref(), Some("127.0.0.1"));
        // No TCP socket bound: the postmaster runs on its Unix socket alone.
        assert_eq!(PidFile::parse(&file("")).unwrap().listen_address, None);
        let dir = tempfile::tempdir().unwrap();
        let at = |listen: &str| {
            std::fs::write(dir.path().join(FILE), file(listen)).unwrap();
            readiness(dir.path(), Pid::from_raw(42), "127.0.0.1", 5433) == Readiness::Listening
        };
        assert!(at("127.0.0.1"));
        assert!(!at(""));
        // In recovery (hot_standby off writes `standby` before it accepts anyone): the probe's.
        std::fs::write(
            dir.path().join(FILE),
            file("127.0.0.1").replace("ready   ", "standby "),
        )
        .unwrap();
        assert_ne!(
            readiness(dir.path(), Pid::from_raw(42), "127.0.0.1", 5433),
            Readiness::Listening
        );
        assert!(!at("::1"));
        assert_ne!(
            readiness(dir.path(), Pid::from_raw(42), "127.0.0.1", 5434),
            Readiness::Listening
        );
        assert_ne!(
            readiness(dir.path(), Pid::from_raw(43), "127.0.0.1", 5433),
            Readiness::Listening
        );
    }
}
