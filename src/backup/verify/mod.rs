//! `pgwarden backup verify [FILE]` and the drill after a scheduled backup: a backup proven by
//! restoring it. PostgreSQL's manual says that even after `pg_verifybackup` "you should still
//! perform test restores"; this is that test restore, as a routine:
//!
//! 1. manifest — the archive's size and SHA-256 against its manifest, the major version
//!    ([`crate::backup::restore::verify`]);
//! 2. space — the restored cluster must fit, in memory (`/dev/shm`) with memory to spare, else
//!    in the temp directory; refused up front otherwise ([`scratch`]);
//! 3. restore — unpacked into a throwaway directory of its own, every file checked against the
//!    manifest as it is written ([`restore`]);
//! 4. replay — every WAL segment of the backup present, then a throwaway server (socket only,
//!    fsync off, small memory, no archiving, low priority) replays to the backup's end, or with
//!    `--to TIME` through the WAL archive to that time, and opens ([`replay`]);
//! 5. check — `amcheck` on every heap and B-tree index of every database ([`check`]).
//!
//! The running server is not touched: nothing connects to it, nothing is written to its data
//! directory or its WAL archive. The whole pipeline runs on a thread of its own at nice 19 and
//! idle I/O (inherited by the throwaway postmaster it forks). Each step is one function; a
//! failure is a [`Failed`] naming the step and each problem (every damaged relation), and the
//! last result goes to `<state dir>/verify.json` ([`record`]).

pub mod check;
pub mod record;
pub mod replay;
pub mod restore;
pub mod scratch;

use crate::backup::manifest::Manifest;
use crate::backup::restore::Recovery;
use crate::binaries::Install;
use crate::config::Config;
use crate::error::Error;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use check::Checked;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Manifest,
    Space,
    Restore,
    Replay,
    Check,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Manifest => "manifest",
            Step::Space => "space",
            Step::Restore => "restore",
            Step::Replay => "replay",
            Step::Check => "check",
        }
    }
}

/// What to verify, and with what.
#[derive(Debug, Clone)]
pub struct Request {
    pub archive: PathBuf,
    /// `--to TIME`: on through the WAL archive to that time.
    pub recovery: Option<Recovery>,
    /// The instance's settings (its `[server]` settings are the throwaway server's too).
    pub config: Config,
    pub install: Install,
    /// The server's user: the throwaway cluster is its, as the running one is.
    pub run_as: RunAs,
}

/// A sound backup.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    pub checked: Checked,
    pub elapsed: Duration,
}

/// A backup that failed a step.
#[derive(Debug, Clone)]
pub struct Failed {
    pub step: Step,
    /// Each damaged relation, or the step's error.
    pub problems: Vec<String>,
    pub checked: Option<Checked>,
    pub elapsed: Duration,
}

impl Failed {
    /// The error a user reads: the backup, the step, each problem, and what to do.
    pub fn to_error(&self, archive: &std::path::Path) -> Error {
        let help = match self.step {
            Step::Manifest | Step::Restore => {
                "help: this backup cannot be restored as it is; take a new one (`pgwarden backup`)"
            }
            Step::Space => "",
            Step::Replay => {
                "help: this backup (with --to, and the WAL archive up to that time) cannot be \
                 replayed to a consistent state; take a new backup (`pgwarden backup`) and keep \
                 this one for inspection"
            }
            Step::Check => {
                "help: the damage was in the files as they were copied: check the running server \
                 too (amcheck), repair it (REINDEX for an index), then take a new backup"
            }
        };
        let mut what = format!(
            "backup {} failed verification at the {} step:",
            archive.display(),
            self.step.name()
        );
        for problem in &self.problems {
            what.push_str("\n  ");
            what.push_str(&problem.replace('\n', "\n  "));
        }
        if !help.is_empty() && !what.contains("\nhelp:") && !what.contains("\n  help:") {
            what.push('\n');
            what.push_str(help);
        }
        Error::Backup { what }
    }
}

/// Runs the verification on a thread of its own at low priority (and waits for it): the
/// throwaway postmaster, forked from that thread, dies with it ([`Cancel`]'s parent-death
/// signal), also when pgwarden is killed.
pub fn run(request: Request) -> Result<Verified, Failed> {
    let started = Instant::now();
    let thread = std::thread::Builder::new()
        .name("backup verify".into())
        .spawn(move || {
            crate::os::background::lower_this_thread();
            steps(&request, started)
        });
    match thread {
        Ok(handle) => handle.join().unwrap_or_else(|_| {
            Err(Failed {
                step: Step::Check,
                problems: vec!["the verification thread panicked".into()],
                checked: None,
                elapsed: started.elapsed(),
            })
        }),
        Err(e) => Err(Failed {
            step: Step::Space,
            problems: vec![format!("cannot start the verification thread: {e}")],
            checked: None,
            elapsed: started.elapsed(),
        }),
    }
}

