//! `pgwarden run`: config → binaries → cluster → supervisor, in the foreground.

use crate::cli::RunArgs;
use crate::cluster;
use crate::config::Config;
use crate::config::image_env;
use crate::error::{Error, Result};
use crate::instance::launch::Launch;
use crate::instance::lock::InstanceLock;
use crate::instance::preflight;
use crate::instance::registry;
use crate::observe::{self, Observer};
use crate::os::paths;
use crate::os::privilege::RunAs;
use crate::supervisor::Supervisor;
use crate::supervisor::notify::Notifier;
use crate::supervisor::server;
use crate::supervisor::signals;
use std::path::PathBuf;
use tracing::{info, warn};

/// Runs the server with `config`, loaded once from `args.sources()` by `main` (before logging
/// starts: the log file lives in the instance's state directory); SIGHUP loads it again.
pub async fn run(args: RunArgs, config: Config) -> Result<()> {
    // First, so that a signal during install or initdb is kept and acted on afterwards.
    let events = signals::install().map_err(|e| Error::Server {
        what: format!("cannot install signal handlers: {e}"),
    })?;
    // Room for the supervisor's own descriptors beside the HTTP endpoint's bounded share.
    let fds = crate::os::fd_limit::raise();
    if let Some(from) = fds.raised_from {
        info!(
            from,
            to = fds.soft,
            "raised the open-file limit to its hard limit"
        );
    }
    // The same sources `main` loaded `config` from: with the remembered flags.
    let sources = crate::instance::registry::with_remembered_flags(args.sources())?;
    let mut config = config;
    if let Some(warning) = image_env::trust_warning(&config.host_auth_method) {
        warn!(listen_address = %config.listen_address, "{warning}");
    }
    // Before anything is created (a user, the state dir): an installation another user could
    // have written to.
    crate::binaries::check_source(&config.source)?;
    crate::binaries::locked::check(&config.source, &config.version, &config.lock)?;
    let run_as = if args.create_user {
        RunAs::resolve_or_create(config.run_as.as_deref())?
    } else {
        RunAs::resolve(config.run_as.as_deref())?
    };

    let state_dir = registry::adopt(&mut config)?;
    crate::instance::private_dir::prepare_state_dir(&config)?;
    let _lock = InstanceLock::acquire(&state_dir, &config.data_dir)?;
    // The name next: refused while it runs with another data directory.
    let _registration = registry::register(&config, &state_dir)?;
    // Only once the lock is ours: removes a throwaway cluster on every way out of this function
    // (dropped before the lock is released).
    let _throwaway = config.ephemeral.then(|| Throwaway::new(&config));
    // A postmaster left running by a pgwarden that was killed: we hold the lock, so it is
    // nobody's. Shut it down cleanly and start our own (adopting it would leave a server we
    // cannot `wait` for, whose exit we could only poll).
    // The same for the temporary server of a first launch that was killed, which works in the
    // staging directory of the half-made cluster the next step clears.
    for dir in [
        config.data_dir.clone(),
        config.data_dir.join(cluster::STAGING),
    ] {
        if let Some(pid) = server::survivor(&dir) {
            warn!(
                pid = pid.as_raw(),
                dir = %dir.display(),
                "a postgres from an earlier pgwarden still runs on this data directory; shutting it down first"
            );
            server::stop_survivor(pid, &dir, config.shutdown_timeout).await;
        }
    }
    if config.ephemeral {
        prepare_throwaway(&config)?;
    }
    preflight::check_port_unprivileged(config.port, &run_as.name)?;
    let launch = if config.port == 0 {
        let port = preflight::choose_free_port(config.listen_address)?;
        info!(port, "picked a free port");
        Launch { port }
    } else {
        preflight::check_port_free(config.listen_address, config.port)?;
        Launch { port: config.port }
    };
    let mut remembered = crate::instance::remembered::Remembered::of(&config, &sources);
    remembered.port = launch.port;
    crate::instance::remembered::write(&state_dir, &remembered)?;
    let (observer, watchers) = Observer::new();
    if let Some(address) = config.http_address {
        observe::serve(address, watchers, state_dir.clone(), fds.soft).await?;
    }

    Supervisor::new(
        sources,
        config,
        launch,
        run_as,
        state_dir,
        events,
        Notifier::from_env(),
    )
    .observed(observer)
    .run()
    .await
}

/// Sweeps what a killed earlier run of this throwaway instance left (its durability settings
/// are added by [`crate::instance::launch::effective`]).
fn prepare_throwaway(config: &Config) -> Result<()> {
    if config.data_dir.exists() {
        warn!(data_dir = %config.data_dir.display(), "removing a throwaway cluster left by an earlier run");
        std::fs::remove_dir_all(&config.data_dir).map_err(|e| Error::Cluster {
            what: format!("cannot remove {}: {e}", config.data_dir.display()),
        })?;
    }
    warn!(
        data_dir = %config.data_dir.display(),
        "ephemeral cluster: fsync, synchronous_commit and full_page_writes are off; \
         it is removed when pgwarden exits — for throwaway data only"
    );
    Ok(())
}

/// The directory of a throwaway cluster, removed on drop.
struct Throwaway(PathBuf);

impl Throwaway {
    fn new(config: &Config) -> Throwaway {
        Throwaway(paths::ephemeral_root(&config.name))
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Err(e) = crate::instance::private_dir::remove_throwaway(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %self.0.display(), "cannot remove the throwaway cluster: {e}");
        }
    }
}
