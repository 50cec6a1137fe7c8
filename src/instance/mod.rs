//! The instance: which one this is, where its state lives, and who holds it.
//!
//! - [`resolve`]: which instance a command addresses, with which settings, decided once;
//!   `run` claims it, the commands that only read [`observe`] it.
//! - [`server_user`]: who the server runs as (as root, an existing cluster's owner).
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
//! - [`abandoned`]: the throwaway roots of killed `exec --ephemeral`s, swept by the next
//!   ephemeral launch.

pub mod abandoned;
pub mod launch;
pub mod lock;
pub mod logfile;
pub mod observe;
pub mod preflight;
pub mod private_dir;
pub mod registry;
pub mod remembered;
pub mod resolve;
pub mod server_user;
pub mod status;
