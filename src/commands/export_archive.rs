//! `pgwarden export-archive FILE`: the installed binaries as a theseus-layout archive + `.sha256`.

use crate::binaries;
use crate::commands::BinariesArgs;
use crate::commands::Globals;
use crate::config::Config;
use crate::error::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Args)]
pub struct ExportArgs {
    /// The archive to write (FILE.sha256 is written beside it).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub binaries: BinariesArgs,
}

pub async fn export_archive(args: ExportArgs, globals: &Globals) -> Result<i32> {
    let config = Config::load(&globals.sources(args.binaries.sources()))?;
    let (install, _) = binaries::locked::ensure(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.lock,
        &config.install_policy,
    )
    .await?;
    let file = crate::os::paths::absolute(&args.file);
    let sha256 = {
        let (install, file) = (install.clone(), file.clone());
        tokio::task::spawn_blocking(move || binaries::export::export(&install, &file))
            .await
            .expect("export task panicked")?
    };
    println!(
        "exported: PostgreSQL {} to {} (sha256 {sha256}, also in {}.sha256)",
        install.version,
        file.display(),
        file.display()
    );
    Ok(0)
}
