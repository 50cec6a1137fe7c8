//! `pgwarden upgrade --rollback`: the old cluster back as it was at the upgrade, the new one
//! (and every write made since) discarded. The verb stops the new server first and asks.

use super::state::{self, Mode, Phase, Record};
use super::switch;
use crate::error::{Error, Result};
use std::path::Path;

/// The upgrade a rollback would undo, or why there is none (checked before the server is
/// stopped).
pub fn check(state_dir: &Path) -> Result<Record> {
    let record = match state::read(state_dir)? {
        Some(record) if record.phase == Phase::Upgraded => record,
        Some(record) => {
            return Err(Error::UpgradeRefused {
                what: format!(
                    "the upgrade from {} to {} is not complete ({:?}): there is nothing to roll back yet\n\
                     help: `pgwarden start` completes or undoes it",
                    record.from, record.to, record.phase
                ),
            });
        }
        None => {
            return Err(Error::UpgradeRefused {
                what: "this instance has no upgrade to roll back (none was made, or it was \
                       finished or rolled back already)"
                    .to_string(),
            });
        }
    };
    if record.mode == Mode::Link {
        return Err(Error::UpgradeRefused {
            what: format!(
                "the upgrade from {} to {} was made with --link: the old cluster's files are the \
                 new one's, which PostgreSQL {} has written to since it started, so the old \
                 cluster cannot be put back\n\
                 help: restore a backup taken before the upgrade (`pgwarden restore FILE`); \
                 `pgwarden upgrade --finish` removes what is left of the old cluster",
                record.from, record.to, record.to
            ),
        });
    }
    Ok(record)
}

/// Puts the old cluster back (the server stopped, the instance lock held by the caller).
pub fn roll_back(state_dir: &Path, record: Record) -> Result<Record> {
    let record = Record {
        phase: Phase::RollingBack,
        ..record
    };
    state::write(state_dir, &record)?;
    super::test_kill_point("rollback-commit");
    switch::apply_rollback(state_dir, &record)?;
    Ok(record)
}
