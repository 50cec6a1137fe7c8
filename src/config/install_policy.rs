//! What an install may do, set once from the configuration: how much an archive may unpack to
//! (`max_unpacked_mb`), and which user runs the new binaries' `postgres --version` when pgwarden
//! is root (`run_as`): an archive is not trusted before that check, so it does not run as root.
//!
//! Process-wide, because every install path (`run`, `install`, `export-archive`) reaches
//! `binaries::ensure` with the same configuration. Kept here, in `config`, which sets it;
//! `binaries` reads it (as `binaries::policy`), so the dependency runs one way.

use std::sync::RwLock;

/// The default bound on an archive's unpacked size: PostgreSQL 16 builds unpack to 60–300 MB.
pub const DEFAULT_MAX_UNPACKED_MB: u64 = 2048;

#[derive(Debug, Clone)]
pub struct Policy {
    /// The most an archive may unpack to, in bytes (each entry counts at least one 512-byte block).
    pub max_unpacked_bytes: u64,
    /// `run_as` from the configuration (None: the default user).
    pub run_as: Option<String>,
}

static POLICY: RwLock<Option<Policy>> = RwLock::new(None);

/// Sets the policy for the installs that follow.
pub fn configure(max_unpacked_mb: u64, run_as: Option<String>) {
    let policy = Policy {
        max_unpacked_bytes: max_unpacked_mb.saturating_mul(1 << 20),
        run_as,
    };
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
}

/// The policy in force (the defaults when nothing was configured).
pub fn current() -> Policy {
    POLICY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or(Policy {
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_MB << 20,
            run_as: None,
        })
}
