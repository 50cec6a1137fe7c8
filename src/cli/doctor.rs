//! The arguments of `pgwarden doctor` (run by [`crate::commands::doctor`]).

use crate::cli::{BinaryFlags, InstanceArgs};
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Checks what the server needs, without changing anything: the user postgres runs as, \
the binaries and their shared libraries, timezone data, a UTF-8 locale, the port, the data directory's \
owner, mode and PG_VERSION, and free disk space. One line per check; exit 1 if any fails.",
    after_help = "Examples:\n  pgwarden doctor\n  pgwarden doctor --data-dir /srv/pg --port 5544"
)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// The same source flags as `run`, so doctor checks the binaries run would use.
    #[command(flatten)]
    pub binaries: BinaryFlags,
}
