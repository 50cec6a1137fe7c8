//! `pgwarden backup [FILE|DIR]`: an online base backup of the running cluster
//! ([`crate::backup::base`]), recorded in `<state dir>/backup.json` for `status`. With
//! `--scheduled` (the backup timer) and `backup_verify` on, the drill follows: the new backup
//! verified ([`crate::backup::verify`]), a failure a WARN line and exit 1 (the backup is kept).
//! `pgwarden backup verify [FILE]`: [`verify`].

use crate::backup::{base, human_bytes, now_ms, record, verify};
use crate::cli::Globals;
pub use crate::cli::backup::{BackupArgs, BackupCommand, VerifyArgs};
use crate::commands::common::{Instance, human_duration};
use crate::error::{Error, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

pub async fn run(args: BackupArgs, globals: &Globals) -> Result<i32> {
    if let Some(BackupCommand::Verify(verify_args)) = args.command {
        return verify(verify_args, globals).await;
    }
    let instance = Instance::load(globals, &args.instance)?;
    instance.require_running()?;
    let status = instance.status.clone().ok_or_else(|| Error::Backup {
        what: "the running pgwarden has written no status yet; wait until it is ready (`pgwarden wait`)".into(),
    })?;
    if status.state != crate::instance::status::State::Ready {
        return Err(Error::Backup {
            what: format!(
                "the server is {} ({}), not ready; a backup needs a running server\nhelp: `pgwarden wait`, then try again",
                status.state, status.cause
            ),
        });
    }
    let server = base::Server {
        data_dir: status.data_dir.clone(),
        socket_dir: status.socket_dir.clone(),
        port: status.port,
    };
    let backup_dir = instance
        .config
        .backup
        .dir
        .clone()
        .unwrap_or_else(|| base::default_dir(&server.data_dir));
    let target = base::resolve_target(args.target.as_deref(), &backup_dir, now_ms())?;
    let into_backup_dir = target.parent() == Some(backup_dir.as_path());
    let progress = std::io::stderr().is_terminal();
    let outcome = tokio::task::spawn_blocking(move || base::take(&server, &target, progress))
        .await
        .expect("the backup thread does not panic");
    match outcome {
        Ok(done) => {
            let m = &done.manifest;
            let secs = done.elapsed.as_secs_f64().max(0.001);
            record::note(
                &instance.state_dir,
                Ok(record::SuccessfulBackup {
                    archive: done.archive.clone(),
                    size: m.archive.size,
                    finished_ms: m.stop_ms,
                    duration_ms: done.elapsed.as_millis() as u64,
                    stop_lsn: m.stop_lsn.clone(),
                }),
            );
            println!(
                "backup: {} ({} from {}, {} files, LSN {}..{}, ended {}, {}, {}/s)",
                done.archive.display(),
                human_bytes(m.archive.size),
                human_bytes(m.total_bytes),
                m.files.len(),
                m.start_lsn,
                m.stop_lsn,
                m.stop_time,
                human_duration(done.elapsed.as_millis() as u64),
                human_bytes((m.total_bytes as f64 / secs) as u64)
            );
            if into_backup_dir {
                let keep = instance.config.backup.keep;
                let wal = instance.config.backup.wal_archive.clone();
                let pruned = crate::backup::retention::prune(&backup_dir, keep, wal.as_deref())?;
                if !pruned.backups.is_empty() || pruned.wal_segments > 0 {
                    eprintln!(
                        "retention (backup_keep = {keep}): removed {} old backup(s), {} archived WAL segment(s)",
                        pruned.backups.len(),
                        pruned.wal_segments
                    );
                }
            }
            if args.scheduled && instance.config.backup.verify {
                return drill(&instance, done.archive).await;
            }
            Ok(0)
        }
        Err(e) => {
            record::note(&instance.state_dir, Err(e.to_string()));
            Err(e)
        }
    }
}

/// The drill after a scheduled backup: the backup verified and the result recorded; a failure
/// is a WARN line and exit 1 (the backup stays, recorded as taken: the server is fine, its
/// backup is not).
async fn drill(instance: &Instance, archive: PathBuf) -> Result<i32> {
    let request = request_for(instance, archive.clone(), None)?;
    let outcome = tokio::task::spawn_blocking(move || verify::run(request))
        .await
        .expect("the verify thread does not panic");
    verify::note(&instance.state_dir, &archive, &outcome);
    match outcome {
        Ok(verified) => {
            println!("{}", verify::summary(&archive, &verified, None));
            Ok(0)
        }
        Err(failed) => {
            tracing::warn!("backup drill failed: {}", failed.to_error(&archive));
            Ok(1)
        }
    }
}

/// `pgwarden backup verify [FILE] [--to TIME]`.
async fn verify(args: VerifyArgs, globals: &Globals) -> Result<i32> {
    let instance = Instance::load(globals, &args.instance)?;
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
fn request_for(
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
