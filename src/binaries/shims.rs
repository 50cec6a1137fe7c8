//! The installation's programs first on `pgwarden exec`'s `PATH`, without running any of them as
//! root.
//!
//! `pgwarden exec -- pg_dump > dump.sql` must run the server's own `pg_dump` (Debian 12's 15.x
//! refuses a 16 server: "aborting because of server version mismatch"), so the installation's
//! `bin/` belongs first on CMD's `PATH`. But CMD runs as the caller — often root — and nothing
//! of an installation runs as root ([`crate::os::privilege::RunAs::for_installation`]). So `PATH`
//! gets a private directory of *shims* instead: one symlink per program of the installation's
//! `bin/`, each pointing at the pgwarden binary itself. Started through such a name, pgwarden
//! does nothing but [`run_if_shim`]: it becomes the installation's program of that name
//! (`exec`, no process in between: stdin/stdout/stderr, signals and the exit code are the
//! program's own), as the installation's user when root — the unprivileged user — and as the
//! caller otherwise.
//!
//! What the shim runs comes from two variables `exec` sets beside the symlinks:
//! [`BIN_ENV`], the installation's `bin/`, and [`USER_ENV`], the user its programs run as.
//! Neither widens anything: whoever sets them can run those programs as that user directly.
//! The directory is made with mode 0700 under the temporary directory and removed when CMD ends.
//!
//! The init-script runner needs none of this: its `.sh` scripts already run as the server's
//! (unprivileged) user with the installation's `bin/` first on `PATH`.

use crate::binaries::Install;
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The installation's `bin/`, whose program a shim becomes.
pub const BIN_ENV: &str = "PGWARDEN_SHIM_BIN";
/// The user the installation's programs run as when pgwarden is root (`run_as`).
pub const USER_ENV: &str = "PGWARDEN_SHIM_USER";

/// A private directory of shims for one installation, removed when dropped.
pub struct Shims {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: RunAs,
}

impl Shims {
    /// Makes a shim for every executable in `install`'s `bin/`, pointing at this pgwarden
    /// binary; `user` is who they run as.
    pub fn create(install: &Install, user: RunAs) -> Result<Shims> {
        let bin = install.dir.join("bin");
        let me = std::env::current_exe().map_err(|e| Error::Server {
            what: format!("cannot find pgwarden's own binary for the installation's programs: {e}"),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("pgwarden-bin-")
            .tempdir()
            .io("cannot create a directory in", std::env::temp_dir())?;
        for name in programs(&bin) {
            let link = dir.path().join(&name);
            std::os::unix::fs::symlink(&me, &link).io("cannot create the shim", &link)?;
        }
        Ok(Shims { dir, bin, user })
    }

    /// The shim directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What CMD's environment gets: `PATH` with the shims first, and the two variables the
    /// shims read.
    pub fn environment(&self, path: Option<OsString>) -> Vec<(&'static str, OsString)> {
        let mut dirs = vec![self.dir().to_path_buf()];
        dirs.extend(path.iter().flat_map(std::env::split_paths));
        let path = std::env::join_paths(dirs).unwrap_or_else(|_| self.dir().into());
        vec![
            ("PATH", path),
            (BIN_ENV, self.bin.clone().into_os_string()),
            (USER_ENV, self.user.name.clone().into()),
        ]
    }
}

/// The executables in `bin`, by name.
pub fn programs(bin: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bin)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::metadata(e.path())
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// When this process was started through a shim (its name is a program of [`BIN_ENV`]'s
/// directory, which is set), becomes that program and never returns; an error if that fails.
/// `None` otherwise: an ordinary `pgwarden` command line. `args` is this process's argv.
pub fn run_if_shim(args: &[OsString]) -> Option<Error> {
    let bin = PathBuf::from(std::env::var_os(BIN_ENV)?);
    let argv0 = args.first()?;
    let name = Path::new(&argv0).file_name()?.to_str()?.to_string();
    if name == "pgwarden" || name.starts_with("pgwarden-") {
        return None;
    }
    let program = bin.join(&name);
    if !program.is_file() {
        return None;
    }
    let user = RunAs::for_installation(std::env::var(USER_ENV).ok().as_deref());
    let mut command = std::process::Command::new(&program);
    command.args(&args[1..]);
    user.apply_std(&mut command);
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    Some(Error::Server {
        what: format!(
            "cannot run {} as {} (uid {}): {error}\nhelp: that user must be able to reach the \
             installation; choose an install_dir it can enter",
            program.display(),
            user.name,
            user.uid
        ),
    })
}
