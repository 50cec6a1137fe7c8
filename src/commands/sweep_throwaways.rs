//! `pgwarden sweep-throwaways` (hidden): removes the caller's throwaway roots that no server
//! uses ([`crate::instance::abandoned::sweep_throwaway_roots`]), started detached by a
//! throwaway server on its way out. An input surface like any verb, but it takes no argument:
//! it looks only at the caller's own roots, with the checks every launch's sweep makes.

use crate::error::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SweepThrowawaysArgs {}

/// Exit 0 whatever it found; what it could not remove is logged (to `/dev/null` when a
/// stopping server started it; the next launch tries again).
pub fn run(_args: SweepThrowawaysArgs) -> Result<i32> {
    for root in crate::instance::abandoned::sweep_throwaway_roots() {
        tracing::debug!(root = %root.display(), "removed");
    }
    Ok(0)
}
