//! Starting a cluster again after pgwarden replaced its data directory (a restore, a snapshot).
//!
//! When a supervisor was running, it is started again as it was: the same arguments (its `run`
//! becomes `start`, so that it goes to the background and this command returns once it is
//! ready), the same environment (`POSTGRES_PASSWORD` and friends: without them the reconcile
//! would put the defaults back) and the same working directory (relative paths), read from
//! `/proc/<pid>` before it is stopped. Otherwise the command's own flags are passed to
//! `pgwarden start`. Either way through the ordinary `start` path: nothing here reaches into
//! the supervisor.

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// How to start the instance again.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// Arguments after the executable, with the subcommand word already `start`.
    pub args: Vec<OsString>,
    /// `None`: this process's environment.
    pub env: Option<Vec<(OsString, OsString)>>,
    pub cwd: Option<PathBuf>,
}

fn split_nul(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string())
        .collect()
}

impl Relaunch {
    /// The running supervisor `pid` as it was started.
    pub fn of_supervisor(pid: u32) -> Result<Relaunch> {
        let read = |what: &str| {
            std::fs::read(format!("/proc/{pid}/{what}")).map_err(|e| Error::Backup {
                what: format!(
                    "cannot read how pgwarden (pid {pid}) was started (/proc/{pid}/{what}): {e}\n\
                     help: run this as the user that started it (or as root)"
                ),
            })
        };
        let argv = split_nul(&read("cmdline")?);
        let env = split_nul(&read("environ")?)
            .into_iter()
            .filter_map(|kv| {
                let bytes = kv.as_bytes();
                let eq = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&bytes[..eq]).to_os_string(),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]).to_os_string(),
                ))
            })
            .filter(|(k, _)| k != crate::instance::BACKGROUND_ENV)
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let mut args: Vec<OsString> = argv.into_iter().skip(1).collect();
        let Some(run) = args.iter().position(|a| a == "run") else {
            return Err(Error::Backup {
                what: format!(
                    "pgwarden (pid {pid}) was not started by `pgwarden run` / `start`; cannot start it again"
                ),
            });
        };
        args[run] = OsString::from("start");
        Ok(Relaunch {
            args,
            env: Some(env),
            cwd,
        })
    }

    /// This command's own arguments for `pgwarden start`: the subcommand word (`word`) becomes
    /// `start`, its first `positionals` positional arguments and the flags only it knows
    /// (`drop_flags` take no value, `drop_valued` take one) are left out.
    pub fn from_own_args(
        argv: impl Iterator<Item = OsString>,
        word: &str,
        positionals: usize,
        boolean_flags: &[&str],
        drop_flags: &[&str],
        drop_valued: &[&str],
    ) -> Relaunch {
        let mut args = Vec::new();
        let mut seen_word = false;
        let mut dropped = 0;
        let mut iter = argv.peekable();
        while let Some(arg) = iter.next() {
            let text = arg.to_string_lossy().into_owned();
            if !seen_word {
                if text == word {
                    seen_word = true;
                    args.push(OsString::from("start"));
                } else {
                    args.push(arg);
                }
                continue;
            }
            if let Some(flag) = text.strip_prefix("--") {
                let name = flag.split('=').next().unwrap_or_default();
                let inline = flag.contains('=');
                let full = format!("--{name}");
                if drop_flags.contains(&full.as_str()) {
                    continue;
                }
                let takes_value = !inline && !boolean_flags.contains(&full.as_str());
                if drop_valued.contains(&full.as_str()) {
                    if takes_value {
                        iter.next();
                    }
                    continue;
                }
                args.push(arg);
                if takes_value && let Some(value) = iter.next() {
                    args.push(value);
                }
            } else if dropped < positionals {
                dropped += 1;
            } else {
                args.push(arg);
            }
        }
        Relaunch {
            args,
            env: None,
            cwd: None,
        }
    }

    /// Runs `pgwarden start …` and waits for it (it returns once the server is ready, having
    /// printed `DATABASE_URL=…` on stdout).
    pub async fn start(&self) -> Result<()> {
        let mut exe = std::env::current_exe().map_err(|e| Error::Backup {
            what: format!("cannot find the pgwarden binary: {e}"),
        })?;
        // Replaced on disk while this ran (an upgrade): the new binary at the same path.
        if !exe.exists()
            && let Some(path) = exe.to_str().and_then(|p| p.strip_suffix(" (deleted)"))
        {
            exe = PathBuf::from(path);
        }
        let mut command = tokio::process::Command::new(exe);
        command.args(&self.args).stdin(std::process::Stdio::null());
        if let Some(env) = &self.env {
            command.env_clear().envs(env.iter().cloned());
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let status = command.status().await.map_err(|e| Error::Backup {
            what: format!("cannot run `pgwarden start`: {e}"),
        })?;
        if !status.success() {
            return Err(Error::Backup {
                what: format!(
                    "the cluster did not start again ({status}); its error is above\n\
                     help: start it with `pgwarden start` (or `run`) and the flags it needs"
                ),
            });
        }
        Ok(())
    }
}

/// The boolean flags of `run` (they take no value).
pub const RUN_BOOLEAN_FLAGS: [&str; 5] = [
    "--system",
    "--ephemeral",
    "--create-user",
    "--with-password",
    "--help",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_arguments_become_start_arguments() {
        let argv = [
            "--log-format",
            "json",
            "restore",
            "--data-dir",
            "d",
            "backup.tar.zst",
            "--force",
            "--to",
            "2026-01-01 00:00",
            "--port=7",
            "--system",
            "--archive",
            "a.tgz",
        ]
        .map(OsString::from);
        let r = Relaunch::from_own_args(
            argv.into_iter(),
            "restore",
            1,
            &RUN_BOOLEAN_FLAGS,
            &["--force", "--no-start"],
            &["--to"],
        );
        let args: Vec<String> = r
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--log-format",
                "json",
                "start",
                "--data-dir",
                "d",
                "--port=7",
                "--system",
                "--archive",
                "a.tgz"
            ]
        );
    }
}
