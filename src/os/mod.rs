//! The operating system, wrapped: processes, users, files and directories.
//!
//! - [`paths`]: default locations (system or user).
//! - [`procfs`]: who holds a file or socket open, a process's children, from /proc.
//! - [`privilege`]: who the children — every program of an installation — run as.
//! - [`safe_fs`]: a directory nothing written through it can escape (archive extraction).
//! - [`json_file`]: records written atomically.
//! - [`background`]: the low priority of background work.
//! - [`cancel`]: background work stopped by killing its children.
//! - [`deletion`]: a reset or replaced cluster deleted in the background.
//! - [`fd_limit`]: the open-file limit `run` raises.
//! - [`pidfd`]: waiting for another process's exit (`stop`) without polling.

pub mod background;
pub mod cancel;
pub mod deletion;
pub mod fd_limit;
pub mod json_file;
pub mod pacer;
pub mod paths;
pub mod pidfd;
pub mod privilege;
pub mod procfs;
pub mod safe_fs;
