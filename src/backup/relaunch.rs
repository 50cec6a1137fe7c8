//! Starting a cluster again after pgwarden replaced its data directory (a restore, a snapshot).
//!
//! When a supervisor was running, it is started again as it was: the same arguments (its `run`
//! becomes `start`, so that it goes to the background and this command returns once it is
//! ready), the same environment (`POSTGRES_PASSWORD` and friends: without them the reconcile
//! would put the defaults back) and the same working directory (relative paths), read from
//! `/proc/<pid>` before it is stopped. Otherwise `pgwarden start` gets the command line built
//! from the command's own parsed flags ([`crate::commands::RunArgs::command_line`]). Either way
//! through the ordinary `start` path: nothing here reaches into the supervisor.
//!
//! Why `/proc` and not the remembered settings of the state directory
//! ([`crate::instance::remembered`]): those hold the flags and where the password came from,
//! never the environment's values (`POSTGRES_PASSWORD`, `POSTGRES_USER`, …, secrets that are
//! written nowhere), nor the flags that are asked for each time (`--ephemeral`,
//! `--create-user`, `--data-from`); a relaunch from them would reconcile the role back to the
//! defaults.

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
            .filter(|(k, _)| k != crate::instance::lock::BACKGROUND_ENV)
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

    /// `pgwarden ARGS`, the command line of a `start` built from a command's parsed flags
    /// ([`crate::commands::RunArgs::command_line`]), in this process's environment and directory.
    pub fn of_command_line(args: Vec<OsString>) -> Relaunch {
        Relaunch {
            args,
            env: None,
            cwd: None,
        }
    }

    /// Runs `pgwarden start …` and waits for it (it returns once the server is ready, having
    /// printed `DATABASE_URL=…` on stdout).
    pub async fn start(&self) -> Result<()> {
        let mut exe = std::env::current_exe().map_err(Error::CurrentExe)?;
        // Replaced on disk while this ran (an upgrade): the new binary at the same path.
        if !exe.exists()
            && let Some(path) = exe.to_str().and_then(|p| p.strip_suffix(" (deleted)"))
        {
            exe = PathBuf::from(path);
        }
        let mut command = tokio::process::Command::new(&exe);
        command.args(&self.args).stdin(std::process::Stdio::null());
        if let Some(env) = &self.env {
            command.env_clear().envs(env.iter().cloned());
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let status = command.status().await.map_err(|source| Error::Spawn {
            what: "`pgwarden start`".into(),
            program: exe.clone(),
            source,
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
