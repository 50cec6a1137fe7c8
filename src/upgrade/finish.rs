//! `pgwarden upgrade --finish`: the kept old cluster deleted; no rollback after this. The new
//! server runs on untouched.

use super::state::{self, Phase, Record};
use super::switch;
use crate::error::{Error, Result};
use std::path::Path;

/// Deletes the kept cluster of a complete upgrade; returns its record.
pub fn finish(state_dir: &Path) -> Result<Record> {
    let record = match state::read(state_dir)? {
        Some(record) if matches!(record.phase, Phase::Upgraded | Phase::Finishing) => record,
        Some(record) => {
            return Err(Error::UpgradeRefused {
                what: format!(
                    "the upgrade from {} to {} is not complete ({:?})\n\
                     help: `pgwarden start` completes or undoes it",
                    record.from, record.to, record.phase
                ),
            });
        }
        None => {
            return Err(Error::UpgradeRefused {
                what: "this instance has no upgrade to finish".to_string(),
            });
        }
    };
    let record = Record {
        phase: Phase::Finishing,
        ..record
    };
    state::write(state_dir, &record)?;
    switch::apply_finish(state_dir, &record)?;
    Ok(record)
}
