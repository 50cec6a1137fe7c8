//! `pgwarden init`: write the commented starter `pgwarden.toml` and say how to use it.

pub use crate::cli::init::InitArgs;
use crate::config::project::{self, FILE_NAME, STARTER};
use crate::error::{Error, IoContext, Result};
use std::io::Write;
use std::path::PathBuf;

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
