//! `pgwarden run`: config → binaries → cluster → supervisor, in the foreground.

use crate::cluster;
use crate::commands::RunArgs;
use crate::config::Config;
use crate::config::image_env;
use crate::error::{Error, Result};
use crate::instance::launch::Launch;
use crate::instance::preflight;
use crate::instance::resolve::Resolved;
use crate::instance::server_user::server_user;
use crate::observe::{self, Observer};
use crate::supervisor::Supervisor;
use crate::supervisor::notify::Notifier;
use crate::supervisor::server;
use crate::supervisor::signals;
use tracing::{info, warn};

/// Runs the server of the instance `resolved`, resolved once by `main` (before logging starts:
/// the log file lives in the instance's state directory); SIGHUP loads its sources again.
pub async fn run(args: RunArgs, resolved: Resolved) -> Result<()> {
    // First, so that a signal during install or initdb is kept and acted on afterwards.
    let events = signals::install().map_err(|e| Error::Server {
        what: format!("cannot install signal handlers: {e}"),
    })?;
    serve(&args, resolved, events, None).await
}

/// Claims and supervises the instance `resolved` until `controls` asks it to stop: the body of
/// `run`, whose controls are its signals, and of `exec --ephemeral`, which runs it inside its
/// own process (its controls: CMD's end and Ctrl-C) and is handed the `ready:` line through
/// `first_ready` instead of stdout. The throwaway root is removed before this returns.
pub async fn serve(
    args: &RunArgs,
    resolved: Resolved,
    events: tokio::sync::mpsc::UnboundedReceiver<signals::Control>,
    first_ready: Option<tokio::sync::oneshot::Sender<String>>,
) -> Result<()> {
    // Room for the supervisor's own descriptors beside the HTTP endpoint's bounded share.
    let fds = crate::os::fd_limit::raise();
    if let Some(from) = fds.raised_from {
        info!(
            from,
            to = fds.soft,
            "raised the open-file limit to its hard limit"
        );
    }
    let config = &resolved.config;
    if let Some(warning) = image_env::trust_warning(&config.host_auth_method) {
        warn!(listen_address = %config.listen_address, "{warning}");
    }
    // Before anything is created (a user, the state dir): an installation another user could
    // have written to.
    crate::binaries::check_trust(&config.source, &config.install_dir)?;
    crate::binaries::locked::check(&config.source, &config.version, &config.lock)?;
    let run_as = server_user(
        config.run_as.as_deref(),
        &config.data_dir,
        config.ephemeral,
        args.create_user,
    )?;

    // A cluster to take over is refused (exit 2) before anything is created.
    cluster::take_over::check_source(config)?;
    // The state directory, the instance lock, the name, and a throwaway root removed on every
    // way out of this function.
    let claim = resolved.claim()?;
    let state_dir = claim.state_dir.clone();
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
    // An upgrade a killed pgwarden left half done is completed or undone first; when that
    // changed the version the instance runs, its settings are loaded again.
    let recovered = crate::upgrade::switch::recover(&state_dir).await?;
    let resolved = if recovered.changed_version() {
        crate::instance::resolve::resolve(resolved.sources.clone())?
    } else {
        resolved
    };
    let config = &resolved.config;
    // What killed execs and sweepers left: swept beside the server's start, not before it.
    let sweep = claim
        .is_throwaway()
        .then(|| tokio::task::spawn_blocking(crate::instance::abandoned::sweep_throwaway_roots));
    if claim.is_throwaway() {
        prepare_throwaway(config)?;
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
    let mut remembered = crate::instance::remembered::Remembered::of(config, &resolved.sources);
    remembered.port = launch.port;
    crate::instance::remembered::write(&state_dir, &remembered)?;
    let (observer, watchers) = Observer::new();
    if let Some(address) = config.http_address {
        observe::serve(address, watchers, state_dir.clone(), fds.soft).await?;
    }

    let Resolved {
        sources, config, ..
    } = resolved;
    let project = sources.project.clone();
    let refills_pool = config.ephemeral && config.ephemeral_pool > 0;
    let supervisor = Supervisor::new(
        sources,
        config,
        launch,
        run_as,
        state_dir,
        events,
        Notifier::from_env(),
    )
    .observed(observer);
    // A throwaway server refills the pool of throwaway clusters by a maker that outlives it,
    // given these very settings (the project chosen the same way, its trust rule included).
    let supervisor = if refills_pool {
        let globals = crate::commands::Globals {
            log_format: crate::commands::LogFormat::Text,
            project,
        };
        let mut line = args.command_line(cluster::spare::maker::VERB, &globals);
        line.push(format!("--after-exit-of={}", std::process::id()).into());
        supervisor.with_pool_maker(line)
    } else {
        supervisor
    };
    let supervisor = match first_ready {
        Some(ready) => supervisor.on_first_ready(ready),
        None => supervisor,
    };
    let result = supervisor.run().await;
    if let Some(sweep) = sweep {
        let _ = sweep.await;
    }
    // Released here, after the server is gone: the throwaway root is removed first.
    drop(claim);
    result
}

/// Sweeps what a killed earlier run of this throwaway instance left (its durability settings
/// are added by [`crate::instance::launch::effective`]).
fn prepare_throwaway(config: &Config) -> Result<()> {
    if config.data_dir.exists() {
        warn!(data_dir = %config.data_dir.display(), "removing a throwaway cluster left by an earlier run");
        crate::postmaster::leftover_shmem::release(&config.data_dir);
        std::fs::remove_dir_all(&config.data_dir).map_err(|e| Error::Cluster {
            what: format!("cannot remove {}: {e}", config.data_dir.display()),
        })?;
    }
    warn!(
        data_dir = %config.data_dir.display(),
        "ephemeral cluster: fsync, synchronous_commit and full_page_writes are off, shared_buffers 16MB, \
         dynamic shared memory in the cluster (mmap); \
         it is removed when pgwarden exits — for throwaway data only"
    );
    Ok(())
}
