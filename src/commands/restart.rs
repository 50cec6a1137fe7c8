//! `pgwarden restart`: stop the instance if it runs, then `start` it again with the settings
//! it was started with (and whatever this command line changes).

use crate::commands::Globals;
use crate::commands::start::StartArgs;
use crate::commands::{start, stop};
use crate::config::ShutdownMode;
use crate::error::Result;
use crate::instance::resolve::Resolved;

pub async fn run(args: StartArgs, resolved: Resolved, globals: &Globals) -> Result<i32> {
    let instance = resolved.clone().observe();
    eprintln!(
        "{}",
        stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
    );
    start::start(args, resolved, globals).await
}
