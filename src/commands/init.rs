//! `pgwarden init`: write the commented starter `pgwarden.toml` and say how to use it.

use crate::error::{Error, IoContext, Result};
use crate::project::{self, FILE_NAME, STARTER};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Writes pgwarden.toml, the project file, into DIR (default: the current directory): \
the seed's service (127.0.0.1:5433, user, password and database `trader`), every key commented. \
Every pgwarden command run in that directory or below it then uses it, like compose.yaml. An \
existing file is never overwritten.",
    after_help = "Examples:\n  pgwarden init && pgwarden start\n  pgwarden init ./services/api"
)]
pub struct InitArgs {
    /// The project directory [default: the current directory].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> Result<i32> {
    let dir = crate::paths::absolute(&args.dir.unwrap_or_else(|| PathBuf::from(".")));
    let path = dir.join(FILE_NAME);
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Config {
                problems: vec![format!(
                    "{} already exists; pgwarden init never overwrites it\n    \
                     help: edit it, or remove it first to start from the template again",
                    path.display()
                )],
            });
        }
        Err(e) => return Err(e).io("cannot create", &path),
    };
    file.write_all(STARTER.as_bytes())
        .io("cannot write", &path)?;
    let name = project::name_for(&dir);
    println!("created: {} (instance {name:?})", path.display());
    println!("next:    pgwarden start     # from this directory or any below it");
    println!("         pgwarden url | psql | exec -- CMD | stop | reset");
    Ok(0)
}
