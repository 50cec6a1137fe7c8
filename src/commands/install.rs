//! `pgwarden install`: obtain and verify the binaries without running anything; `--list` shows
//! what the cache holds. In a project, the install follows (or writes) its `pgwarden.lock`.

use crate::binaries;
use crate::binaries::locked::Outcome;
use crate::commands::BinariesArgs;
use crate::commands::Globals;
use crate::config::Config;
use crate::error::Result;
use clap::Args;

#[derive(Debug, Clone, Default, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub binaries: BinariesArgs,

    /// List the installed versions instead of installing.
    #[arg(long, conflicts_with_all = ["archive", "mirror", "binaries", "npm_registry", "pypi_index", "sha256"])]
    pub list: bool,
}

pub async fn install(args: InstallArgs, globals: &Globals) -> Result<i32> {
    let config = Config::load(&globals.sources(args.binaries.sources()))?;
    if args.list {
        list(&config);
        return Ok(0);
    }
    let (install, outcome) = binaries::locked::ensure(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.lock,
        &config.install_policy,
    )
    .await?;
    println!(
        "installed: PostgreSQL {} in {}",
        install.version,
        install.dir.display()
    );
    match outcome {
        Outcome::Unlocked => {}
        Outcome::Verified { lock } => println!("verified against {}", lock.display()),
        Outcome::Written { lock, entry } => println!(
            "locked: PostgreSQL {} (sha256 {}, from {}) in {}",
            entry.version,
            entry.sha256,
            entry.source,
            lock.display()
        ),
    }
    Ok(0)
}

/// One line per installed version: `16.14.0  DIR  sha256 HEX  from ORIGIN: SOURCE[; server only…]`.
fn list(config: &Config) {
    let all = binaries::installed(&config.install_dir);
    if all.is_empty() {
        eprintln!(
            "no PostgreSQL installed in {} (pgwarden install installs one)",
            config.install_dir.display()
        );
    }
    for install in all {
        let record = binaries::record(&install);
        let sha = record
            .as_ref()
            .and_then(|r| r.sha256.clone())
            .unwrap_or_else(|| "-".into());
        println!(
            "{}  {}  sha256 {sha}  from {}",
            install.version,
            install.dir.display(),
            binaries::provenance(&install)
        );
    }
}
