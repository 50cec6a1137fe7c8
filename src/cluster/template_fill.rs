//! The background template fill: after a persistent first launch that ran initdb, once its
//! server is ready, the template cache entry for its settings is made, so that `reset` +
//! `start` copies it (a fraction of a second) instead of running initdb again.
//!
//! How: a second initdb and bootstrap — exactly what an ephemeral first launch does before it
//! saves its template — into a working directory beside the templates, never a copy of the
//! running cluster: its files change under a copy, and the user may already have written to it.
//! No moment where that cluster is shut down comes for free: before its first start the launch
//! would wait for the copy and its flush (0.1–1 s, the reason persistent launches saved no
//! template), and at a stop the user waits for the stop.
//!
//! Rules:
//! - It never delays readiness (it starts after the ready line) nor a stop: a stop cancels
//!   it ([`TemplateFill::cancel`] kills its children's process groups by pid, at once), and the
//!   fill's thread then removes its working directory while the server shuts down.
//! - Low priority: its thread runs at nice 19 in the idle I/O class, which initdb and the
//!   temporary server it forks inherit.
//! - One fill per template key: an exclusive lock next to the templates; the loser skips.
//! - Only a complete template is ever used: the working directory is renamed to the template's
//!   name after its marker is written and everything is flushed; a fill that is torn (killed,
//!   cancelled, failed) leaves at most a working directory, which no launch copies and the next
//!   fill (of any key) removes once that key's lock is free.
//! - initdb and the temporary server run as the server's user (`run_as`), in a 0700 working
//!   directory of that user. Before the result is published, pgwarden takes it over: the
//!   working directory, then every entry top down, is given to pgwarden's own user (so that
//!   nothing running as the server's user can change it later), and anything but a plain
//!   directory, a regular file with one link, or a symlink is refused.
//! - Failures are one warn line, never fatal; a template made is one info line.

use super::flush::{flush_to_disk, sync_dir};
use super::template::TEMPLATE_COMPLETE as TEMPLATE_COMPLETE_MARKER;
use super::{admin_access, bootstrap, run_initdb};
use crate::binaries::Install;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A fill running on a thread of its own.
pub struct TemplateFill {
    cancel: Cancel,
    thread: Option<JoinHandle<()>>,
    /// Closed when the fill's thread ends (its sender is dropped there).
    ended: Option<std::sync::mpsc::Receiver<()>>,
}

/// How long [`Drop`] waits for a cancelled fill to clean up.
const CLEAN_UP_WITHIN: Duration = Duration::from_secs(5);

impl TemplateFill {
    /// Starts filling `template` for `config` (the one the cluster was created with), if
    /// given, then runs `then` (the spares: [`super::spare`]) on the same thread, under the
    /// same cancel.
    pub fn start(
        config: &Config,
        install: &Install,
        run_as: &RunAs,
        template: Option<PathBuf>,
        then: impl FnOnce(&Cancel) + Send + 'static,
    ) -> Self {
        let cancel = Cancel::new();
        let (config, install, run_as, on_thread) = (
            config.clone(),
            install.clone(),
            run_as.clone(),
            cancel.clone(),
        );
        let (ends, ended) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("template-fill".into())
            .spawn(move || {
                let _ends = ends;
                crate::os::background::lower_this_thread();
                if let Some(template) = template {
                    fill_logged(&config, &install, &run_as, &template, &on_thread);
                }
                if !on_thread.is_cancelled() {
                    then(&on_thread);
                }
            });
        match thread {
            Ok(thread) => Self {
                cancel,
                thread: Some(thread),
                ended: Some(ended),
            },
            Err(e) => {
                warn!("cannot start the background template fill: {e}");
                Self {
                    cancel,
                    thread: None,
                    ended: None,
                }
            }
        }
    }

    /// Whether its thread still works.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Kills the fill's children and makes it stop at its next step; returns at once.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancels (if still running) and waits up to `within` for the fill's thread to finish,
    /// removing its working directory. False if it had not finished by then: a later call
    /// waits again (after the last, the next fill of this key removes what it left).
    pub fn finish(&mut self, within: Duration) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        self.cancel.cancel();
        if let Some(ended) = &self.ended
            && matches!(
                ended.recv_timeout(within),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            )
        {
            self.thread = Some(thread);
            return false;
        }
        self.ended = None;
        let _ = thread.join();
        true
    }
}

impl Drop for TemplateFill {
    fn drop(&mut self) {
        self.finish(CLEAN_UP_WITHIN);
    }
}

/// Fills `template`, saying how it went in one line.
fn fill_logged(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    template: &Path,
    cancel: &Cancel,
) {
    let started = Instant::now();
    match fill(config, install, run_as, template, cancel) {
        Ok(Filled::Made) => info!(
            template = %template.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "template cluster saved: after `pgwarden reset`, `start` copies it (no initdb)"
        ),
        Ok(Filled::AlreadyThere) => debug!("the template cluster exists already"),
        Ok(Filled::Busy) => debug!("another pgwarden is filling this template"),
        Err(_) if cancel.is_cancelled() => debug!("template fill cancelled"),
        Err(e) => warn!(
            "cannot save a template cluster in the background (a reset + start will run initdb): {e}"
        ),
    }
}

enum Filled {
    Made,
    AlreadyThere,
    Busy,
}

