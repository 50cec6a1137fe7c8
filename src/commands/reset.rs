//! `pgwarden reset`: compose's `down -v` — stop the instance, delete its cluster and its state,
//! so that the next `start` makes a fresh one (init scripts run again).
//!
//! It asks first on a terminal (`--yes` otherwise), and refuses a data directory pgwarden did
//! not create (no `pgwarden.json` marker in it: an existing cluster someone pointed pgwarden at)
//! unless `--force`.
//!
//! The cluster is moved aside (one rename in its parent directory) and deleted in the
//! background at low priority, so that `reset` returns at once and the next `start` (which
//! copies the template cluster the background fill made: [`crate::cluster::template_fill`])
//! does not wait for it: deleting a cluster's ~1000 files took 3 s here (ext4 with online
//! discard), five times what the fresh start takes. A directory that cannot be moved (a mount
//! point) is emptied in the foreground, as is everything when `rm` cannot be started.

pub use crate::cli::reset::ResetArgs;
use crate::cluster::MARKER;
use crate::commands::common::Instance;
use crate::commands::stop;
use crate::config::ShutdownMode;
use crate::error::{Error, IoContext, Result};
use std::path::Path;

pub async fn run(args: ResetArgs) -> Result<i32> {
    let instance = Instance::load(&args.instance)?;
    let data_dir = instance
        .remembered
        .as_ref()
        .map(|r| r.data_dir.clone())
        .unwrap_or_else(|| instance.config.data_dir.clone());
    let exists = data_dir.exists();
    if exists && !data_dir.join(MARKER).is_file() && !args.force {
        return Err(Error::Cluster {
            what: format!(
                "{} was not created by pgwarden (no {MARKER} in it); reset deletes only clusters pgwarden made\n\
                 help: if you mean to delete it and everything in it, add --force",
                data_dir.display()
            ),
        });
    }
    if !args.yes {
        confirm(&data_dir, &instance.config.name)?;
    }
    eprintln!(
        "{}",
        stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
    );
    if exists {
        remove_cluster(&data_dir)?;
    }
    let state_dir = crate::paths::state_dir(&data_dir);
    if state_dir.exists() {
        remove(&state_dir)?;
    }
    println!(
        "reset: deleted {}{}; `pgwarden start` makes a fresh cluster",
        data_dir.display(),
        if exists { "" } else { " (it did not exist)" }
    );
    Ok(0)
}

/// Asks on the terminal; anything but `y`/`yes` stops here.
fn confirm(data_dir: &Path, name: &str) -> Result<()> {
    match super::common::ask_yes_no(&format!(
        "Delete instance {name:?}'s cluster {} and all its data?",
        data_dir.display()
    )) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::Cluster {
            what: "reset cancelled; nothing was changed".into(),
        }),
        None => Err(Error::Config {
            problems: vec![format!(
                "reset deletes {} and stdin is not a terminal to ask on\n    help: add --yes",
                data_dir.display()
            )],
        }),
    }
}

/// The name a cluster being deleted has: hidden, beside the data directory, so that a rename
/// (same filesystem) moves it aside.
fn aside_name(data_dir: &Path, n: u32) -> Option<std::path::PathBuf> {
    let name = data_dir.file_name()?.to_string_lossy();
    Some(data_dir.with_file_name(format!(
        ".{name}.pgwarden-deleting-{}-{n}",
        std::process::id()
    )))
}

/// Moves the cluster aside and deletes it in the background (also what an earlier, interrupted
/// background deletion of this data directory left); deletes in place when it cannot be moved.
fn remove_cluster(data_dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(data_dir).io("cannot read", data_dir)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return remove(data_dir);
    }
    let aside = (0..100)
        .filter_map(|n| aside_name(data_dir, n))
        .find(|p| std::fs::symlink_metadata(p).is_err());
    let Some(aside) = aside.filter(|a| std::fs::rename(data_dir, a).is_ok()) else {
        return remove(data_dir);
    };
    let mut doomed = vec![aside.clone()];
    doomed.extend(leftovers(data_dir).into_iter().filter(|p| *p != aside));
    let mut rm = std::process::Command::new("rm");
    rm.args(["-rf", "--one-file-system", "--"])
        .args(&doomed)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // A session of its own: a terminal's Ctrl-C or hang-up after reset returned leaves it alone.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut rm, || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    crate::background::lower_command(&mut rm);
    if rm.spawn().is_err() {
        for path in doomed {
            remove(&path)?;
        }
    }
    Ok(())
}

/// Clusters an earlier reset of `data_dir` moved aside and did not finish deleting.
fn leftovers(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) else {
        return Vec::new();
    };
    let prefix = format!(".{}.pgwarden-deleting-", name.to_string_lossy());
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn remove(path: &Path) -> Result<()> {
    // Not through a symlink someone put in its place: remove the link, not what it points to.
    let meta = std::fs::symlink_metadata(path).io("cannot read", path)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return std::fs::remove_file(path).io("cannot remove", path);
    }
    std::fs::remove_dir_all(path).io("cannot remove", path)
}
