//! `pgwarden run`: config → binaries → cluster → supervisor, in the foreground.

use crate::cli::RunArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::instance::InstanceLock;
use crate::notify::Notifier;
use crate::paths;
use crate::preflight;
use crate::privilege::RunAs;
use crate::server;
use crate::signals;
use crate::supervisor::Supervisor;
use tracing::warn;

pub async fn run(args: RunArgs) -> Result<()> {
    // First, so that a signal during install or initdb is kept and acted on afterwards.
    let events = signals::install().map_err(|e| Error::Server {
        what: format!("cannot install signal handlers: {e}"),
    })?;
    let sources = args.sources();
    let config = Config::load(&sources)?;
    let run_as = RunAs::resolve(config.run_as.as_deref())?;

    let state_dir = paths::state_dir(&config.data_dir);
    let _lock = InstanceLock::acquire(&state_dir, &config.data_dir)?;
    // A postmaster left running by a pgwarden that was killed: we hold the lock, so it is
    // nobody's. Shut it down cleanly and start our own (adopting it would leave a server we
    // cannot `wait` for, whose exit we could only poll).
    if let Some(pid) = server::survivor(&config.data_dir) {
        warn!(
            pid = pid.as_raw(),
            "a postgres from an earlier pgwarden still runs on this data directory; shutting it down first"
        );
        server::stop_survivor(pid, &config.data_dir, config.shutdown_timeout).await;
    }
    preflight::check_port_free(config.listen_address, config.port)?;

    Supervisor::new(
        sources,
        config,
        run_as,
        state_dir,
        events,
        Notifier::from_env(),
    )
    .run()
    .await
}
