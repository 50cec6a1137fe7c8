//! The instance: which one this is, where its state lives, and who holds it.
//!
//! - [`lock`]: one supervisor per data directory (an flock held for pgwarden's whole life).
//! - [`registry`]: instances by name, names exclusive while they run.
//! - [`remembered`]: the settings an instance was started with, in its state directory, never
//!   the password.
//! - [`launch`]: the settings of one launch computed from the config.
//! - [`private_dir`]: state directories no other user can have prepared.
//! - [`preflight`]: checks before anything changes.
//! - [`status`]: the supervisor's state and status record, which the commands read and the
//!   supervisor writes.
//! - [`logfile`]: the rotated log of `run`, in the state directory.

pub mod launch;
pub mod lock;
pub mod logfile;
pub mod preflight;
pub mod private_dir;
pub mod registry;
pub mod remembered;
pub mod status;
