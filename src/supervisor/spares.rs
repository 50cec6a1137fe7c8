//! What the supervisor prepares in the background once its server is ready, after the
//! template fill and on its thread (nice 19, idle I/O, cancelled by a stop): the spare
//! clusters ([`crate::cluster::spare`]) — the reset spare, then one per snapshot. With
//! `spare = false` it removes the ones there are instead. An `--ephemeral` server starts the
//! detached maker of one entry of the pool of throwaway clusters instead
//! ([`crate::cluster::spare::maker`]), which a stop does not cancel.

use crate::backup::snapshot_spare;
use crate::binaries::Install;
use crate::cluster::spare::{self, Made};
use crate::config::Config;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{debug, info, warn};

/// The detached maker of an `--ephemeral` server's pool entry ([`spare::maker`]): its command
/// line, started at most once per server — by the background thread once the server is
/// ready, or else when the server stops (a stop cancels that thread, and an `exec --ephemeral`
/// whose CMD is short stops before the thread's turn at nice 19).
#[derive(Debug, Clone)]
pub struct PoolMaker {
    line: Vec<OsString>,
    started: Arc<AtomicBool>,
}

impl PoolMaker {
    pub fn new(line: Vec<OsString>) -> Self {
        Self {
            line,
            started: Arc::default(),
        }
    }

    /// Starts the maker of an entry for `template` unless it was started already or the pool
    /// is full or being filled (then the next call looks again). Not cancelled by a stop: the
    /// maker outlives the server.
    pub fn start(&self, config: &Config, template: &Path) {
        if self.started.load(Ordering::SeqCst) {
            return;
        }
        if !spare::pool::wants_entry(template, config.ephemeral_pool) {
            debug!("no pool maker needed: the pool is full or being filled");
        } else if !self.started.swap(true, Ordering::SeqCst) {
            spare::maker::spawn(&self.line)
        }
    }
}

/// Prepares (or, with spares off, removes) the spares of `config`'s data directory;
/// `template` is the reset spare's source ([`crate::cluster::Cluster::spare_template`]);
/// `pool_maker` the command line of an `--ephemeral` server's pool maker (without one, the
/// entry is made here, cancelled by a stop).
pub fn prepare(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    template: Option<&Path>,
    pool_maker: Option<&PoolMaker>,
    cancel: &Cancel,
) {
    let data_dir = &config.data_dir;
    if config.ephemeral {
        // One entry of the pool of throwaway clusters (none when the pool is off).
        if let Some(template) = template {
            match pool_maker {
                Some(maker) => maker.start(config, template),
                None => {
                    let made = spare::pool::prepare(
                        template,
                        install,
                        run_as,
                        config.ephemeral_pool,
                        cancel,
                    );
                    spare::pool::log(made, cancel);
                }
            }
        }
        return;
    }
    if !config.spare {
        let _ = spare::discard(&spare::reset::path(data_dir));
        snapshot_spare::remove_all(data_dir);
        debug!("spares are off (spare = false): none kept");
        return;
    }
    if let Some(template) = template {
        let started = std::time::Instant::now();
        match spare::reset::prepare(data_dir, template, install, run_as, cancel) {
            Ok(Made::Made(bytes)) => info!(
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "spare cluster ready: after `pgwarden reset`, `start` renames it into place (no copy)"
            ),
            Ok(Made::AlreadyThere) => debug!("the spare cluster is ready"),
            Ok(Made::Skipped(why)) => {
                info!("no spare cluster (a reset + start copies the template): {why}")
            }
            Err(_) if cancel.is_cancelled() => debug!("spare cluster cancelled"),
            Err(e) => warn!(
                "cannot make a spare cluster in the background (a reset + start copies the template): {e}"
            ),
        }
    }
    if !cancel.is_cancelled() {
        snapshot_spare::prepare(data_dir, run_as, config.spare_max_mb, cancel);
    }
}
