//! Whether the kernel's OOM killer struck: the `oom_kill` count in the `memory.events` of
//! pgwarden's cgroup (v2), which the postmaster shares (systemd puts the whole service in one).
//! A SIGKILL while that count grew is the OOM killer's, and `memory.max` says which limit.

use std::path::PathBuf;

/// This process's cgroup directory (cgroup v2: the `0::/path` line).
fn cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// The cgroup's `oom_kill` count so far; `None` where it cannot be read.
pub fn kills() -> Option<u64> {
    let text = std::fs::read_to_string(cgroup_dir()?.join("memory.events")).ok()?;
    parse_oom_kill(&text)
}

fn parse_oom_kill(events: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == "oom_kill")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The cgroup's memory limit in words (`memory.max`), e.g. `512 MiB`, or `no limit`.
pub fn memory_limit() -> String {
    let text = cgroup_dir()
        .and_then(|d| std::fs::read_to_string(d.join("memory.max")).ok())
        .unwrap_or_default();
    match text.trim() {
        "" => "unknown".into(),
        "max" => "no limit on this cgroup".into(),
        bytes => match bytes.parse::<u64>() {
            Ok(b) => format!("{} MiB", b / (1024 * 1024)),
            Err(_) => bytes.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_oom_kill_count() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(super::parse_oom_kill(events), Some(2));
        assert_eq!(super::parse_oom_kill("low 0\n"), None);
    }
}
