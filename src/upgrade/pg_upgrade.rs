//! pg_upgrade of the new version, as the server's user, in a private working directory of the
//! instance's state directory (`<state dir>/upgrade`: pg_upgrade's current directory and the
//! Unix socket directory of the servers it starts, which listen on no TCP port), with the
//! install user's password in a 0600 passfile there (the clusters' sockets ask for scram).
//! Its own output directory is `pg_upgrade_output.d` in the new cluster (kept on failure: the
//! files it names are read into the error).

use super::state::Mode;
use crate::binaries::Install;
use crate::error::{Error, Result};
use crate::os::privilege::RunAs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One pg_upgrade run's parameters.
pub struct Run<'a> {
    pub old: &'a Install,
    pub new: &'a Install,
    pub old_dir: &'a Path,
    pub new_dir: &'a Path,
    pub install_user: &'a str,
    /// The old server's port: the running one's for a live `--check`, else any.
    pub old_port: u16,
    pub work_dir: &'a Path,
    pub mode: Mode,
    pub run_as: &'a RunAs,
}

/// The passfile's name in the working directory.
pub const PASSFILE: &str = "pgpass";

/// A libpq passfile line matching every host, port and database for `user`.
pub fn passfile_line(user: &str, password: &str) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:{}:{}\n", escape(user), escape(password))
}

impl Run<'_> {
    /// `pg_upgrade --check` (live when the old server runs on `old_port`): every pre-flight
    /// check of pg_upgrade's own, required libraries included. Changes nothing.
    pub fn check(&self) -> Result<()> {
        let output = super::output_of(self.command(true), "pg_upgrade --check")?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::UpgradeRefused {
            what: format!(
                "pg_upgrade --check refuses this upgrade to PostgreSQL {}:\n{}{}\n\
                 help: fix what it names in the old cluster (or install what the new version \
                 lacks), then run the upgrade again; nothing was changed and the server runs on",
                self.new.version,
                failure_lines(&output.stdout),
                self.reports()
            ),
        })
    }

    /// The upgrade itself, into the new cluster; the old server must be stopped.
    pub fn upgrade(&self) -> Result<()> {
        tracing::info!(mode = self.mode.flag(), from = %self.old.version, to = %self.new.version, "running pg_upgrade");
        let output = super::output_of(self.command(false), "pg_upgrade")?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Upgrade {
            what: format!(
                "pg_upgrade to PostgreSQL {} failed:\n{}{}",
                self.new.version,
                failure_lines(&output.stdout),
                self.reports()
            ),
        })
    }

    fn command(&self, check: bool) -> Command {
        let mut command = Command::new(self.new.bin("pg_upgrade"));
        command
            .arg("--old-bindir")
            .arg(self.old.dir.join("bin"))
            .arg("--new-bindir")
            .arg(self.new.dir.join("bin"))
            .arg("--old-datadir")
            .arg(self.old_dir)
            .arg("--new-datadir")
            .arg(self.new_dir)
            .arg(format!("--username={}", self.install_user))
            .arg(format!("--old-port={}", self.old_port))
            .arg("--new-port=50432")
            .arg("--socketdir")
            .arg(self.work_dir)
            .arg(self.mode.flag());
        if check {
            command.arg("--check");
        }
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .env("PGPASSFILE", self.work_dir.join(PASSFILE))
            .current_dir(self.work_dir)
            .stdin(Stdio::null());
        self.run_as.apply_std(&mut command);
        command
    }

    /// The text reports pg_upgrade left in its output directory (`loadable_libraries.txt`,
    /// `tables_using_*.txt`, …), each with its name, for the error.
    fn reports(&self) -> String {
        let mut out = String::new();
        for file in report_files(&self.new_dir.join("pg_upgrade_output.d")) {
            // The new cluster is the server user's: a report is read without following a link.
            let read = std::fs::File::options()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&file)
                .and_then(|mut f| {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut f, &mut text).map(|_| text)
                });
            if let Ok(text) = read {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                out.push_str(&format!("\n{name}:\n{}", text.trim_end()));
            }
        }
        out
    }
}

/// pg_upgrade's `*.txt` reports under `dir` (one level of timestamped subdirectories).
fn report_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(report_files(&path));
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "txt") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The lines of pg_upgrade's output that say what failed: everything from the first line that
/// is not a passed check ("Checking … ok") on.
fn failure_lines(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .skip_while(|l| {
            let l = l.trim_end();
            l.ends_with(" ok") || l.starts_with("Performing") || l.starts_with("---")
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passfile_line_escapes_its_separators() {
        assert_eq!(
            passfile_line("tr:ader", "p\\w:d"),
            "*:*:*:tr\\:ader:p\\\\w\\:d\n"
        );
    }

    #[test]
    fn the_failure_is_what_follows_the_passed_checks() {
        let out = b"Performing Consistency Checks\n-----------------------------\nChecking cluster versions                                     ok\nChecking for presence of required libraries                   fatal\n\nYour installation references loadable libraries that are missing\n";
        let lines = failure_lines(out);
        assert!(
            lines.starts_with("Checking for presence of required libraries"),
            "{lines}"
        );
        assert!(
            lines.contains("loadable libraries that are missing"),
            "{lines}"
        );
    }
}
