//! `pgwarden run`: config → binaries → cluster → supervisor, in the foreground.

use crate::binaries;
use crate::cli::RunArgs;
use crate::cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::instance::InstanceLock;
use crate::paths;
use crate::preflight;
use crate::privilege::RunAs;
use crate::signals;
use crate::supervisor::Supervisor;

pub async fn run(args: RunArgs) -> Result<()> {
    // First, so that a signal during install or initdb is kept and acted on afterwards.
    let events = signals::install().map_err(|e| Error::Server {
        what: format!("cannot install signal handlers: {e}"),
    })?;
    let config = Config::load(&args.sources())?;
    let run_as = RunAs::resolve(config.run_as.as_deref())?;

    let state_dir = paths::state_dir(&config.data_dir);
    let _lock = InstanceLock::acquire(&state_dir, &config.data_dir)?;
    preflight::check_port_free(config.listen_address, config.port)?;

    let install = binaries::ensure(&config.source, &config.install_dir, &config.version).await?;
    run_as.check_traversable(&install.dir)?;

    let cluster = {
        let (config, install, run_as) = (config.clone(), install.clone(), run_as.clone());
        tokio::task::spawn_blocking(move || {
            cluster::prepare(&config, &install, &run_as, &state_dir)
        })
        .await
        .expect("cluster task panicked")?
    };

    Supervisor::new(config, install, cluster, run_as, events)
        .run()
        .await
}
