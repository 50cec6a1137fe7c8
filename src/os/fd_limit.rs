//! pgwarden's open-file limit (`RLIMIT_NOFILE`), raised once at the start of `run`.
//!
//! The supervisor needs descriptors of its own at any moment: the postmaster's pipes, a
//! spawn (its pipes and exec), the readiness and health probes, the status file. The HTTP
//! endpoint, which any local user can reach, must never take them: it serves at most a cap of
//! connections derived from this limit ([`crate::observe::connections::Bounds::for_fd_limit`]),
//! and the rest of the limit is the supervisor's reserve.
//!
//! As systemd recommends for servers (`systemd.exec(5)`, `LimitNOFILE=`), the soft limit is
//! raised to the hard limit: the default soft limit of 1024 is a guard for programs that use
//! `select()`, which pgwarden does not. The postmaster gets the limit pgwarden started with back
//! ([`for_children`]), so the server and what it runs (`archive_command`, extensions) see no
//! change.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::sync::OnceLock;

/// The (soft, hard) limit before [`raise`] changed it.
static STARTED_WITH: OnceLock<(u64, u64)> = OnceLock::new();

/// The limit pgwarden started with, for a child to set back between fork and exec, if
/// [`raise`] changed it.
pub fn for_children() -> Option<(u64, u64)> {
    STARTED_WITH.get().copied()
}

/// The limit in force after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit: what the process can open.
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised (`None`: it was already the hard limit, or could
    /// not be raised).
    pub raised_from: Option<u64>,
}

/// A limit that reads as "infinity" is used as this many descriptors (the kernel's
/// `fs.nr_open` default).
const UNLIMITED_AS: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one, and says what is in force.
pub fn raise() -> FdLimit {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        // Cannot happen on Linux; the default soft limit is the safe guess.
        return FdLimit {
            soft: 1024,
            hard: 1024,
            raised_from: None,
        };
    };
    let (original_soft, original_hard) = (soft, hard);
    let (soft, hard) = (soft.min(UNLIMITED_AS), hard.min(UNLIMITED_AS));
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, original_hard).is_ok() {
        let _ = STARTED_WITH.set((original_soft, original_hard));
        return FdLimit {
            soft: hard,
            hard,
            raised_from: Some(soft),
        };
    }
    FdLimit {
        soft,
        hard,
        raised_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise();
        assert_eq!(limit.soft, limit.hard);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft.min(UNLIMITED_AS), limit.soft);
        // A second call has nothing left to raise.
        assert_eq!(raise().raised_from, None);
        // Children get back what the process started with, if it was raised.
        if let Some(from) = limit.raised_from {
            assert_eq!(for_children().map(|(soft, _)| soft), Some(from));
        }
    }
}
