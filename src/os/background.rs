//! Low priority for work nobody waits for (the background template fill, a reset's deletion):
//! nice 19 and the idle I/O class, which the kernel serves only when no one else needs the disk.
//! Both are per thread on Linux and inherited by the processes a thread forks. Best effort.
//!
//! A server that runs beside a busy one for minutes (backup verify's throwaway server) needs
//! more than nice 19: Linux (with autogroups, the default) first shares the CPU between
//! sessions and only then by nice inside one, so a niced server in the caller's session still
//! takes half the cores from the running server's session. [`idle_session`] gives it a
//! session of its own at nice 19 and `SCHED_IDLE`; [`again_in_idle_session`] runs a whole
//! command (`backup verify`: its unpack, then its throwaway server) that way.

use std::os::unix::process::CommandExt;

const IOPRIO_WHO_PROCESS: nix::libc::c_int = 1;
const IOPRIO_CLASS_IDLE: nix::libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: nix::libc::c_int = 13;

/// Lowers the calling thread (0: the calling thread; both calls take a thread id on Linux).
/// Returns the error of the first call that failed, if any.
fn lower(tid: nix::libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain system calls on one thread's own id.
    let nice =
        unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, 19) };
    if nice != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let io = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if io != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Nice 19 and idle I/O for the calling thread and what it forks from now on.
pub fn lower_this_thread() {
    if let Err(e) = lower(nix::unistd::gettid().as_raw()) {
        tracing::debug!("cannot lower this thread's priority: {e}");
    }
}

/// Nice 19 and idle I/O for `command`'s process (set between fork and exec).
pub fn lower_command(command: &mut std::process::Command) {
    // SAFETY: two system calls, async-signal-safe; errors are ignored (best effort).
    unsafe {
        command.pre_exec(|| {
            let _ = lower(0);
            Ok(())
        });
    }
}

/// Set in the environment of a process [`spawn_idle`] starts; [`lower_if_asked`] reads it.
const IDLE_ENV: &str = "PGWARDEN_IDLE";

/// Spawns `command` (a `pgwarden` verb), which lowers itself to `SCHED_IDLE`, nice 19 and idle
/// I/O first thing ([`lower_if_asked`], asked by an environment variable). Not by a `pre_exec`
/// hook: without one, std spawns by `posix_spawn` (a vfork) rather than a fork that copies
/// this process's page tables, and this thread waits only for the child's exec, not for the
/// work of an idle child on a busy machine. A fork for the pool maker beside `exec
/// --ephemeral`'s CMD delayed CMD's start by 1–2 ms.
pub fn spawn_idle(command: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    command.env(IDLE_ENV, "1").spawn()
}

/// First thing in `main`: a process [`spawn_idle`] started takes `SCHED_IDLE`, nice 19 and
/// idle I/O (inherited by its threads and children) — when its command line (`args`) names one
/// of `verbs`, the background helpers, as a whole word. The variable alone lowers nothing: one
/// left in a shell's environment must not turn a server idle. It is removed either way, so that
/// nothing started from here inherits it.
pub fn lower_if_asked(args: &[std::ffi::OsString], verbs: &[&str]) {
    if std::env::var_os(IDLE_ENV).is_none() {
        return;
    }
    // SAFETY: called first in `main`, before any other thread exists.
    unsafe { std::env::remove_var(IDLE_ENV) };
    if args
        .iter()
        .skip(1)
        .any(|arg| verbs.iter().any(|verb| arg == verb))
    {
        become_idle();
    }
}

/// `SCHED_IDLE`, nice 19 and idle I/O for the calling thread and what it starts from now on.
fn become_idle() {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on this thread's own id (0).
    let _ = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param) };
    lower_this_thread();
}

/// Puts this process in a session of its own at nice 19 in `SCHED_IDLE` with idle I/O, as
/// [`idle_session`] does for a child, from inside: for a process [`spawn_idle`] started (not
/// a group leader, so `setsid` succeeds). Best effort: what fails is logged at debug level.
/// The autogroup is lowered only in a session of its own: a group leader (one a shell started)
/// stays in its caller's session, whose autogroup — the whole terminal's — is not touched.
pub fn enter_idle_session() {
    match nix::unistd::setsid() {
        Ok(_) => {
            if let Err(e) = std::fs::write("/proc/self/autogroup", "19") {
                tracing::debug!("cannot lower this session's autogroup: {e}");
            }
        }
        Err(e) => tracing::debug!("cannot start a session of its own: {e}"),
    }
    become_idle();
}

