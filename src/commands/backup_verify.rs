//! `pgwarden backup verify [FILE] [--to TIME]`: a backup proven by restoring it
//! ([`crate::backup::verify`]): the newest complete backup by default, the instance's
//! installation and server user, the result recorded for `status` and /metrics.

use crate::backup::{base, verify};
use crate::commands::common::Instance;
use crate::commands::{Globals, InstanceArgs};
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The backup (.tar.zst, its manifest beside it) [default: the newest complete backup in
    /// backup_dir, else <data dir>.backups/].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Replay on through the WAL archive (wal_archive) to this time, as `restore --to` does.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

impl VerifyArgs {
    /// This command as a command line (after the program), from its parsed flags.
    fn command_line(&self, globals: &Globals) -> Vec<std::ffi::OsString> {
        let mut out = globals.command_line();
        out.extend(["backup".into(), "verify".into()]);
        out.extend(self.instance.command_line());
        if let Some(to) = &self.to {
            out.push(format!("--to={to}").into());
        }
        if let Some(file) = &self.file {
            // After `--`: a file named like a flag stays a file.
            out.push("--".into());
            out.push(crate::os::paths::absolute(file).into());
        }
        out
    }
}

/// `pgwarden backup verify [FILE] [--to TIME]`.
pub async fn run(args: VerifyArgs, instance: Instance, globals: &Globals) -> Result<i32> {
    // The whole verification (the unpack here, the throwaway server's checks) beside the
    // running server without taking its cores: this command again, in an idle session, paused
    // while the running server is busy.
    let server = instance
        .status
        .as_ref()
        .and_then(|s| s.postmaster_pid)
        .filter(|_| instance.running())
        .map(|pid| pid as u32);
    if let Some(code) =
        crate::os::background::again_in_idle_session(args.command_line(globals), server)
    {
        return Ok(code);
    }
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
    let newest = crate::backup::retention::list(&dir).pop();
    if let Some((archive, _)) = &newest {
        found_backup_is_ours(archive)?;
    }
    newest.map(|(path, _)| path).ok_or_else(|| Error::Backup {
        what: format!(
            "no complete backup (an archive with its manifest) in {}\n\
                 help: name one: `pgwarden backup verify FILE`, or take one: `pgwarden backup`",
            dir.display()
        ),
    })
}

/// The found backup (not named by the user) passes the rule for found files: the archive and
/// its manifest regular files, they and every directory above them owned by pgwarden's user or
/// root and writable by no one else (a root-owned sticky one like `/tmp` excepted). Beside a
/// data directory in `/tmp` another user may have made the backup directory first: its
/// "backup" would be restored and started, with its own settings, as the server's user.
fn found_backup_is_ours(archive: &std::path::Path) -> Result<()> {
    use crate::error::{FoundKind, Refusal, RefusalProblem};
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let manifest = crate::backup::manifest_path(archive);
    let mut judged: Vec<(&std::path::Path, bool)> = vec![(archive, false), (&manifest, false)];
    judged.extend(archive.ancestors().skip(1).map(|dir| (dir, true)));
    for (path, is_dir) in judged {
        let Ok(meta) = (if is_dir {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }) else {
            continue;
        };
        let (uid, mode) = (meta.uid(), meta.mode());
        let sticky_of_root = is_dir && uid == 0 && mode & 0o1000 != 0;
        let problem = if !is_dir && !meta.is_file() {
            RefusalProblem::NotAFile
        } else if uid != me && uid != 0 {
            RefusalProblem::OwnedBy { uid }
        } else if mode & 0o022 != 0 && !sticky_of_root {
            RefusalProblem::WritableByOthers { uid, mode }
        } else {
            continue;
        };
        let owner = crate::config::trust::owner_name(uid);
        let because = match &problem {
            RefusalProblem::NotAFile => format!("{} is not a regular file", path.display()),
            RefusalProblem::OwnedBy { .. } => format!(
                "{} is owned by {owner}, and pgwarden runs as {}",
                path.display(),
                crate::config::trust::owner_name(me)
            ),
            RefusalProblem::WritableByOthers { .. } => format!(
                "{} is writable by users other than its owner {owner} (mode {:o})",
                path.display(),
                mode & 0o7777
            ),
        };
        return Err(Error::Untrusted(Box::new(Refusal {
            kind: FoundKind {
                what: "newest backup",
                otherwise: "",
            },
            file: archive.to_path_buf(),
            at: path.to_path_buf(),
            problem,
            dir: archive
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_path_buf(),
            because,
            help: "a backup pgwarden finds (rather than is given) is restored and started only \
                   when it and every directory above it are owned by you or root and writable \
                   by no one else; if you trust this one, name it yourself: \
                   `pgwarden backup verify FILE`"
                .to_string(),
        })));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Cli, Command, LogFormat};
    use clap::Parser;
    use std::ffi::OsString;

    /// The command line the verification runs again with (in its idle session) is the same
    /// command: every flag, a `--to`, and a file whose name looks like a flag.
    #[test]
    fn the_command_line_run_again_parses_back_to_the_same_command() {
        let args = VerifyArgs {
            file: Some("/backups/--name=other.tar.zst".into()),
            to: Some("2026-12-01 13:30:00+00".into()),
            instance: InstanceArgs {
                config: Some("/etc/c.toml".into()),
                data_dir: Some("/srv/my data".into()),
                port: Some(6543),
                name: Some("-shop".into()),
                listen_address: Some("127.0.0.2".into()),
                system: true,
            },
        };
        let globals = Globals {
            log_format: LogFormat::Json,
            project: crate::config::project::Choice::None,
        };
        let line = args.command_line(&globals);
        let cli =
            Cli::try_parse_from(std::iter::once(OsString::from("pgwarden")).chain(line)).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Backup(backup) = cli.command else {
            panic!("not backup: {:?}", cli.command)
        };
        let Some(crate::commands::backup::BackupCommand::Verify(parsed)) = backup.command else {
            panic!("not backup verify: {backup:?}")
        };
        assert_eq!(format!("{parsed:?}"), format!("{args:?}"));
    }
}
