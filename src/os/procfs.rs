//! What the kernel's /proc says about other processes: who holds a file open, what a process
//! is called, its children. Best effort: a process that exits while it is read is left out.

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

/// The pids of the processes whose working directory is `dir` (the same directory: device
/// and inode, so that a process in a container, whose `/proc/PID/cwd` names the path inside
/// it, is found too). PostgreSQL's processes all work in their data directory.
pub fn working_in(dir: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(wanted) = std::fs::metadata(dir).map(|m| (m.dev(), m.ino())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::metadata(entry.path().join("cwd")).ok()?;
            ((cwd.dev(), cwd.ino()) == wanted).then_some(pid)
        })
        .collect()
}

/// A process's command name (`/proc/PID/comm`).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// The children of `pid` (every thread's `/proc/PID/task/TID/children`; without that file, a
/// scan of every process's parent).
pub fn children(pid: u32) -> Vec<u32> {
    let listed: Option<Vec<u32>> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .and_then(|tasks| {
            let mut all = Vec::new();
            for task in tasks.flatten() {
                let text = std::fs::read_to_string(task.path().join("children")).ok()?;
                all.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            Some(all)
        });
    listed.unwrap_or_else(|| {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let child: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let parent: u32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (parent == pid).then_some(child)
            })
            .collect()
    })
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

/// When process `pid` started (`/proc/PID/stat`'s 22nd field, clock ticks since boot): with
/// the pid, it names one process, not whichever later reuses the pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` ([`start_time`]) still runs.
pub fn alive_since(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

#[cfg(test)]
mod start_time_tests {
    #[test]
    fn names_this_process_and_no_other() {
        let me = std::process::id();
        let start = super::start_time(me).expect("this process has a start time");
        assert!(super::alive_since(me, start));
        assert!(!super::alive_since(me, start + 1));
    }
}
