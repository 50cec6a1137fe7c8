//! The detached maker of a pool entry ([`super::pool`]): `pgwarden pool-fill` with the flags
//! of the `--ephemeral` server that starts it ([`crate::commands::RunArgs::command_line`]).
//!
//! Why a process of its own: the pool was filled on the ephemeral supervisor's background
//! thread, and the stop cancelled that copy. In a loop of short `exec --ephemeral` runs the
//! stop comes right after CMD, so no entry was ever made and every exec copied the template
//! (34.7 ms from the pool against 66.4 ms copying, quiet). The maker outlives the instance:
//!
//! - `SCHED_IDLE`, nice 19 and idle I/O from its start ([`crate::os::background::spawn_idle`]),
//!   then a session of its own, which it enters before its work
//!   ([`crate::os::background::enter_idle_session`]): not in the instance's process group, so
//!   its stop does not reach it, and it takes no CPU from anyone who wants it;
//! - its standard streams are `/dev/null`: a caller that reads `exec`'s output to its end does
//!   not wait for the maker;
//! - bounded: started only when [`super::pool::wants_entry`]; it makes at most one entry under
//!   the key's lock and exits. A SIGTERM cancels it (its working directory removed); after a
//!   kill -9 the next maker's sweep removes its working directory (pid + start time).
//!
//! The command line is built from the parsed flags by the command that supervises the server
//! (the supervisor cannot import the commands), so the maker resolves the same settings with
//! the same trust rules; it finds the installation and the template the way a first launch
//! does and runs none of the installation's programs.

use std::ffi::OsString;
use std::process::Stdio;

/// The hidden verb of the maker.
pub const VERB: &str = "pool-fill";

/// Starts the maker (`command_line`: its words after the program) and reaps it on a thread of
/// its own when it ends. Best effort: a maker that cannot start means the next start copies.
pub fn spawn(command_line: &[OsString]) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!("cannot start the pool maker: {e}");
            return;
        }
    };
    let mut command = std::process::Command::new(exe);
    command
        .args(command_line)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Idle from its start; it enters a session of its own itself (`pool-fill` starts so).
    match crate::os::background::spawn_idle(&mut command) {
        Ok(mut child) => {
            tracing::debug!(
                pid = child.id(),
                "started a pool maker: it makes the next --ephemeral start's cluster"
            );
            // Reaped here, so that a long-running supervisor keeps no zombie; the maker is
            // never signalled by its starter.
            let _ = std::thread::Builder::new()
                .name("pool-maker-reaper".into())
                .spawn(move || child.wait());
        }
        Err(e) => tracing::debug!("cannot start the pool maker: {e}"),
    }
}
