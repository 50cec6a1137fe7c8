//! `http.json` in the instance's state directory: the endpoint's address and connection figures
//! for `pgwarden doctor`, which reads them from the file rather than over HTTP, so that it can
//! report an endpoint whose connections are all taken.
//!
//! Written (atomically, mode 0600, like `status.json`) when the endpoint starts and then at
//! most once every [`WRITE_EVERY`] while its figures change.

use super::connections::{Counters, Figures};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const FILE: &str = "http.json";
const WRITE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The pgwarden that serves the endpoint (a record of another one is stale).
    pub supervisor_pid: u32,
    pub address: SocketAddr,
    /// pgwarden's open-file limit, from which the cap was derived.
    pub fd_limit: u64,
    pub figures: Figures,
    pub updated_at_ms: u64,
}

pub fn read(state_dir: &Path) -> Option<EndpointRecord> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write(path: &Path, record: &EndpointRecord) -> crate::error::Result<()> {
    crate::os::json_file::write(
        path,
        record,
        0o600,
        crate::os::json_file::Durability::Rename,
    )
}

/// Writes the record now, then whenever the figures changed, for the rest of the process.
pub async fn keep_written(
    state_dir: PathBuf,
    address: SocketAddr,
    fd_limit: u64,
    counters: Arc<Counters>,
) {
    let path = state_dir.join(FILE);
    let mut written: Option<Figures> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let figures = counters.figures();
        if written == Some(figures) {
            continue;
        }
        let record = EndpointRecord {
            supervisor_pid: std::process::id(),
            address,
            fd_limit,
            figures,
            updated_at_ms: crate::instance::status::now_ms(),
        };
        match write(&path, &record) {
            Ok(()) => {
                written = Some(figures);
                failing = false;
            }
            Err(e) => {
                // Said once per spell of failures; the next change tries again.
                if !failing {
                    tracing::warn!("cannot write the HTTP endpoint's record: {e}");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_record_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::new(64));
        let address: SocketAddr = "127.0.0.1:9187".parse().unwrap();
        let writer = tokio::spawn(keep_written(
            dir.path().to_path_buf(),
            address,
            256,
            counters,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let record = loop {
            if let Some(record) = read(dir.path()) {
                break record;
            }
            assert!(std::time::Instant::now() < deadline, "no record written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        writer.abort();
        assert_eq!(record.supervisor_pid, std::process::id());
        assert_eq!(record.address, address);
        assert_eq!(record.figures.cap, 64);
        assert_eq!(record.fd_limit, 256);
    }
}
