//! What the daily commands share: finding the instance a command addresses and whether (and
//! where) its supervisor runs.

use crate::cli::InstanceArgs;
use crate::config::{Config, percent_encode};
use crate::error::{Error, Result};
use crate::instance;
use crate::registry;
use crate::status::{self, Status};
use std::net::{IpAddr, SocketAddr};
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
}

impl Instance {
    pub fn load(args: &InstanceArgs) -> Result<Instance> {
        Self::from_config(Config::load(&args.sources())?)
    }

    pub fn from_config(config: Config) -> Result<Instance> {
        // The registered instance of this name when no data dir was named (an ephemeral one,
        // or one started with other flags), else the configured data dir's.
        let state_dir = registry::locate(&config);
        let mut instance = Instance {
            config,
            state_dir,
            supervisor: None,
            status: None,
        };
        instance.refresh();
        Ok(instance)
    }

    /// Looks again at the lock and the status file.
    pub fn refresh(&mut self) {
        self.supervisor = instance::holder(&self.state_dir);
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

    /// The address the server listens on: the running supervisor's, else the configured one.
    pub fn address(&self) -> SocketAddr {
        match &self.status {
            Some(s) => SocketAddr::new(s.listen_address, s.port),
            None => SocketAddr::new(self.config.listen_address, self.config.port),
        }
    }

    pub fn user(&self) -> &str {
        self.status.as_ref().map_or(&self.config.user, |s| &s.user)
    }

    pub fn database(&self) -> &str {
        self.status
            .as_ref()
            .map_or(&self.config.database, |s| &s.database)
    }

    /// The connection URL, with the configured password when `with_password`.
    pub fn url(&self, with_password: bool) -> String {
        let address = self.address();
        let password = if with_password {
            format!(":{}", percent_encode(self.config.password.expose()))
        } else {
            String::new()
        };
        format!(
            "postgres://{}{password}@{}/{}",
            percent_encode(self.user()),
            host_port(address.ip(), address.port()),
            percent_encode(self.database())
        )
    }
}

pub fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_formats() {
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
        assert_eq!(percent_encode("trader"), "trader");
        assert_eq!(host_port("::1".parse().unwrap(), 5), "[::1]:5");
        assert_eq!(human_duration(61_000), "1m 1s");
        assert_eq!(human_duration(12), "12 ms");
    }
}
