//! Background work that pauses while a server is busy.
//!
//! Scheduling priority is not enough on every machine: on the 2-core VM this project is
//! measured on, a busy loop in `SCHED_IDLE`, in a session of its own whose autogroup is at
//! nice 19, still cut a running server's pgbench TPC-B tps to 0.55× (two loops) and 0.85×
//! (one) — what it costs is not CPU time the scheduler hands out but the shared hardware (caches,
//! the hypervisor's cores) and the preemption of a core on every wake-up of the server's
//! backends. The only work that does not disturb a latency-bound server is work that does not
//! run while that server works. So a [`Pacer`] watches the server's CPU time (its postmaster
//! and backends, from /proc) every [`TICK`] and stops the background work's processes
//! (SIGSTOP) while the server was busy in the last tick, resuming them (SIGCONT) when it was
//! not — except that the work always runs one tick in [`MIN_RUN_EVERY`], so that it ends even
//! beside a server that is never idle (at a twentieth of its speed). One tick in ten cost a busy
//! server's pgbench 12% (0.88×): each run tick wakes the work and refills caches, more than its
//! share of time.

use crate::os::procfs;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::time::Duration;

/// How often the server's activity is looked at.
pub const TICK: Duration = Duration::from_millis(50);
/// The work runs at least one tick in this many.
pub const MIN_RUN_EVERY: u32 = 20;
/// CPU the server may use in a tick, as a share of one core, and still count as idle (its
/// own background: the checkpointer, the WAL writer, autovacuum's launcher).
const IDLE_SHARE: f64 = 0.03;

/// Pauses the process tree of `work` (its process group, and the process group of each of its
/// children: a throwaway server in a session of its own) while the process tree of `server`
/// is busy.
pub struct Pacer {
    work: u32,
    server: u32,
    last: Option<u64>,
    paused_ticks: u32,
    stopped: bool,
    ticks_per_second: f64,
}

impl Pacer {
    pub fn new(work: u32, server: u32) -> Pacer {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
        Pacer {
            work,
            server,
            last: None,
            paused_ticks: 0,
            stopped: false,
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        }
    }

    /// One tick: looks at the server's CPU time since the last tick and stops or resumes the
    /// work. Call it every [`TICK`].
    pub fn tick(&mut self) {
        let now = server_cpu_ticks(self.server);
        let busy = match (self.last, now) {
            (Some(before), Some(now)) => {
                let used = now.saturating_sub(before) as f64 / self.ticks_per_second;
                used > IDLE_SHARE * TICK.as_secs_f64()
            }
            // The server gone (or not yet seen): nothing to protect.
            _ => false,
        };
        self.last = now;
        let pause = busy && self.paused_ticks + 1 < MIN_RUN_EVERY;
        if pause {
            self.paused_ticks += 1;
        } else {
            self.paused_ticks = 0;
        }
        if pause != self.stopped {
            self.signal(if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            });
            self.stopped = pause;
        }
    }

    /// Lets the work run on (before waiting for it without pacing, and on every way out).
    pub fn release(&mut self) {
        if self.stopped {
            self.signal(Signal::SIGCONT);
            self.stopped = false;
        }
    }

    /// The work's process group, and the process group of each of its children that leads one.
    fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.work as i32), signal);
        for child in procfs::children(self.work) {
            let _ = killpg(Pid::from_raw(child as i32), signal);
            // A child in the work's own group got it above; one that leads no group is sent it
            // by pid (harmless twice: SIGSTOP and SIGCONT are idempotent).
            let _ = kill(Pid::from_raw(child as i32), signal);
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.release();
    }
}

/// CPU time (clock ticks) of the server `postmaster`: its own, its reaped children's, and its
/// live children's (the backends).
fn server_cpu_ticks(postmaster: u32) -> Option<u64> {
    let own = stat_times(postmaster, true)?;
    let children: u64 = procfs::children(postmaster)
        .into_iter()
        .filter_map(|pid| stat_times(pid, false))
        .sum();
    Some(own + children)
}

/// utime + stime (and with `reaped`, cutime + cstime) of `pid` from /proc/PID/stat.
fn stat_times(pid: u32, reaped: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is field 14, i.e. the 12th
    // after ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let mut sum = field(14)? + field(15)?;
    if reaped {
        sum += field(16)? + field(17)?;
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }

    /// A busy "server" stops the work (all but one tick in twenty); an idle one lets it run.
    #[test]
    fn work_is_stopped_while_the_server_is_busy_and_runs_when_it_is_idle() {
        let spawn = |script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script]).stdout(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command.spawn().unwrap()
        };
        let mut server = spawn("while :; do :; done");
        let mut work = spawn("sleep 30 & wait");
        let mut pacer = Pacer::new(work.id(), server.id());
        let (mut stopped, mut ticks) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            pacer.tick();
            std::thread::sleep(TICK);
            ticks += 1;
            if state(work.id()) == 'T' {
                stopped += 1;
            }
        }
        assert!(
            stopped * 10 >= ticks * 7,
            "stopped {stopped} of {ticks} ticks"
        );
        assert!(stopped < ticks, "never let run");
        let _ = kill(Pid::from_raw(server.id() as i32), Signal::SIGKILL);
        server.wait().unwrap();
        for _ in 0..3 {
            pacer.tick();
            std::thread::sleep(TICK);
        }
        assert_ne!(state(work.id()), 'T', "still stopped beside no server");
        drop(pacer);
        let _ = killpg(Pid::from_raw(work.id() as i32), Signal::SIGKILL);
        work.wait().unwrap();
    }
}
