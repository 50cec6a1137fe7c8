//! Who initdb, postgres and every other program of an installation run as.
//!
//! PostgreSQL refuses to run as root. Started as root, pgwarden runs its children as an
//! unprivileged user (`run_as`; by default an existing cluster's owner, see
//! [`crate::instance::server_user`], else `pgwarden`, else Debian's `postgres`) and gives it the
//! data directory. Started as anyone else, the children run as that user and `run_as` must be unset or
//! name that same user.

use crate::error::{Error, IoContext, Result};
use nix::unistd::{Gid, Uid, User};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Default candidates for `run_as` when started as root, in order.
pub const DEFAULT_USERS: [&str; 2] = ["pgwarden", "postgres"];

/// The identity children run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// True when pgwarden must switch to this user for its children (it runs as root).
    pub switch: bool,
}

impl RunAs {
    /// Resolves the configured `run_as` against the current user.
    pub fn resolve(configured: Option<&str>) -> Result<RunAs> {
        let euid = nix::unistd::geteuid();
        if euid.is_root() {
            return Self::for_root(configured);
        }
        let me = User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| euid.to_string());
        if let Some(name) = configured
            && name != me
        {
            return Err(Error::Privilege {
                what: format!(
                    "run_as = {name:?} needs pgwarden to start as root, but it runs as {me:?}\n\
                     help: remove run_as from the config (postgres then runs as {me:?}), or start pgwarden as root"
                ),
            });
        }
        Ok(RunAs {
            name: me,
            uid: euid,
            gid: nix::unistd::getegid(),
            switch: false,
        })
    }

    fn for_root(configured: Option<&str>) -> Result<RunAs> {
        let candidates: Vec<&str> = match configured {
            Some(name) => vec![name],
            None => DEFAULT_USERS.to_vec(),
        };
        for name in &candidates {
            let user = User::from_name(name).map_err(|e| Error::Privilege {
                what: format!("cannot look up user {name:?}: {e}"),
            })?;
            if let Some(user) = user {
                if user.uid.is_root() {
                    return Err(Error::Privilege {
                        what: format!(
                            "run_as = {name:?} is root (uid 0); PostgreSQL refuses to run as root\n\
                             help: name an unprivileged user in run_as"
                        ),
                    });
                }
                return Ok(RunAs {
                    name: user.name,
                    uid: user.uid,
                    gid: user.gid,
                    switch: true,
                });
            }
        }
        let wanted = candidates.first().copied().unwrap_or("pgwarden");
        Err(Error::Privilege {
            what: format!(
                "pgwarden runs as root, and PostgreSQL refuses to; it needs an unprivileged user to run postgres, \
                 but no user {} exists\n\
                 help: pass --create-user to have pgwarden create a locked system user {wanted:?}, \
                 or create one with `useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {wanted}`, \
                 or name an existing user with run_as / --run-as",
                candidates
                    .iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        })
    }

    /// Like [`RunAs::resolve`], but when started as root and no unprivileged user exists,
    /// creates a locked system user (`run_as`, or `pgwarden`) first, and says so.
    pub fn resolve_or_create(configured: Option<&str>) -> Result<RunAs> {
        match Self::resolve(configured) {
            Err(Error::Privilege { .. }) if nix::unistd::geteuid().is_root() => {
                let name = configured.unwrap_or(DEFAULT_USERS[0]);
                if User::from_name(name).ok().flatten().is_some() {
                    return Self::resolve(configured);
                }
                let status = std::process::Command::new("useradd")
                    .args(["--system", "--user-group", "--no-create-home"])
                    .args([
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        name,
                    ])
                    .status()
                    .map_err(|e| Error::Privilege {
                        what: format!("cannot run useradd to create user {name:?}: {e}"),
                    })?;
                if !status.success() {
                    return Err(Error::Privilege {
                        what: format!("useradd could not create user {name:?} ({status})"),
                    });
                }
                tracing::warn!(
                    user = name,
                    "created a locked system user to run postgres (--create-user)"
                );
                Self::resolve(Some(name))
            }
            other => other,
        }
    }

    /// Who runs a program of a PostgreSQL installation — its `postgres --version`, `psql`, `ldd`
    /// on its binaries — whatever the source (cache, archive, `--binaries DIR`): the one rule.
    /// Not root: the current user. Root: `run_as` (the user the server runs as), or, before that
    /// user exists (`pgwarden install` before the first `run --create-user`), `nobody`. Never
    /// root: an installation's programs are another party's code, which must not get root's
    /// rights even when a check of their owner passed.
    pub fn for_installation(configured: Option<&str>) -> RunAs {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            let name = User::from_uid(euid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| euid.to_string());
            return RunAs {
                name,
                uid: euid,
                gid: nix::unistd::getegid(),
                switch: false,
            };
        }
        Self::for_root(configured).unwrap_or_else(|_| {
            let (uid, gid) = User::from_name("nobody")
                .ok()
                .flatten()
                .map(|u| (u.uid, u.gid))
                .unwrap_or((Uid::from_raw(65534), Gid::from_raw(65534)));
            RunAs {
                name: "nobody".to_string(),
                uid,
                gid,
                switch: true,
            }
        })
    }

    /// Makes a command run as this user (drops supplementary groups, then setgid, then setuid:
    /// std does exactly that when `uid` is set while running as root).
    pub fn apply(&self, command: &mut tokio::process::Command) {
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }

    /// Same, for a std command.
    pub fn apply_std(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }

    /// Creates `dir` (mode `mode`) if missing and gives it to this user.
    pub fn own_dir(&self, dir: &Path, mode: u32) -> Result<()> {
        std::fs::create_dir_all(dir).io("cannot create directory", dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .io("cannot set the mode of", dir)?;
        if self.switch {
            nix::unistd::chown(dir, Some(self.uid), Some(self.gid)).map_err(|e| {
                Error::Privilege {
                    what: format!("cannot give {} to user {}: {e}", dir.display(), self.name),
                }
            })?;
        }
        Ok(())
    }

    /// Checks that this user can reach `dir`: every ancestor must be searchable by it. Root can
    /// open anything, so a directory under `/root` (mode 0700) fails only later, in postgres,
    /// with a message that does not say which directory; this says it up front.
    pub fn check_traversable(&self, dir: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt;
        let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let can = if meta.uid() == self.uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !can {
                return Err(Error::Privilege {
                    what: format!(
                        "user {} (which runs postgres) cannot enter {} (mode {:o}, owner uid {}), so it cannot reach {}\n\
                         help: put the directory somewhere it can reach (e.g. under /var/lib/pgwarden), or `chmod o+x {}`",
                        self.name,
                        ancestor.display(),
                        mode & 0o7777,
                        meta.uid(),
                        dir.display(),
                        ancestor.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_programs_never_run_as_root() {
        let user = RunAs::for_installation(None);
        assert!(!user.uid.is_root(), "{user:?}");
        // A run_as naming root, or no one, still gives an unprivileged user.
        for configured in ["root", "no-such-user-pgwarden-test"] {
            let user = RunAs::for_installation(Some(configured));
            assert!(!user.uid.is_root(), "{configured}: {user:?}");
            assert_eq!(user.switch, nix::unistd::geteuid().is_root(), "{user:?}");
        }
    }

    #[test]
    fn non_root_runs_as_itself() {
        if nix::unistd::geteuid().is_root() {
            // As root, a missing user must produce the help text with the fix.
            let err = RunAs::resolve(Some("no-such-user-pgwarden-test")).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("useradd"), "{text}");
            assert!(text.contains("no-such-user-pgwarden-test"), "{text}");
            let err = RunAs::resolve(Some("root")).unwrap_err();
            assert!(err.to_string().contains("refuses to run as root"));
        } else {
            let me = RunAs::resolve(None).unwrap();
            assert!(!me.switch);
            assert!(RunAs::resolve(Some("no-such-user-pgwarden-test")).is_err());
        }
    }
}
