//! What a test needs from the machine (root, a mount) and cannot make itself.
//!
//! Where a prerequisite is missing, a test says `skipped: …` and returns, on a developer's
//! machine. Under CI (`CI` set, as `.ci/run` and CI services set it) a missing prerequisite
//! fails the test instead: CI must run every test, and a skipped one would count as a pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True under CI, where no test may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether the test can go on: `met`, else (outside CI) says it is skipped, needing `what`.
/// Under CI a missing prerequisite panics, naming it.
pub fn prerequisite(met: bool, what: &str) -> bool {
    if !met {
        assert!(
            !in_ci(),
            "this test needs {what}, which is missing; under CI (CI is set) a missing \
             prerequisite fails the test instead of skipping it"
        );
        eprintln!("skipped: this test needs {what}");
    }
    met
}

/// Whether the test runs as root (else skipped, or failed under CI: see [`prerequisite`]).
pub fn require_root(why: &str) -> bool {
    prerequisite(super::is_root(), &format!("root ({why})"))
}

/// A tmpfs mounted at a directory, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `96m`) with `mode` at `path` (created if missing).
    /// `None` when that is not possible here (not root, no mount): skipped, or failed under CI.
    pub fn mount(path: &Path, size: &str, mode: u32) -> Option<Tmpfs> {
        if !require_root("mounting a tmpfs") {
            return None;
        }
        std::fs::create_dir_all(path).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode={mode:o}"))
            .arg("tmpfs")
            .arg(path)
            .status();
        let mounted = status.as_ref().is_ok_and(|s| s.success());
        if !prerequisite(
            mounted,
            &format!("a tmpfs mounted at {} ({status:?})", path.display()),
        ) {
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still working in it (a test failing mid-way) does not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether the C library has the locale `name` (as `locale -a` spells it, e.g. `en_US.utf8`);
/// else skipped, or failed under CI (`.ci/run` generates `en_US.UTF-8`).
pub fn require_locale(name: &str) -> bool {
    let listed = Command::new("locale")
        .arg("-a")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == name)
        })
        .unwrap_or(false);
    prerequisite(
        listed,
        &format!("the locale {name} (`localedef -i en_US -f UTF-8 en_US.UTF-8`)"),
    )
}
