//! `pgwarden restart`: stop the instance if it runs, then `start` it again with the settings
//! it was started with (and whatever this command line changes).

use crate::cli::StartArgs;
use crate::commands::common::Instance;
use crate::commands::{start, stop};
use crate::config::Config;
use crate::config::ShutdownMode;
use crate::error::Result;

pub async fn run(args: StartArgs) -> Result<i32> {
    let sources = crate::registry::with_remembered_flags(args.run.sources())?;
    let instance = Instance::from_config(Config::load(&sources)?)?;
    eprintln!(
        "{}",
        stop::stop_instance(&instance, ShutdownMode::Fast, None).await?
    );
    start::start_verb(args, "restart").await
}
