//! The log file `pgwarden run` keeps in the instance's state directory, for `pgwarden logs`.
//!
//! `<state dir>/pgwarden.log`, the same events as stderr (the supervisor's and, with target
//! `postgres`, every server log line) as plain text. Rotated by size: past [`MAX_BYTES`] the file
//! becomes `pgwarden.log.1` (replacing the previous one) and a new file starts, so at most twice
//! that is kept. Size rotation rather than daily files keeps `logs -n` a matter of two files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const FILE: &str = "pgwarden.log";
/// The size at which the file is rotated.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The path of the current log file, and of the rotated one.
pub fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let current = state_dir.join(FILE);
    let rotated = state_dir.join(format!("{FILE}.1"));
    (current, rotated)
}

/// The log file for `pgwarden run` with this config, or `None` when the state directory
/// cannot be written (logging then goes to stderr only).
pub fn for_run(config: &crate::config::Config) -> Option<RotatingFile> {
    let state_dir = crate::os::paths::state_dir(&config.data_dir);
    // A state dir that is not ours is refused by `run` itself, with the reason.
    crate::instance::private_dir::prepare_state_dir(config).ok()?;
    match RotatingFile::open(&state_dir) {
        Ok(file) => Some(file),
        Err(e) => {
            eprintln!(
                "warning: no log file in {} ({e}); logging to stderr only",
                state_dir.display()
            );
            None
        }
    }
}

/// An append-only writer that rotates itself. Wrap it in a `Mutex` to hand it to
/// tracing-subscriber (`Mutex<W: Write>` is a `MakeWriter`).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl RotatingFile {
    pub fn open(state_dir: &Path) -> io::Result<RotatingFile> {
        Self::with_limit(state_dir, MAX_BYTES)
    }

    pub fn with_limit(state_dir: &Path, max_bytes: u64) -> io::Result<RotatingFile> {
        std::fs::create_dir_all(state_dir)?;
        let path = paths(state_dir).0;
        let file = open_append(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file,
            written,
            max_bytes,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let rotated = self.path.with_file_name(format!("{FILE}.1"));
        std::fs::rename(&self.path, rotated)?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Mode 0600 (PostgreSQL's `log_file_mode` default: lines may quote SQL), never through a
/// symlink.
fn open_append(path: &Path) -> io::Result<File> {
    crate::instance::private_dir::open_append(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Rotate between events (tracing writes one event per call), never inside one.
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the old file rather than losing lines.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The last `n` lines of the log (across the rotated file), or all of them.
pub fn tail(state_dir: &Path, n: Option<usize>) -> io::Result<Vec<String>> {
    let (current, rotated) = paths(state_dir);
    let mut lines: Vec<String> = Vec::new();
    for path in [rotated, current] {
        match std::fs::read(&path) {
            Ok(bytes) => lines.extend(String::from_utf8_lossy(&bytes).lines().map(String::from)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(n) = n {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_tails_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingFile::with_limit(dir.path(), 20).unwrap();
        for i in 0..6 {
            // One write per event, as tracing-subscriber writes them; 7 bytes each.
            log.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let (current, rotated) = paths(dir.path());
        assert!(std::fs::metadata(&current).unwrap().len() <= 20);
        assert!(rotated.exists());
        assert_eq!(tail(dir.path(), Some(2)).unwrap(), ["line 4", "line 5"]);
        assert_eq!(tail(dir.path(), None).unwrap().last().unwrap(), "line 5");
    }
}
