//! What the kernel's /proc says about other processes: who holds a file open, what a process
//! is called. Best effort: a process that exits while it is read is left out.

use std::path::Path;

/// The pids of the processes with a file descriptor whose target (`/proc/PID/fd/N`'s link:
/// a path, or `socket:[INODE]`) satisfies `matches`.
pub fn fd_holders(matches: impl Fn(&Path) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| matches(&target)))
                .then_some(pid)
        })
        .collect()
}

/// A process's command name (`/proc/PID/comm`).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_holding_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let _file = std::fs::File::create(&path).unwrap();
        let holders = fd_holders(|target| target == path);
        assert!(holders.contains(&std::process::id()), "{holders:?}");
        assert!(comm(std::process::id()).is_some());
    }
}
