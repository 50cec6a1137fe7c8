//! The project file, `pgwarden.toml`: what a `compose.yaml` service gave a repository.
//!
//! Found like `compose.yaml` or `Cargo.toml`: in the current directory or the nearest parent
//! that has one, unless the command line names a directory (`--project-dir DIR`) or the file
//! itself (`-f FILE`). It takes the config file's keys ([`crate::config::Layer`]); relative
//! paths in it are resolved against its directory. Its instance is named after that directory
//! unless `name` is set, so its data lives under the user's data directory keyed by the name
//! (`~/.local/share/pgwarden/<name>/16/data`), not in the source tree unless `data_dir` asks.
//! It sits above the user's config file and below the environment and the flags.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The project file's name.
pub const FILE_NAME: &str = "pgwarden.toml";

/// How the command line chose the project (set once by `main`, read by [`crate::config`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Choice {
    /// The current directory or its nearest parent with a `pgwarden.toml`.
    #[default]
    Search,
    /// `--project-dir DIR`: `DIR/pgwarden.toml`, which must exist.
    Dir(PathBuf),
    /// `-f FILE`: this file, which must exist.
    File(PathBuf),
}

/// A project file that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Absolute path of the `pgwarden.toml`.
    pub file: PathBuf,
    /// Its directory: relative paths in the file are taken from here.
    pub dir: PathBuf,
    /// The instance name the directory gives (the file's `name` key overrides it).
    pub default_name: String,
}

static CHOICE: OnceLock<Choice> = OnceLock::new();

/// Records the command line's choice for this process (first call wins).
pub fn choose(choice: Choice) {
    let _ = CHOICE.set(choice);
}

/// The project this process works in, if any (by the recorded choice, from the current dir).
pub fn current() -> Result<Option<Project>> {
    let choice = CHOICE.get().cloned().unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    find(&choice, &cwd)
}

/// Finds the project `choice` names, searching from `cwd`.
pub fn find(choice: &Choice, cwd: &Path) -> Result<Option<Project>> {
    let file = match choice {
        Choice::Search => match cwd
            .ancestors()
            .map(|d| d.join(FILE_NAME))
            .find(|f| f.is_file())
        {
            Some(file) => file,
            None => return Ok(None),
        },
        Choice::Dir(dir) => {
            let file = cwd.join(dir).join(FILE_NAME);
            if !file.is_file() {
                return Err(missing(&file, "--project-dir"));
            }
            file
        }
        Choice::File(file) => {
            let file = cwd.join(file);
            if !file.is_file() {
                return Err(missing(&file, "-f"));
            }
            file
        }
    };
    let file = std::path::absolute(&file).unwrap_or(file);
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok(Some(Project {
        default_name: name_for(&dir),
        file,
        dir,
    }))
}

fn missing(file: &Path, flag: &str) -> Error {
    Error::Config {
        problems: vec![format!(
            "{flag}: {} does not exist (create one with `pgwarden init` in that directory)",
            file.display()
        )],
    }
}

/// An instance name from a directory's name: letters, digits, `-` and `_` kept, anything else
/// becoming `-`, at most 40 characters; `project` for a name with nothing usable in it.
pub fn name_for(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').chars().take(40).collect();
    if name.is_empty() || name == crate::config::DEFAULT_INSTANCE {
        // `default` is the unnamed instance's name; a project never takes it.
        format!(
            "{}-project",
            if name.is_empty() { "pgwarden" } else { &name }
        )
    } else {
        name
    }
}

/// The commented starter file `pgwarden init` writes: the seed's service.
pub const STARTER: &str = r#"# pgwarden.toml: this project's PostgreSQL 16, found by every pgwarden command run in
# this directory or below it (like compose.yaml). Same keys as ~/.config/pgwarden/config.toml;
# relative paths are taken from this file's directory. Environment variables (POSTGRES_*,
# PGWARDEN_*) and flags override what is set here.

# The instance name; default: this directory's name. Its data lives in the user's data
# directory under that name (~/.local/share/pgwarden/<name>/16/data, /var/lib/pgwarden/... as root).
# name = "myapp"

# Where clients connect (the postgres:16 service this replaces: 127.0.0.1:5433).
port = 5433
listen_address = "127.0.0.1"

# The role, its password and the database, created on first launch and kept in step at every
# start (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB override them).
user = "trader"
password = "trader"
database = "trader"
# Or keep the password out of the repository:
# password_file = "./secrets/pg-password"

# Scripts (*.sql, *.sql.gz, *.sql.xz, *.sh) run once when the cluster is created, like the
# image's /docker-entrypoint-initdb.d.
# init_dir = "./db/init"

# Keep the cluster in the source tree instead (add it to .gitignore):
# data_dir = "./.pgdata"

# Server settings, passed to postgres as -c key=value.
# [server]
# shared_buffers = "128MB"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_in_the_nearest_parent() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().join("my app");
        let deep = project.join("src/bin");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find(&Choice::Search, &deep).unwrap(), None);
        std::fs::write(project.join(FILE_NAME), "").unwrap();
        let found = find(&Choice::Search, &deep).unwrap().unwrap();
        assert_eq!(found.file, project.join(FILE_NAME));
        assert_eq!(found.default_name, "my-app");
        let by_dir = find(&Choice::Dir(project.clone()), root.path()).unwrap();
        assert_eq!(by_dir.unwrap().dir, project);
        let err = find(&Choice::File("nope.toml".into()), root.path()).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn names_are_usable_instance_names() {
        assert_eq!(name_for(Path::new("/src/shop.api")), "shop-api");
        assert_eq!(name_for(Path::new("/src/default")), "default-project");
        assert_eq!(name_for(Path::new("/")), "pgwarden-project");
        assert_eq!(name_for(Path::new(&"x".repeat(60))).len(), 40);
    }

    #[test]
    fn the_starter_file_parses_as_a_config_layer() {
        let layer: crate::config::Layer = toml::from_str(STARTER).unwrap();
        assert_eq!(layer.port, Some(5433));
        assert_eq!(layer.user.as_deref(), Some("trader"));
    }
}