/// A session of its own (and with it, on Linux, an autogroup of its own, at nice 19),
/// `SCHED_IDLE`, nice 19 and idle I/O for `command`'s process and everything it forks. Between
/// sessions the CPU is shared by their autogroups' weights first, so a busy session at nice 19
/// weighs 15 against a running server's 1024; inside it, a task of another policy that wakes
/// preempts an idle one at once. A machine busy everywhere (CI) slows such work a lot; nothing
/// in it may wait on a deadline shorter than its own work. The new session is its own process
/// group: stop it with `killpg(pid)`.
pub fn idle_session(command: &mut std::process::Command) {
    // SAFETY: setsid, open, write, close, sched_setscheduler, setpriority and ioprio_set are
    // async-signal-safe system calls on the child's own ids; nothing else runs between fork and
    // exec, and nothing here allocates.
    unsafe {
        command.pre_exec(|| {
            // The child of a fork is no group leader, so this fails only if the caller already
            // made it one (process_group): then it would not be the group that is signalled.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            let autogroup = nix::libc::open(c"/proc/self/autogroup".as_ptr(), nix::libc::O_WRONLY);
            if autogroup >= 0 {
                let _ = nix::libc::write(autogroup, b"19".as_ptr().cast(), 2);
                nix::libc::close(autogroup);
            }
            let param = nix::libc::sched_param { sched_priority: 0 };
            let _ = nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param);
            let _ = lower(0);
            Ok(())
        });
    }
}

/// Set, to the starting process's pid, in the process [`again_in_idle_session`] starts.
const IDLE_SESSION_ENV: &str = "PGWARDEN_IDLE_SESSION";

/// Runs this very command again (`args`: its command line after the program, as the command
/// builds it from its parsed flags; its environment, working directory and standard streams)
/// in an [`idle_session`] and returns that process's exit code (128+N for a signal N); `None`
/// in that second process, or when it cannot be started (the caller then does the work itself,
/// at its own priority). For work beside a running server that takes minutes (`backup
/// verify`): nice 19 in the caller's session would still take half the cores from the server's
/// session. With `pace_against` (the running server's postmaster), the second process and its
/// children are also paused while that server is busy ([`crate::os::pacer`]). The second
/// process dies with this one (parent-death signal); what it leaves is swept by the next run of
/// the same command.
///
/// Call it from a thread that lives until the command ends (the parent-death signal follows
/// the thread that forked, not the process).
pub fn again_in_idle_session(
    args: Vec<std::ffi::OsString>,
    pace_against: Option<u32>,
) -> Option<i32> {
    if std::env::var_os(IDLE_SESSION_ENV).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .env(IDLE_SESSION_ENV, std::process::id().to_string());
    let parent = nix::unistd::getpid();
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("pgwarden exited"));
            }
            Ok(())
        });
    }
    idle_session(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::debug!("cannot run this command in an idle session: {e}; running it here");
            return None;
        }
    };
    let mut pacer = pace_against.map(|server| crate::os::pacer::Pacer::new(child.id(), server));
    let status = loop {
        let Some(pacer) = pacer.as_mut() else {
            break child.wait();
        };
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {
                pacer.tick();
                std::thread::sleep(crate::os::pacer::TICK);
            }
            Err(e) => break Err(e),
        }
    };
    drop(pacer);
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            tracing::warn!("cannot wait for the verification process: {e}");
            return Some(1);
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Some(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    )
}

/// The pid that names this command's work (its scratch directories, which the next run sweeps
/// once that pid is gone): the process the user started — this one, or the one that runs it
/// again in an idle session (its parent, whose death ends it).
pub fn command_pid() -> u32 {
    let own = std::process::id();
    let starter =
        std::env::var_os(IDLE_SESSION_ENV).and_then(|pid| pid.to_str()?.parse::<u32>().ok());
    match starter {
        Some(pid) if nix::unistd::getppid().as_raw() as u32 == pid => pid,
        _ => own,
    }
}
