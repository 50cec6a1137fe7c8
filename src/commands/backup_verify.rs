//! `pgwarden backup verify [FILE] [--to TIME]`: a backup proven by restoring it
//! ([`crate::backup::verify`]): the newest complete backup by default, the instance's
//! installation and server user, the result recorded for `status` and /metrics.

use crate::backup::{base, verify};
use crate::commands::backup::VerifyArgs;
use crate::commands::common::Instance;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// `pgwarden backup verify [FILE] [--to TIME]`.
pub async fn run(args: VerifyArgs, instance: Instance) -> Result<i32> {
    if let Some(time) = &args.to {
        crate::backup::wal_archive::parse_target(time)?;
    }
    let archive = match &args.file {
        Some(file) => crate::os::paths::absolute(file),
        None => newest_backup(&instance)?,
    };
    let recovery = match &args.to {
        None => None,
        Some(time) => {
            let manifest = crate::backup::manifest::Manifest::read_for(&archive)?;
            Some(crate::backup::wal_archive::recovery_for(
                &instance.config,
                time,
                &manifest,
            )?)
        }
    };
    let request = request_for(&instance, archive.clone(), recovery)?;
    let outcome = tokio::task::spawn_blocking(move || verify::run(request))
        .await
        .expect("the verify thread does not panic");
    verify::note(&instance.state_dir, &archive, &outcome);
    match outcome {
        Ok(verified) => {
            println!(
                "{}",
                verify::summary(&archive, &verified, args.to.as_deref())
            );
            Ok(0)
        }
        Err(failed) => Err(failed.to_error(&archive)),
    }
}

/// The data directory of the instance: the running server's, else the configured one.
fn data_dir_of(instance: &Instance) -> PathBuf {
    instance
        .status
        .as_ref()
        .map(|s| s.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone())
}

/// The newest complete backup in the backup directory.
fn newest_backup(instance: &Instance) -> Result<PathBuf> {
    let dir = instance
        .config
        .backup
        .dir
        .clone()
        .unwrap_or_else(|| base::default_dir(&data_dir_of(instance)));
    crate::backup::retention::list(&dir)
        .pop()
        .map(|(path, _)| path)
        .ok_or_else(|| Error::Backup {
            what: format!(
                "no complete backup (an archive with its manifest) in {}\n\
                 help: name one: `pgwarden backup verify FILE`, or take one: `pgwarden backup`",
                dir.display()
            ),
        })
}

/// What verifying `archive` for `instance` needs: its installation and the server's user.
pub fn request_for(
    instance: &Instance,
    archive: PathBuf,
    recovery: Option<crate::backup::restore::Recovery>,
) -> Result<verify::Request> {
    let config = &instance.config;
    let install = crate::binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    )?
    .ok_or_else(|| Error::Backup {
        what: format!(
            "no PostgreSQL {} installation in {} to restore the backup with\n\
             help: `pgwarden install` with the flags the server runs with, or name them here \
             (--config, --data-dir of the instance whose settings name it)",
            config.version,
            config.install_dir.display()
        ),
    })?;
    let run_as = crate::instance::server_user::server_user(
        config.run_as.as_deref(),
        &data_dir_of(instance),
        false,
        false,
    )?;
    Ok(verify::Request {
        archive,
        recovery,
        config: config.clone(),
        install,
        run_as,
    })
}
