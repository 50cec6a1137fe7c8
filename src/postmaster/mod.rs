//! A postgres process: spawn, log, stop — no policy about when.
//!
//! - [`temp_server`]: a server on the Unix socket only, for the first launch and its scripts.
//! - [`escalation`]: the stop of a postmaster, signal after signal.
//! - [`pid_file`]: `postmaster.pid` read as PostgreSQL writes it.
//! - [`server_log`]: a postmaster's end explained from its own lines.
//! - [`oom`]: the cgroup's OOM count.
//! - [`leftover_shmem`]: the shared memory a killed postmaster left.

pub mod escalation;
pub mod leftover_shmem;
pub mod oom;
pub mod pid_file;
pub mod server_log;
pub mod temp_server;
