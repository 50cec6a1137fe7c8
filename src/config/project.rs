//! The project file, `pgwarden.toml`: what a `compose.yaml` service gave a repository.
//!
//! Found like `compose.yaml` or `Cargo.toml`: in the current directory or the nearest parent
//! that has one, unless the command line names a directory (`--project-dir DIR`) or the file
//! itself (`-f FILE`). It takes the config file's keys ([`crate::config::Layer`]); relative
//! paths in it are resolved against its directory. Its instance is named after that directory
//! unless `name` is set, so its data lives under the user's data directory keyed by the name
//! (`~/.local/share/pgwarden/<name>/16/data`), not in the source tree unless `data_dir` asks.
//! It sits above the user's config file and below the environment and the flags.
//!
//! A file found by searching is read only if [`super::trust`]'s rule passes it (it and every
//! directory above it are the user's or root's and writable by no one else, or the user opted
//! its directory in); otherwise the command fails naming the file and its owner. `-f` and
//! `--project-dir` are the user's own choice and are read as given; `--no-project` searches
//! for nothing.

use super::trust::{Kind, Trust};
use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The project file's name.
pub const FILE_NAME: &str = "pgwarden.toml";

/// How the command line chose the project (carried by [`crate::config::Sources`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Choice {
    /// The current directory or its nearest parent with a `pgwarden.toml`.
    #[default]
    Search,
    /// `--project-dir DIR`: `DIR/pgwarden.toml`, which must exist.
    Dir(PathBuf),
    /// `-f FILE`: this file, which must exist.
    File(PathBuf),
    /// `--no-project` (`PGWARDEN_NO_PROJECT`): no project file, none searched for.
    None,
}

/// The project file as a found file, for the trust rule's messages.
pub const FOUND: Kind = Kind {
    what: "project file",
    otherwise: "or name a file yourself with -f FILE (or --project-dir DIR), or say there is \
                no project here with --no-project (PGWARDEN_NO_PROJECT=1)",
};

/// A project file that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Absolute path of the `pgwarden.toml`.
    pub file: PathBuf,
    /// Its directory: relative paths in the file are taken from here.
    pub dir: PathBuf,
    /// The instance name the directory gives (the file's `name` key overrides it).
    pub default_name: String,
    /// The uid of the file's owner (`doctor` shows it).
    pub owner: u32,
    /// How the file was chosen.
    pub chosen: Chosen,
    /// The file's text, read once (by the trust rule when it was found).
    pub text: String,
}

/// How the project file in use was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// Found by searching, and it passed the trust rule by its owner and modes.
    Found,
    /// Found by searching, and read because the user opted this directory in.
    OptedIn(PathBuf),
    /// Named by `-f` or `--project-dir`.
    Named,
}

/// Finds the project `choice` names, searching from `cwd`; a found file must pass `trust`.
pub fn find(choice: &Choice, cwd: &Path, trust: &Trust) -> Result<Option<Project>> {
    let (file, flag) = match choice {
        Choice::None => return Ok(None),
        Choice::Search => return search(cwd, trust),
        Choice::Dir(dir) => (cwd.join(dir).join(FILE_NAME), "--project-dir"),
        Choice::File(file) => (cwd.join(file), "-f"),
    };
    if !file.is_file() {
        return Err(missing(&file, flag));
    }
    let file = std::path::absolute(&file).unwrap_or(file);
    let text = std::fs::read_to_string(&file).map_err(|source| Error::ConfigRead {
        path: file.clone(),
        source,
    })?;
    let owner = std::fs::metadata(&file).map(|m| m.uid()).unwrap_or(0);
    Ok(Some(project(file, owner, Chosen::Named, text)))
}

/// The `pgwarden.toml` in `cwd` or its nearest parent holding one, read through the trust rule.
fn search(cwd: &Path, trust: &Trust) -> Result<Option<Project>> {
    for candidate in cwd.ancestors().map(|d| d.join(FILE_NAME)) {
        if !candidate.is_file() {
            continue;
        }
        let Some(found) = trust.read(&candidate, FOUND)? else {
            continue; // removed since we looked: look further up, as if it had never been
        };
        let chosen = match found.opted_in {
            Some(dir) => Chosen::OptedIn(dir),
            None => Chosen::Found,
        };
        return Ok(Some(project(found.path, found.owner, chosen, found.text)));
    }
    Ok(None)
}

fn project(file: PathBuf, owner: u32, chosen: Chosen, text: String) -> Project {
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    Project {
        default_name: name_for(&dir),
        file,
        dir,
        owner,
        chosen,
        text,
    }
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
        let trust = Trust::for_user(nix::unistd::geteuid().as_raw(), &[]);
        assert_eq!(find(&Choice::Search, &deep, &trust).unwrap(), None);
        std::fs::write(project.join(FILE_NAME), "port = 7\n").unwrap();
        let found = find(&Choice::Search, &deep, &trust).unwrap().unwrap();
        assert_eq!(found.file, project.join(FILE_NAME));
        assert_eq!(found.default_name, "my-app");
        assert_eq!(found.text, "port = 7\n");
        assert_eq!(found.chosen, Chosen::Found);
        let by_dir = find(&Choice::Dir(project.clone()), root.path(), &trust).unwrap();
        let by_dir = by_dir.unwrap();
        assert_eq!(by_dir.dir, project);
        assert_eq!(by_dir.chosen, Chosen::Named);
        assert_eq!(find(&Choice::None, &deep, &trust).unwrap(), None);
        let err = find(&Choice::File("nope.toml".into()), root.path(), &trust).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn a_found_file_the_trust_rule_refuses_fails_the_search_but_a_named_one_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        let deep = shared.join("work");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(shared.join(FILE_NAME), "port = 9\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let trust = Trust::for_user(nix::unistd::geteuid().as_raw(), &[]);
        let err = find(&Choice::Search, &deep, &trust).unwrap_err();
        assert!(matches!(err, Error::Untrusted(_)), "{err}");
        assert!(err.to_string().contains("--no-project"), "{err}");
        let named = find(&Choice::File(shared.join(FILE_NAME)), &deep, &trust).unwrap();
        assert_eq!(named.unwrap().text, "port = 9\n");
        let opted = Trust::for_user(
            nix::unistd::geteuid().as_raw(),
            std::slice::from_ref(&shared),
        );
        let found = find(&Choice::Search, &deep, &opted).unwrap().unwrap();
        assert_eq!(
            found.chosen,
            Chosen::OptedIn(shared.canonicalize().unwrap())
        );
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
