//! What a command that only reads sees of an instance: the lock's holder (whether a
//! supervisor runs), its status record and the settings it was started with
//! ([`crate::instance::resolve::Resolved::observe`]).

use crate::config::{Config, Secret};
use crate::error::{Error, Result};
use crate::instance::lock;
use crate::instance::remembered::{self, Remembered};
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
    /// A password this command's environment sets explicitly (`POSTGRES_PASSWORD[_FILE]`) wins
    /// (the configuration says so: [`Config::password_from_env`]), so a running instance's
    /// `$POSTGRES_PASSWORD` is one this environment does not have: it reads as unset.
    pub fn password(&self) -> Result<Secret> {
        match self.running_settings() {
            Some(r)
                if !self.config.password_from_env && r.password != self.config.password_source =>
            {
                r.password.read(&|_| None)
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
}
