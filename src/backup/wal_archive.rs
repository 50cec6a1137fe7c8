//! The continuous WAL archive (opt-in `wal_archive = DIR`).

use super::restore::Recovery;
use crate::config::Config;
use crate::error::{Error, Result};

/// The recovery settings for `restore --to TIME`.
pub fn recovery_for(_config: &Config, _time: &str) -> Result<Recovery> {
    Err(Error::Backup {
        what: "restore --to needs a WAL archive (wal_archive), which this pgwarden does not support yet".into(),
    })
}
