//! Whether the kernel's OOM killer struck: the `oom_kill` count of the memory cgroup pgwarden
//! is in, which the postmaster shares (systemd puts the whole service in one). A SIGKILL
//! while that count grew is the OOM killer's, and the cgroup's limit says which one.
//!
//! Both cgroup versions: v2's `memory.events` and `memory.max`, or — where the memory
//! controller is a v1 hierarchy (older hosts, many containers' "hybrid" layout) — v1's
//! `memory.oom_control` and `memory.limit_in_bytes`. The cgroup's directory is found from
//! `/proc/self/cgroup` and the hierarchy's mount point in `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

/// The memory cgroup of this process: its directory and which version it is.
#[derive(Debug, PartialEq, Eq)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    /// A v1 `memory` hierarchy (else the v2 unified one).
    pub v1: bool,
}

impl MemoryCgroup {
    /// This process's memory cgroup; `None` where /proc or the hierarchy cannot be read.
    pub fn find() -> Option<MemoryCgroup> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        locate(&cgroups, &mounts)
    }

    fn read(&self, v2: &str, v1: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(if self.v1 { v1 } else { v2 })).ok()
    }
}

/// The memory cgroup's directory: the v1 `memory` hierarchy when one is mounted (then the
/// unified hierarchy has no memory controller), else the v2 one.
fn locate(cgroups: &str, mountinfo: &str) -> Option<MemoryCgroup> {
    let v1_path = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let v2_path = cgroups.lines().find_map(|l| l.strip_prefix("0::"));
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options… - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, super_options) = (right.next(), right.nth(1).unwrap_or(""));
        let (path, v1) = match fstype {
            Some("cgroup") if super_options.split(',').any(|o| o == "memory") => (v1_path, true),
            Some("cgroup2") if v1_path.is_none() => (v2_path, false),
            _ => continue,
        };
        let path = path?;
        // A mount of part of the hierarchy (a container's view): strip the mounted root.
        let relative = match *root {
            "/" => path,
            root => path.strip_prefix(root).unwrap_or(path),
        };
        let dir = Path::new(&unescape(mount_point)).join(relative.trim_start_matches('/'));
        return Some(MemoryCgroup { dir, v1 });
    }
    None
}

/// mountinfo escapes spaces and such as `\040` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(o)) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup's `oom_kill` count so far; `None` where it cannot be read.
pub fn kills() -> Option<u64> {
    let text = MemoryCgroup::find()?.read("memory.events", "memory.oom_control")?;
    parse_oom_kill(&text)
}

/// The `oom_kill` line of v2's `memory.events` and of v1's `memory.oom_control` alike.
fn parse_oom_kill(events: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == "oom_kill")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The cgroup's memory limit in words, e.g. `512 MiB`, or `no limit on this cgroup`.
pub fn memory_limit() -> String {
    let text = MemoryCgroup::find()
        .and_then(|c| c.read("memory.max", "memory.limit_in_bytes"))
        .unwrap_or_default();
    limit_in_words(text.trim())
}

fn limit_in_words(text: &str) -> String {
    match text {
        "" => "unknown".into(),
        "max" => "no limit on this cgroup".into(),
        bytes => match bytes.parse::<u64>() {
            // v1 says "no limit" as the largest page-aligned i64.
            Ok(b) if b >= 1 << 62 => "no limit on this cgroup".into(),
            Ok(b) => format!("{} MiB", b / (1024 * 1024)),
            Err(_) => bytes.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_count() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(events), Some(2));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(parse_oom_kill(oom_control), Some(5));
        assert_eq!(parse_oom_kill("low 0\n"), None);
    }

    #[test]
    fn finds_the_v2_cgroup() {
        let cgroups = "0::/system.slice/pgwarden.service\n";
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            locate(cgroups, mounts),
            Some(MemoryCgroup {
                dir: "/sys/fs/cgroup/system.slice/pgwarden.service".into(),
                v1: false
            })
        );
    }

    #[test]
    fn finds_the_v1_memory_hierarchy_of_a_hybrid_host() {
        let cgroups = "9:name=systemd:/\n4:memory:/ci/job7\n1:cpu:/\n0::/\n";
        let mounts = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      40 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate(cgroups, mounts),
            Some(MemoryCgroup {
                dir: "/sys/fs/cgroup/memory/ci/job7".into(),
                v1: true
            })
        );
    }

    #[test]
    fn a_container_view_of_the_hierarchy_is_joined_below_its_mounted_root() {
        let cgroups = "0::/kubepods/pod1/c1\n";
        let mounts = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate(cgroups, mounts).map(|c| c.dir),
            Some("/sys/fs/cgroup x/c1".into())
        );
    }

    #[test]
    fn limits_in_words() {
        assert_eq!(limit_in_words("max"), "no limit on this cgroup");
        assert_eq!(
            limit_in_words("9223372036854771712"),
            "no limit on this cgroup"
        );
        assert_eq!(limit_in_words("536870912"), "512 MiB");
        assert_eq!(limit_in_words(""), "unknown");
    }
}
