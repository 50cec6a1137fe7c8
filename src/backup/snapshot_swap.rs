//! `snapshot restore` of a running instance: the supervisor swaps the staged copy in itself.
//!
//! Stopping the supervisor and starting a new one (`pgwarden start` → `pgwarden run`, the
//! environment read back from `/proc`) cost more than the restore's own work: two pgwarden
//! processes, a config load, a readiness hand-over, and a shutdown checkpoint of a cluster
//! that is thrown away the moment after. Instead the restore command stages the copy
//! ([`super::snapshot::stage`]), writes [`REQUEST`] in the state directory and sends SIGUSR1;
//! the supervisor stops its postgres at once (an immediate shutdown), exchanges the staging
//! directory with the data directory (one `renameat2`), starts postgres again (a warm start,
//! its usual ready path) and writes [`ANSWER`] once it is ready. The supervisor keeps its pid,
//! its environment and its settings.
//!
//! Why no checkpoint: the cluster being replaced is deleted right after the swap. If the swap
//! fails, it is started again; an immediate shutdown left it crash-consistent (its WAL is
//! flushed at every commit), so that start replays the WAL since the last checkpoint: slower
//! on that path only, and nothing committed is lost.
//!
//! What the supervisor trusts: only the signal (from its own user or root) and the request's
//! existence; the directory it swaps in is always [`super::snapshot::staging_path`] of its own
//! data directory, never a path read from a file, and is refused unless it is a real directory
//! (not a symlink) owned by the data directory's owner.

use super::snapshot::{exchange, staging_path};
use crate::error::{Error, IoContext, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// `<state dir>/snapshot-swap.request`: written by `snapshot restore` before its SIGUSR1.
pub const REQUEST: &str = "snapshot-swap.request";
/// `<state dir>/snapshot-swap.answer`: `restored`, or `failed: WHY`, written by the supervisor.
pub const ANSWER: &str = "snapshot-swap.answer";

/// Command side: asks the supervisor `pid` to swap the staged copy in.
pub fn ask(state_dir: &Path, pid: u32) -> Result<()> {
    let answer = state_dir.join(ANSWER);
    match std::fs::remove_file(&answer) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).io("cannot remove the old answer", &answer);
        }
        _ => {}
    }
    let request = state_dir.join(REQUEST);
    std::fs::write(&request, "swap\n").io("cannot write the swap request", &request)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(&request);
        Error::Privilege {
            what: format!(
                "cannot signal pgwarden (pid {pid}): {e}\n\
                 help: run `pgwarden snapshot restore` as the user that started it (e.g. with sudo)"
            ),
        }
    })
}

/// Command side: waits up to `limit` for the supervisor's answer (read every millisecond: a
/// small file in the state directory); an error if it failed, or if the supervisor is gone.
pub async fn wait(state_dir: &Path, pid: u32, limit: Duration) -> Result<()> {
    let path = state_dir.join(ANSWER);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.ends_with('\n')
        {
            let _ = std::fs::remove_file(&path);
            let text = text.trim_end();
            return match text.strip_prefix("failed: ") {
                None if text == "restored" => Ok(()),
                why => Err(Error::Backup {
                    what: format!(
                        "pgwarden (pid {pid}) did not restore the snapshot: {}\n\
                         help: `pgwarden logs` shows why; `pgwarden status` shows the server",
                        why.unwrap_or(text)
                    ),
                }),
            };
        }
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err();
        if gone || Instant::now() >= deadline {
            let _ = std::fs::remove_file(state_dir.join(REQUEST));
            return Err(Error::Backup {
                what: format!(
                    "pgwarden (pid {pid}) {} before it answered the snapshot restore\n\
                     help: `pgwarden logs` shows what happened; `pgwarden status` shows the server",
                    if gone {
                        "exited".to_string()
                    } else {
                        format!("did not get ready within {}s", limit.as_secs())
                    }
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Supervisor side: whether a SIGUSR1 came with a request (taken: removed).
pub fn take_request(state_dir: &Path) -> bool {
    std::fs::remove_file(state_dir.join(REQUEST)).is_ok()
}

/// Supervisor side, its postgres stopped: exchanges the staging directory beside `data_dir`
/// with `data_dir` (the replaced cluster is left at the staging path, for the command to
/// delete). Refused, with nothing changed, unless the staging directory is a real directory
/// owned by the data directory's owner.
pub fn swap_staged(data_dir: &Path) -> Result<()> {
    let staging = staging_path(data_dir);
    let refuse = |why: String| Error::Backup {
        what: format!(
            "refusing to swap {} in: {why}; nothing was changed\n\
             help: `pgwarden snapshot restore NAME` makes that directory; run it again",
            staging.display()
        ),
    };
    let meta = std::fs::symlink_metadata(&staging).io("cannot read", &staging)?;
    if !meta.file_type().is_dir() {
        return Err(refuse("it is not a directory (a symlink?)".into()));
    }
    let owner = std::fs::symlink_metadata(data_dir)
        .io("cannot read", data_dir)?
        .uid();
    if meta.uid() != owner {
        return Err(refuse(format!(
            "it belongs to uid {}, the data directory to uid {owner}",
            meta.uid()
        )));
    }
    if !staging.join("PG_VERSION").is_file() {
        return Err(refuse("it holds no cluster (no PG_VERSION)".into()));
    }
    exchange(&staging, data_dir)?;
    super::sync_dir(data_dir.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// Supervisor side: the answer `wait` reads (written whole, then renamed into place).
pub fn answer(state_dir: &Path, failed: Option<&str>) {
    let text = match failed {
        None => "restored\n".to_string(),
        Some(why) => format!("failed: {}\n", why.replace('\n', " ")),
    };
    let partial = state_dir.join(format!("{ANSWER}.partial"));
    if std::fs::write(&partial, text).is_ok() {
        let _ = std::fs::rename(&partial, state_dir.join(ANSWER));
    }
}
