//! What an install may do, decided by the configuration: how much an archive may unpack to
//! (`max_unpacked_mb`), and which user runs the new binaries' `postgres --version` when pgwarden
//! is root (`run_as`): an archive is not trusted before that check, so it does not run as root.
//!
//! A field of [`crate::config::Config`], passed to every install path (`run`, `install`,
//! `export-archive`) and every program of an installation that `binaries` runs; `binaries`
//! reads it as `binaries::Policy`, so the dependency runs one way.

/// The default bound on an archive's unpacked size: PostgreSQL 16 builds unpack to 60–300 MB.
pub const DEFAULT_MAX_UNPACKED_MB: u64 = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The most an archive may unpack to, in bytes (each entry counts at least one 512-byte block).
    pub max_unpacked_bytes: u64,
    /// `run_as` from the configuration (None: the default user).
    pub run_as: Option<String>,
}

impl Policy {
    /// The policy of `max_unpacked_mb` (the default when unset) and `run_as`.
    pub fn new(max_unpacked_mb: Option<u64>, run_as: Option<String>) -> Policy {
        Policy {
            max_unpacked_bytes: max_unpacked_mb
                .unwrap_or(DEFAULT_MAX_UNPACKED_MB)
                .saturating_mul(1 << 20),
            run_as,
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new(None, None)
    }
}
