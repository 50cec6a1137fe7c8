//! `postmaster.pid`, read the way `pg_ctl -w` reads it: line 1 is the postmaster's pid, line 2
//! its data directory, line 8 its status (`starting`, `stopping`, `ready`, `standby`).
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
                status: None
            })
        );
    }
}
