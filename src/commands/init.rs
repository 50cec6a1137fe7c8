//! `pgwarden init`: write the commented starter `pgwarden.toml` and say how to use it.

use crate::config::project::{self, FILE_NAME, STARTER};
use crate::error::{Error, IoContext, Result};
use clap::Args;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Writes pgwarden.toml, the project file, into DIR (default: the current directory): \
the seed's service (127.0.0.1:5433, user, password and database `trader`), every key commented. \
Every pgwarden command run in that directory or below it then uses it, like compose.yaml. An \
existing file is never overwritten.

With --from-compose, pgwarden.toml is written beside a docker compose file instead, from its \
postgres:16 service: port, user, database, password file, initdb arguments, server settings, init \
scripts and the data volume to take over (data_from), one comment per key, and a summary of what \
pgwarden handles itself and what is not carried over. Without FILE the compose file is found as \
docker compose finds it (compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml in this \
directory, then its parents), and read only if you or root own it and every directory above it.",
    after_help = "Examples:\n  pgwarden init && pgwarden start\n  pgwarden init ./services/api\n  \
pgwarden init --from-compose && pgwarden start\n  pgwarden init --from-compose deploy/compose.yaml --service db"
)]
pub struct InitArgs {
    /// The project directory [default: the current directory].
    #[arg(value_name = "DIR")]
    #[arg(conflicts_with = "from_compose")]
    pub dir: Option<PathBuf>,

    /// Write pgwarden.toml from the postgres service of a docker compose file (FILE, else the
    /// one found from here upwards), beside that file.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub from_compose: Option<Option<PathBuf>>,

    /// The compose service to take (needed when several run the postgres image).
    #[arg(long, value_name = "NAME", requires = "from_compose")]
    pub service: Option<String>,
}

pub fn run(args: InitArgs) -> Result<i32> {
    if let Some(file) = &args.from_compose {
        return from_compose(file.as_deref(), args.service.as_deref());
    }
    let dir = crate::os::paths::absolute(&args.dir.unwrap_or_else(|| PathBuf::from(".")));
    let path = dir.join(FILE_NAME);
    // 0644 whatever the umask (a user-private-group umask of 002 would make it group-writable):
    // a project file others can write is refused when found (config::trust).
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
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
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .io("cannot set the mode of", &path)?;
    file.write_all(STARTER.as_bytes())
        .io("cannot write", &path)?;
    let name = project::name_for(&dir);
    println!("created: {} (instance {name:?})", path.display());
    println!("next:    pgwarden start     # from this directory or any below it");
    println!("         pgwarden url | psql | exec -- CMD | stop | reset");
    Ok(0)
}

/// `init --from-compose [FILE] [--service NAME]`: write the file, then print what was carried
/// over, what pgwarden handles itself, what was not carried over and what is left to do.
fn from_compose(file: Option<&std::path::Path>, service: Option<&str>) -> Result<i32> {
    let cwd = std::env::current_dir().io("cannot read the working directory", ".")?;
    let env = |name: &str| std::env::var(name).ok();
    let written = crate::compose::init(file, service, &cwd, &env)?;
    let plan = &written.plan;
    println!(
        "created: {} from the service {:?} of {}",
        written.path.display(),
        plan.service,
        plan.compose_file.display()
    );
    let carried: Vec<String> = plan
        .keys
        .iter()
        .chain(&plan.server)
        .map(|e| format!("{} ({})", e.key, e.comment))
        .collect();
    for (title, lines) in [
        ("carried over", &carried),
        ("handled by pgwarden", &plan.handled),
        ("not carried over", &plan.not_carried),
        ("to do", &plan.actions),
    ] {
        if lines.is_empty() {
            continue;
        }
        println!("{title}:");
        for line in lines.iter() {
            println!("  - {line}");
        }
    }
    println!("next:    pgwarden start     # from this directory or any below it");
    Ok(0)
}