/// The working directory of `template`'s fill: `.fill-<key>` beside it.
fn working_dir(template: &Path) -> PathBuf {
    let name = template.file_name().unwrap_or_default().to_string_lossy();
    template.with_file_name(format!(".fill-{name}"))
}

fn fill(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    template: &Path,
    cancel: &Cancel,
) -> Result<Filled> {
    let root = super::template::templates_root(template, run_as)?;
    let Some(_lock) = lock(root, template)? else {
        return Ok(Filled::Busy);
    };
    sweep(root, template);
    if template.join(TEMPLATE_COMPLETE_MARKER).is_file() {
        return Ok(Filled::AlreadyThere);
    }
    let work = working_dir(template);
    remove(&work)?;
    // What initdb and the bootstrap make, as for an ephemeral first launch's template (a
    // cacheable launch has no init scripts; scripts added since are not the template's).
    let config = Config {
        init_dir: None,
        ..config.clone()
    };
    let result = make(&config, install, run_as, template, &work, cancel);
    // Whatever happened, nothing of this fill stays behind but the template.
    let _ = remove(&work);
    result.map(|()| Filled::Made)
}

fn make(
    config: &Config,
    install: &Install,
    run_as: &RunAs,
    template: &Path,
    work: &Path,
    cancel: &Cancel,
) -> Result<()> {
    let cluster = work.join("cluster");
    run_as.own_dir(work, 0o700)?;
    run_as.own_dir(&cluster, 0o700)?;
    let step = |what: &str| {
        if cancel.is_cancelled() {
            return Err(Error::Cluster {
                what: format!("cancelled before {what}"),
            });
        }
        Ok(())
    };
    step("initdb")?;
    // The password file goes into the working directory, which is removed afterwards.
    run_initdb(config, install, run_as, work, &cluster, cancel)?;
    admin_access::grant_peer_access(&cluster, run_as)?;
    step("the bootstrap")?;
    // A single-user backend (a template has no init scripts): no socket, no port; a temporary
    // server's socket would go into the working directory, not the instance's socket
    // directory, where the running server's socket of the same port is.
    bootstrap(config, install, run_as, &cluster, work, cancel)?;
    step("taking it over")?;
    take_over(work, &cluster, run_as)?;
    std::fs::write(cluster.join(TEMPLATE_COMPLETE_MARKER), b"").io("cannot write", &cluster)?;
    // Flushed before it is published: a template torn by a power cut would be copied into every
    // later cluster with these settings.
    flush_to_disk(work)?;
    cancel
        .unless_cancelled(|| super::template::publish(&cluster, template))
        .unwrap_or_else(|| {
            Err(Error::Cluster {
                what: "cancelled before publishing".into(),
            })
        })?;
    if let Some(root) = template.parent() {
        sync_dir(root);
    }
    Ok(())
}

/// Removes the working directories of other keys' fills that nobody runs (a pgwarden killed in
/// the middle: only a fill of the same key would remove it otherwise, and that key may never
/// come again). A working directory whose key's lock is free is nobody's.
fn sweep(root: &Path, ours: &Path) {
    let ours = working_dir(ours);
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(key) = name.strip_prefix(".fill-") else {
            continue;
        };
        if entry.path() == ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(Some(_free)) = lock(root, &root.join(key)) {
            debug!(dir = %entry.path().display(), "removing an abandoned template fill");
            let _ = remove(&entry.path());
        }
    }
}

/// The exclusive lock of one template key (`.<key>.lock` beside it), or None when another
/// pgwarden holds it.
fn lock(root: &Path, template: &Path) -> Result<Option<std::fs::File>> {
    let name = template.file_name().unwrap_or_default().to_string_lossy();
    let path = root.join(format!(".{name}.lock"));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .io("cannot open", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).io("cannot lock", &path),
    }
}

/// Gives the working directory and everything in it, top down, to pgwarden's own user, once the
/// server's user has no process left in it: first the working directory itself (0700), which
/// cuts off every path into it, then each directory before its entries are read. Refuses what
/// initdb never makes (hard links, devices, fifos, sockets), which could only have been planted.
fn take_over(work: &Path, cluster: &Path, run_as: &RunAs) -> Result<()> {
    if !run_as.switch {
        return Ok(());
    }
    give_to_self(work)?;
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o700))
        .io("cannot set the mode of", work)?;
    take_over_tree(cluster)
}

fn take_over_tree(dir: &Path) -> Result<()> {
    give_to_self(dir)?;
    for entry in std::fs::read_dir(dir).io("cannot read", dir)? {
        let path = entry.io("cannot read", dir)?.path();
        let meta = std::fs::symlink_metadata(&path).io("cannot read", &path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            take_over_tree(&path)?;
        } else if kind.is_symlink() || (kind.is_file() && meta.nlink() == 1) {
            give_to_self(&path)?;
        } else {
            return Err(Error::Cluster {
                what: format!(
                    "{} is not what initdb makes (a hard link or a special file); not saving this template",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

fn give_to_self(path: &Path) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::geteuid()),
        Some(nix::unistd::getegid()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::Privilege {
        what: format!("cannot take over {}: {e}", path.display()),
    })
}

/// Removes `path` if it exists (a directory tree: std's removal does not follow symlinks).
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).io("cannot remove", path),
        _ => Ok(()),
    }
}
