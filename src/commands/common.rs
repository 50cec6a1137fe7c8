//! What the daily commands share: finding the instance a command addresses and whether (and
//! where) its supervisor runs.

use crate::cli::InstanceArgs;
use crate::config::{Config, Secret, Sources};
use crate::error::{Error, Result};
use crate::instance::lock;
use crate::instance::registry;
use crate::instance::remembered::{self, PasswordSource, Remembered};
use crate::instance::status::{self, Status};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One pgwarden instance as the configuration names it, and what is known of its supervisor.
#[derive(Debug)]
pub struct Instance {
    pub config: Config,
    pub state_dir: PathBuf,
    /// The pid holding the instance lock: `Some` exactly while a supervisor runs.
    pub supervisor: Option<u32>,
    /// The status file, if it was written by that running supervisor (not a stale one).
    pub status: Option<Status>,
    /// The settings the instance was last started with (while it runs: what it runs with).
    pub remembered: Option<Remembered>,
}

impl Instance {
    pub fn load(args: &InstanceArgs) -> Result<Instance> {
        Self::resolve(args.sources())
    }

    /// The one way a command decides which instance it addresses, with which settings: the
    /// command line's `sources` with the flags the instance was last started with
    /// ([`registry::with_remembered_flags`]), loaded and validated once, then located
    /// ([`registry::locate`]).
    pub fn resolve(sources: Sources) -> Result<Instance> {
        let sources = registry::with_remembered_flags(sources)?;
        Self::from_config(Config::load(&sources)?)
    }

    pub fn from_config(config: Config) -> Result<Instance> {
        // The registered instance of this name when no data dir was named (an ephemeral one,
        // or one started with other flags), else the configured data dir's.
        let state_dir = registry::locate(&config)?;
        Ok(Self::at(config, state_dir))
    }

    /// The instance whose state directory is `state_dir` (the one a background `run` was just
    /// started for: its name may have pointed elsewhere before, e.g. at a stopped instance).
    pub fn at(config: Config, state_dir: PathBuf) -> Instance {
        let mut instance = Instance {
            remembered: remembered::read(&state_dir),
            config,
            state_dir,
            supervisor: None,
            status: None,
        };
        instance.refresh();
        instance
    }

    /// Looks again at the lock and the status file.
    pub fn refresh(&mut self) {
        self.supervisor = lock::holder(&self.state_dir);
        // Read after the lock: a status file from before the current supervisor is ignored.
        self.status = self
            .supervisor
            .and_then(|pid| status::read(&self.state_dir).filter(|s| s.supervisor_pid == pid));
    }

    pub fn running(&self) -> bool {
        self.supervisor.is_some()
    }

    /// `Err(NotRunning)` unless a supervisor runs.
    pub fn require_running(&self) -> Result<u32> {
        self.supervisor.ok_or_else(|| self.not_running())
    }

    pub fn not_running(&self) -> Error {
        Error::NotRunning {
            data_dir: self.config.data_dir.clone(),
            hint: if self.config.config_file.is_some() {
                String::new()
            } else {
                " (or pass the --data-dir / --config it was started with)".to_string()
            },
        }
    }

    /// What the running instance runs with; `None` while it does not run.
    pub fn running_settings(&self) -> Option<&Remembered> {
        self.remembered.as_ref().filter(|_| self.running())
    }

    /// The address the server listens on: the running supervisor's, else the configured one.
    pub fn address(&self) -> SocketAddr {
        match (&self.status, self.running_settings()) {
            (Some(s), _) => SocketAddr::new(s.listen_address, s.port),
            (None, Some(r)) => SocketAddr::new(r.listen_address, r.port),
            (None, None) => SocketAddr::new(self.config.listen_address, self.config.port),
        }
    }

    pub fn user(&self) -> &str {
        match (&self.status, self.running_settings()) {
            (Some(s), _) => &s.user,
            (None, Some(r)) => &r.user,
            (None, None) => &self.config.user,
        }
    }

    pub fn database(&self) -> &str {
        match (&self.status, self.running_settings()) {
            (Some(s), _) => &s.database,
            (None, Some(r)) => &r.database,
            (None, None) => &self.config.database,
        }
    }

    /// The password the server's role has: read again from where the running instance got it
    /// (its file, its config key, the environment variable it named), else the configured one.
    /// A password this command's environment sets explicitly (`POSTGRES_PASSWORD[_FILE]`) wins.
    pub fn password(&self) -> Result<Secret> {
        let from_env = matches!(self.config.password_source, PasswordSource::Env { .. })
            || std::env::var_os("POSTGRES_PASSWORD_FILE").is_some_and(|v| !v.is_empty());
        match self.running_settings() {
            Some(r) if !from_env && r.password != self.config.password_source => {
                r.password.read(&|key| std::env::var(key).ok())
            }
            _ => Ok(self.config.password.clone()),
        }
    }

    /// The connection URL, with the password when `with_password`.
    pub fn url(&self, with_password: bool) -> Result<String> {
        let password = with_password.then(|| self.password()).transpose()?;
        Ok(crate::pg::connection::database_url(
            self.user(),
            password.as_ref().map(Secret::expose),
            self.address(),
            self.database(),
        ))
    }

    /// The instance flags a hint should repeat so that the user's next command reaches this
    /// instance too: `--name N`, `--data-dir D`, `--config F` as they were given.
    pub fn flags_hint(args: &InstanceArgs) -> String {
        let mut out = String::new();
        if let Some(name) = &args.name {
            out.push_str(&format!(" --name {name}"));
        }
        if let Some(dir) = &args.data_dir {
            out.push_str(&format!(" --data-dir {}", dir.display()));
        }
        if let Some(file) = &args.config {
            out.push_str(&format!(" --config {}", file.display()));
        }
        if args.system {
            out.push_str(" --system");
        }
        out
    }
}

/// "3d 4h", "5m 2s", "800 ms".
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Asks `question` on the terminal: `Some(true)` for `y`/`yes`, `Some(false)` for anything else,
/// `None` when stdin is no terminal to ask on (the caller then wants a `--yes`).
pub fn ask_yes_no(question: &str) -> Option<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Some(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_formats() {
        assert_eq!(human_duration(61_000), "1m 1s");
        assert_eq!(human_duration(12), "12 ms");
    }
}
