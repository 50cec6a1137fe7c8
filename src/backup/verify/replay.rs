//! Step 3: the restored cluster replayed and opened by a throwaway server.
//!
//! First, without starting anything, every WAL segment from the backup's first to its last
//! must be in the archive ([`missing_segments`]): a backup without one cannot reach a
//! consistent state, and PostgreSQL would only say "WAL ends before end of online backup".
//! Then a server is started on the throwaway cluster ([`settings`]): Unix socket only, in the
//! throwaway directory (0700, the server's user's), with a port of its own there; fsync off;
//! small memory; no archiving (the running server's WAL archive is never written); no
//! autovacuum; at low priority (the thread that forks it runs at nice 19 and idle I/O). It
//! finds `backup_label`, replays the backup's WAL to its end (with `--to TIME`, on through the
//! WAL archive to that time) and accepts connections only once consistent.

use super::scratch::Scratch;
use crate::backup::base::segment_number;
use crate::backup::manifest::Manifest;
use crate::binaries::Install;
use crate::config::Config;
use crate::error::Result;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use crate::postmaster::temp_server::{Purpose, TempServer};
use std::collections::BTreeMap;

/// The port in the throwaway socket directory (`.s.PGSQL.<port>`): the directory is the
/// verification's own, so no other server can be on it.
pub const PORT: u16 = 5432;

/// The WAL segments from the manifest's first to its last that are not among its files.
pub fn missing_segments(manifest: &Manifest) -> Vec<String> {
    let size = manifest.wal_segment_size.max(1);
    let (Some(first), Some(last)) = (
        segment_number(&manifest.wal_first, size),
        segment_number(&manifest.wal_last, size),
    ) else {
        return vec![format!("{}..{}", manifest.wal_first, manifest.wal_last)];
    };
    let timeline = &manifest.wal_first[..8];
    let per_id = 0x1_0000_0000 / size;
    (first..=last)
        .map(|n| format!("{timeline}{:08X}{:08X}", n / per_id, n % per_id))
        .filter(|name| {
            let path = format!("pg_wal/{name}");
            !manifest.files.iter().any(|f| f.path == path)
        })
        .collect()
}

/// The throwaway server's settings: the instance's `[server]` settings (the libraries it
/// preloads), then what makes it a throwaway.
pub fn settings(server: &BTreeMap<String, String>, scratch: &Scratch) -> BTreeMap<String, String> {
    let mut out = server.clone();
    out.remove("archive_command");
    out.remove("archive_library");
    // Commands a backup's postgresql.auto.conf may name are not run by the throwaway (with
    // --to, restore_command comes from pgwarden's own recovery settings, which stay).
    for key in ["archive_cleanup_command", "recovery_end_command"] {
        out.insert(key.to_string(), String::new());
    }
    let hba = scratch.root.join("pg_hba.conf");
    for (key, value) in [
        ("archive_mode", "off".to_string()),
        ("hba_file", hba.display().to_string()),
        ("ssl", "off".into()),
        ("shared_buffers", "64MB".into()),
        ("maintenance_work_mem", "64MB".into()),
        ("work_mem", "4MB".into()),
        ("max_connections", "10".into()),
        ("max_wal_senders", "0".into()),
        ("max_replication_slots", "0".into()),
        ("autovacuum", "off".into()),
        ("synchronous_commit", "off".into()),
        ("full_page_writes", "off".into()),
        ("max_parallel_workers_per_gather", "0".into()),
        ("jit", "off".into()),
        ("log_min_messages", "warning".into()),
    ] {
        out.insert(key.to_string(), value);
    }
    out
}

/// `pg_hba.conf` of the throwaway server: the socket only, whose directory only the server's
/// user (and root) can enter.
fn write_hba(scratch: &Scratch, run_as: &RunAs) -> Result<()> {
    use crate::error::IoContext;
    let path = scratch.root.join("pg_hba.conf");
    std::fs::write(
        &path,
        "# pgwarden backup verify: a throwaway server; its socket directory is 0700\nlocal all all trust\n",
    )
    .io("cannot write", &path)?;
    if run_as.switch {
        let _ = nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid));
    }
    Ok(())
}

/// Starts the throwaway server on the restored cluster; returns once it accepts connections
/// (the replay is done, and with `--to` the promotion).
pub fn start(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    scratch: &Scratch,
    cancel: &Cancel,
) -> Result<TempServer> {
    write_hba(scratch, run_as)?;
    let mut config = config.clone();
    config.port = PORT;
    config.server = settings(&config.server, scratch);
    let mut server = TempServer::start_for(
        Purpose::VERIFICATION,
        &config,
        install,
        run_as,
        &scratch.data_dir(),
        &scratch.socket_dir(),
        cancel,
    )?;
    // With --to, the recovery goes on after the pid file says ready (hot_standby is off).
    server.wait_accepting(crate::config::ADMIN_ROLE, "template1")?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{ArchiveSum, FileSum};

    fn manifest(first: &str, last: &str, wal: &[&str]) -> Manifest {
        Manifest {
            format: 1,
            created_by: String::new(),
            label: String::new(),
            postgresql_major: "16".into(),
            system_identifier: String::new(),
            timeline: 1,
            start_lsn: String::new(),
            stop_lsn: String::new(),
            start_ms: 0,
            stop_ms: 0,
            start_time: String::new(),
            stop_time: String::new(),
            wal_first: first.into(),
            wal_last: last.into(),
            archive: ArchiveSum {
                name: String::new(),
                size: 0,
                sha256: String::new(),
            },
            files: wal
                .iter()
                .map(|w| FileSum {
                    path: format!("pg_wal/{w}"),
                    size: 0,
                    sha256: String::new(),
                })
                .collect(),
            total_bytes: 0,
            wal_segment_size: 16 << 20,
            tablespaces: vec![],
        }
    }

    #[test]
    fn a_segment_missing_between_first_and_last_is_named() {
        let m = manifest(
            "0000000100000000000000FF",
            "000000010000000100000001",
            &["0000000100000000000000FF", "000000010000000100000001"],
        );
        assert_eq!(missing_segments(&m), vec!["000000010000000100000000"]);
        let whole = manifest(
            "000000010000000000000002",
            "000000010000000000000003",
            &["000000010000000000000002", "000000010000000000000003"],
        );
        assert!(missing_segments(&whole).is_empty());
    }
}
