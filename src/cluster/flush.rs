//! Making a new cluster durable: it is written without fsync (initdb --no-sync, a temporary
//! server with fsync=off, or copied from the template cache), then flushed with syncfs(2)
//! before the rename that publishes it.

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Makes everything written under `dir` durable with one `syncfs(2)` of its filesystem.
///
/// Nothing reads the staging cluster before the rename, so one flush before the rename gives
/// the same guarantee as flushing along the way. One syncfs costs one journal commit; initdb's
/// own pass costs one per file and took 0.6–3 s more per first launch here (BENCHMARKS.md).
/// syncfs reports write-back errors of the filesystem (Linux ≥ 5.8), so a failed write fails
/// the launch rather than publishing a damaged cluster.
pub fn flush_to_disk(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).io("cannot open", dir)?;
    nix::unistd::syncfs(&handle).map_err(|source| Error::Flush {
        what: "the new cluster in",
        dir: dir.to_path_buf(),
        source,
    })
}

/// fsync of a directory (its entries: a rename into it, a new file), best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// How often [`BackgroundFlush`] flushes.
const EVERY: Duration = Duration::from_millis(100);

/// Flushes a directory's filesystem every [`EVERY`] on a thread of its own while a first launch
/// writes the cluster, so that the data goes to disk while initdb and the temporary server are
/// busy with the CPU, and the flush before the rename finds little left (BENCHMARKS.md, row 2).
/// Only an optimisation: its errors are ignored; that last flush reports them.
pub struct BackgroundFlush {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundFlush {
    pub fn start(dir: &Path) -> BackgroundFlush {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, stopped): (PathBuf, _) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            loop {
                std::thread::park_timeout(EVERY);
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let _ = flush_to_disk(&dir);
            }
        });
        BackgroundFlush {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BackgroundFlush {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
