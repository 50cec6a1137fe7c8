//! `pgwarden pool-fill` (hidden): the detached maker of one entry of the pool of throwaway
//! clusters ([`crate::cluster::spare::maker`]), started by an `--ephemeral` server once it is
//! ready, with that server's own flags ([`RunArgs::command_line`]).
//!
//! An input surface like `run`: anyone can type it, so it resolves its settings the same way
//! and refuses what `run` refuses before it reads anything — an installation or install
//! directory another user could have written to, a lock file it disagrees with, settings that
//! are not a throwaway server's. It installs nothing, creates no user and runs none of the
//! installation's programs: it copies the template, owned by the server's user, into the
//! pool ([`pool::prepare`]) until it holds `ephemeral_pool` entries. A SIGTERM cancels the copy (its working directory removed).

use crate::binaries;
use crate::cluster;
use crate::cluster::spare::{Made, pool};
use crate::commands::RunArgs;
use crate::error::{Error, Result};
use crate::instance::resolve::Resolved;
use crate::instance::server_user::server_user;
use crate::os::cancel::Cancel;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Args)]
pub struct PoolFillArgs {
    /// The settings of the throwaway server whose pool this fills.
    #[command(flatten)]
    pub run: RunArgs,

    /// Wait (at most a second) for this process to exit before copying: the supervisor that
    /// started the maker, whose own command (a short `exec --ephemeral`, a stop) the copy
    /// would otherwise slow down.
    #[arg(long, value_name = "PID", hide = true)]
    pub after_exit_of: Option<u32>,
}

/// How long a maker waits for its starter's exit ([`PoolFillArgs::after_exit_of`]) before it
/// copies anyway (a server that keeps running wants its entry too).
const AFTER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `resolved`: the instance of `args.run`. Exit 0 whether an entry was made or there was
/// nothing to do (the pool full, another maker at it); 2 for refused settings.
pub async fn run(args: PoolFillArgs, resolved: Resolved) -> Result<i32> {
    if args.after_exit_of.is_some() {
        // Started by a server, idle already: out of that server's process group and session.
        crate::os::background::enter_idle_session();
    }
    let config = resolved.config;
    refuse_unless_throwaway(config.ephemeral)?;
    // The trust rules of `run`, before anything is read from the installation.
    binaries::check_trust(&config.source, &config.install_dir)?;
    binaries::locked::check(&config.source, &config.version, &config.lock)?;
    if config.ephemeral_pool == 0 {
        tracing::debug!("the pool of throwaway clusters is off (ephemeral_pool = 0)");
        return Ok(0);
    }
    let run_as = server_user(config.run_as.as_deref(), &config.data_dir, true, false)?;
    let Some(install) = binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    )?
    else {
        tracing::info!("no installation for these settings yet: no pool entry to make");
        return Ok(0);
    };
    let Some(template) = cluster::template_of(&config, &install, &run_as)? else {
        tracing::info!("these settings' clusters are not copies of a template: no pool entry");
        return Ok(0);
    };
    if let Some(pidfd) = args.after_exit_of.and_then(crate::os::pidfd::PidFd::open) {
        let _ = tokio::task::spawn_blocking(move || pidfd.wait(AFTER_EXIT_WAIT)).await;
    }
    let cancel = Cancel::new();
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Error::Server {
        what: format!("cannot install the SIGTERM handler: {e}"),
    })?;
    let size = config.ephemeral_pool;
    let maker = {
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || fill(&template, &install, &run_as, size, &cancel))
    };
    tokio::pin!(maker);
    let made = tokio::select! {
        made = &mut maker => made,
        _ = terminate.recv() => {
            cancel.cancel();
            maker.await
        }
    }
    .map_err(|e| Error::Server {
        what: format!("the pool maker failed: {e}"),
    })?;
    pool::log(made, &cancel);
    Ok(0)
}

/// Makes entries until the pool holds `size` of these settings (each [`pool::prepare`] counts
/// again: a start may have taken one meanwhile), at most `size`; the last outcome.
fn fill(
    template: &std::path::Path,
    install: &crate::binaries::Install,
    run_as: &crate::os::privilege::RunAs,
    size: u32,
    cancel: &Cancel,
) -> Result<Made> {
    let mut made = pool::prepare(template, install, run_as, size, cancel);
    for _ in 1..size {
        if !matches!(made, Ok(Made::Made(_))) || cancel.is_cancelled() {
            break;
        }
        made = pool::prepare(template, install, run_as, size, cancel);
    }
    made
}

/// The pool holds throwaway clusters only: a maker for a kept cluster's settings is refused.
fn refuse_unless_throwaway(ephemeral: bool) -> Result<()> {
    if ephemeral {
        return Ok(());
    }
    Err(Error::Config {
        problems: vec![
            "pool-fill makes throwaway clusters only: its settings need --ephemeral\n\
             help: pool-fill is started by `start --ephemeral` and `exec --ephemeral`; \
             there is no need to run it yourself"
                .into(),
        ],
    })
}
