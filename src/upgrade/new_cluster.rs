//! The new cluster: initdb of the new version beside the old cluster, with what pg_upgrade
//! requires to match — the old cluster's install user (the role of oid 10), template0's
//! encoding, collation, ctype and locale provider, data checksums and WAL segment size — read
//! from the old cluster's catalog and settings ([`Facts::read`]).

use crate::binaries::Install;
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What the new cluster must share with the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The bootstrap superuser (oid 10): pg_upgrade refuses clusters whose install users differ.
    pub install_user: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `c` (libc), `i` (icu) or `b` (builtin, 17 and later).
    pub locale_provider: String,
    /// The ICU or builtin locale when the provider is not libc.
    pub locale: Option<String>,
    pub checksums: bool,
    pub wal_segment_mb: u64,
}

/// The catalog query: template0 is what pg_upgrade compares (the other databases keep their
/// own locale); `to_jsonb` reads `daticulocale` (15, 16) and `datlocale` (17) alike.
const QUERY: &str = "SELECT (SELECT rolname::text FROM pg_authid WHERE oid = 10), \
    pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text, \
    d.datlocprovider::text, \
    coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'), \
    current_setting('data_checksums'), \
    (pg_size_bytes(current_setting('wal_segment_size')) / 1048576)::bigint \
    FROM pg_database d WHERE d.datname = 'template0'";

impl Facts {
    /// Reads them through `client` (a superuser's connection to the old cluster).
    pub fn read(client: &mut postgres::Client) -> Result<Facts> {
        let row = client.query_one(QUERY, &[]).map_err(|e| Error::Upgrade {
            what: format!("cannot read the old cluster's locale and install user: {e}"),
        })?;
        Ok(Facts {
            install_user: row.get(0),
            encoding: row.get(1),
            collate: row.get(2),
            ctype: row.get(3),
            locale_provider: row.get(4),
            locale: row.get(5),
            checksums: row.get::<_, String>(6) == "on",
            wal_segment_mb: row.get::<_, i64>(7) as u64,
        })
    }

    /// initdb's options for a cluster with these facts.
    pub fn initdb_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--username={}", self.install_user),
            format!("--encoding={}", self.encoding),
            format!("--lc-collate={}", self.collate),
            format!("--lc-ctype={}", self.ctype),
            format!("--wal-segsize={}", self.wal_segment_mb),
        ];
        match (self.locale_provider.as_str(), &self.locale) {
            ("i", Some(locale)) => {
                args.push("--locale-provider=icu".into());
                args.push(format!("--icu-locale={locale}"));
            }
            ("b", Some(locale)) => {
                args.push("--locale-provider=builtin".into());
                args.push(format!("--builtin-locale={locale}"));
            }
            _ => args.push("--locale-provider=libc".into()),
        }
        if self.checksums {
            args.push("--data-checksums".into());
        }
        args
    }
}

/// Runs the new version's initdb into `new_dir` (created, 0700, the server user's) as
/// `run_as`, with `facts`, the install user's password from `pwfile`, and the old cluster's
/// authentication methods for the connections pg_upgrade makes (its pg_hba.conf and
/// pg_ident.conf are copied over the new ones after pg_upgrade).
pub fn initdb(
    install: &Install,
    new_dir: &Path,
    facts: &Facts,
    pwfile: &Path,
    run_as: &RunAs,
) -> Result<()> {
    create_new_dir(new_dir, run_as)?;
    let mut command = Command::new(install.bin("initdb"));
    command
        .arg("--pgdata")
        .arg(new_dir)
        .args(facts.initdb_args())
        .arg("--pwfile")
        .arg(pwfile)
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        // pg_upgrade flushes the whole new cluster when it is done.
        .args(["--no-sync", "--no-instructions"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null());
    run_as.apply_std(&mut command);
    tracing::info!(dir = %new_dir.display(), args = ?facts.initdb_args(), "initdb of the new cluster");
    let output = super::output_of(command, "initdb")?;
    if !output.status.success() {
        return Err(Error::UpgradeRefused {
            what: format!(
                "initdb of PostgreSQL {} failed ({}):\n{}\n\
                 help: the old cluster's locale ({} / {}) must exist on this machine for the new \
                 version too (`locale -a` lists them); nothing was changed",
                install.version,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end(),
                facts.collate,
                facts.ctype
            ),
        });
    }
    Ok(())
}

/// Creates `new_dir` (0700, the server user's) where nothing is. The pre-flight found no entry
/// there, but another user who can write its parent (`/tmp`) may have made one since: a symlink
/// followed here would have its target given to the server's user. So the directory is made by
/// an exclusive `mkdir`, and its owner and mode are set on it, not through its path.
fn create_new_dir(new_dir: &Path, run_as: &RunAs) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let refused = |e: std::io::Error| Error::UpgradeRefused {
        what: format!(
            "cannot create the new cluster's directory {}: {e}\n\
             help: something made it after the pre-flight check (another user, where its parent \
             is shared); find out who, move it away and upgrade again",
            new_dir.display()
        ),
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(new_dir)
        .map_err(refused)?;
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(new_dir)
        .map_err(refused)?;
    if dir.metadata().map_err(refused)?.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused(std::io::Error::other("replaced by another user's")));
    }
    dir.set_permissions(std::fs::Permissions::from_mode(0o700))
        .io("cannot set the mode of", new_dir)?;
    if run_as.switch {
        nix::unistd::fchown(&dir, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::Privilege {
                what: format!(
                    "cannot give {} to user {}: {e}",
                    new_dir.display(),
                    run_as.name
                ),
            }
        })?;
    }
    Ok(())
}