fn steps(request: &Request, started: Instant) -> Result<Verified, Failed> {
    let fail = |step: Step, problems: Vec<String>, checked: Option<Checked>| Failed {
        step,
        problems,
        checked,
        elapsed: started.elapsed(),
    };
    let at = |step: Step| move |e: Error| fail(step, vec![e.to_string()], None);

    let manifest = crate::backup::restore::verify(&request.archive).map_err(at(Step::Manifest))?;
    for swept in scratch::sweep() {
        tracing::info!(dir = %swept.display(), "removed what a killed verification left");
    }
    let need = scratch::need_for(manifest.total_bytes, manifest.wal_segment_size);
    let scratch = scratch::Scratch::create(need, &request.run_as).map_err(at(Step::Space))?;
    restore::restore(
        &request.archive,
        &manifest,
        &scratch,
        &request.run_as,
        request.recovery.as_ref(),
    )
    .map_err(at(Step::Restore))?;

    let missing = replay::missing_segments(&manifest);
    if !missing.is_empty() {
        return Err(fail(
            Step::Replay,
            missing
                .iter()
                .map(|name| {
                    format!(
                        "WAL segment {name} is missing from the backup (its WAL runs from {} to {}): \
                         the replay cannot reach the backup's end",
                        manifest.wal_first, manifest.wal_last
                    )
                })
                .collect(),
            None,
        ));
    }
    let cancel = Cancel::new();
    let server = replay::start(
        &request.config,
        &request.install,
        &request.run_as,
        &scratch,
        &cancel,
    )
    .map_err(at(Step::Replay))?;
    let checked = check::check(&server);
    // A throwaway: a failed stop only leaves what dropping the directory removes.
    if let Err(e) = server.stop() {
        tracing::debug!("the verification's server: {e}");
    }
    drop(scratch);
    let (checked, damage) = checked.map_err(at(Step::Check))?;
    if !damage.is_empty() {
        return Err(fail(
            Step::Check,
            damage.iter().map(ToString::to_string).collect(),
            Some(checked),
        ));
    }
    Ok(Verified {
        manifest,
        checked,
        elapsed: started.elapsed(),
    })
}

/// Records `outcome` of verifying `archive` in `<state dir>/verify.json`.
pub fn note(
    state_dir: &std::path::Path,
    archive: &std::path::Path,
    outcome: &Result<Verified, Failed>,
) {
    let record = match outcome {
        Ok(v) => record::VerifyRecord {
            finished_ms: crate::backup::now_ms(),
            backup: archive.to_path_buf(),
            ok: true,
            duration_ms: v.elapsed.as_millis() as u64,
            failed_step: None,
            failures: Vec::new(),
            checked: Some(v.checked.clone()),
        },
        Err(f) => record::VerifyRecord {
            finished_ms: crate::backup::now_ms(),
            backup: archive.to_path_buf(),
            ok: false,
            duration_ms: f.elapsed.as_millis() as u64,
            failed_step: Some(f.step.name().into()),
            failures: f.problems.clone(),
            checked: f.checked.clone(),
        },
    };
    record::write(state_dir, &record);
}

/// The line a sound backup prints: what was restored, replayed and checked.
pub fn summary(archive: &std::path::Path, v: &Verified, to: Option<&str>) -> String {
    let m = &v.manifest;
    let c = &v.checked;
    format!(
        "verified: {} (backup ended {}): restored {} ({} files, checked against the manifest), \
         replayed {}; checked {} databases ({}): {} tables with verify_heapam, {} B-tree indexes \
         with bt_index_check ({} with heapallindexed), {} of data; in {}",
        archive.display(),
        m.stop_time,
        crate::backup::human_bytes(m.total_bytes),
        m.files.len(),
        match to {
            Some(time) => format!("through the WAL archive to {time}"),
            None => format!("to the backup's end (LSN {})", m.stop_lsn),
        },
        c.databases.len(),
        c.databases.join(", "),
        c.tables,
        c.indexes,
        c.indexes_heapallindexed,
        crate::backup::human_bytes(c.bytes),
        format_args!("{:.1}s", v.elapsed.as_secs_f64())
    )
}