/// Writes `text` (a password) into a new 0600 file owned by `run_as` at `path`, in pg_upgrade's
/// working directory, which is the server user's: whatever that user put at the name (a symlink
/// to one of root's files) is removed first, the file is created exclusively (never written
/// through a link), and its mode and owner are set through its descriptor.
pub fn write_private(path: &Path, text: &str, run_as: &RunAs) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).io("cannot replace", path);
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .io("cannot write", path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .io("cannot set the mode of", path)?;
    file.write_all(text.as_bytes()).io("cannot write", path)?;
    if run_as.switch {
        nix::unistd::fchown(&file, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::Privilege {
                what: format!("cannot give {} to {}: {e}", path.display(), run_as.name),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The passfile and pwfile go into pg_upgrade's working directory, the server user's: a
    /// symlink that user put at the name is replaced, its target neither written nor given away.
    #[test]
    fn a_password_file_is_never_written_through_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("roots-file");
        std::fs::write(&victim, "root's content\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let pwfile = root.path().join("pwfile");
        std::os::unix::fs::symlink(&victim, &pwfile).unwrap();
        let run_as = RunAs {
            name: "me".into(),
            uid: nix::unistd::geteuid(),
            gid: nix::unistd::getegid(),
            switch: false,
        };
        write_private(&pwfile, "the password", &run_as).unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "root's content\n"
        );
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        let written = std::fs::symlink_metadata(&pwfile).unwrap();
        assert!(written.is_file() && written.permissions().mode() & 0o777 == 0o600);
        assert_eq!(std::fs::read_to_string(&pwfile).unwrap(), "the password");
    }

    /// A symlink made at the new cluster's path after the pre-flight (by a user who can write
    /// the data directory's parent) is refused, and what it leads to keeps its mode.
    #[test]
    fn the_new_clusters_directory_is_never_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("etc");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let new_dir = root.path().join("data.upgrade-17");
        std::os::unix::fs::symlink(&target, &new_dir).unwrap();
        let run_as = RunAs {
            name: "me".into(),
            uid: nix::unistd::geteuid(),
            gid: nix::unistd::getegid(),
            switch: false,
        };
        let err = create_new_dir(&new_dir, &run_as).unwrap_err();
        assert!(matches!(err, Error::UpgradeRefused { .. }), "{err}");
        assert!(err.to_string().contains("help:"), "{err}");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "the link's target keeps its mode");
        assert!(std::fs::symlink_metadata(&new_dir).unwrap().is_symlink());
        let fresh = root.path().join("fresh.upgrade-17");
        create_new_dir(&fresh, &run_as).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn initdb_gets_the_old_clusters_locale_checksums_and_user() {
        let facts = Facts {
            install_user: "trader".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            locale_provider: "i".into(),
            locale: Some("und".into()),
            checksums: true,
            wal_segment_mb: 16,
        };
        let args = facts.initdb_args();
        for expected in [
            "--username=trader",
            "--encoding=UTF8",
            "--lc-collate=C.UTF-8",
            "--locale-provider=icu",
            "--icu-locale=und",
            "--data-checksums",
            "--wal-segsize=16",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        let libc = Facts {
            locale_provider: "c".into(),
            locale: None,
            checksums: false,
            ..facts
        };
        let args = libc.initdb_args();
        assert!(args.contains(&"--locale-provider=libc".to_string()));
        assert!(!args.iter().any(|a| a == "--data-checksums"));
    }
}
